import Foundation
import ILADiff
@testable import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking
import ILATestSupport
import XCTest

/// Engine on small models the test builds (Qwen2-style q/k/v biases, GQA, untied lm_head),
/// against a naive loop implementation of the Llama math written here independently.
final class ArchitectureTests: XCTestCase {
    /// What the naive loop needs, written down by the test (not read from the engine's spec).
    struct NaiveConfig {
        var hiddenSize = 24, headDim = 4, numAttentionHeads = 6, numKeyValueHeads = 2, numHiddenLayers = 2
        var intermediateSize = 40, vocabSize = 50, rmsNormEps = 1e-6, ropeTheta = 1000.0
        var attentionBias: Bool
    }

    /// Deterministic pseudo-random values in [-scale, scale].
    static func values(_ n: Int, seed: inout UInt64, scale: Float) -> [Float] {
        (0..<n).map { _ in
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return (Float(seed >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    func makeModel(dir: String, qwen: Bool) throws -> (BaseModel, [String: [Float]]) {
        let cfg: [String: Any] = [
            "architectures": [qwen ? "Qwen2ForCausalLM" : "MistralForCausalLM"], "model_type": qwen ? "qwen2" : "mistral",
            "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2,
            "intermediate_size": 40, "rms_norm_eps": 1e-6, "rope_theta": 1000.0, "vocab_size": 50,
            "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        ]
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
        var seed: UInt64 = qwen ? 11 : 12
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        func add(_ name: String, _ shape: [Int], _ scale: Float, offset: Float = 0) {
            tensors.append((name, shape, Self.values(shape.reduce(1, *), seed: &seed, scale: scale).map { $0 + offset }))
        }
        add("model.embed_tokens.weight", [50, 24], 1)
        for b in 0..<2 {
            let p = "model.layers.\(b)."
            add(p + "input_layernorm.weight", [24], 0.2, offset: 1)
            add(p + "post_attention_layernorm.weight", [24], 0.2, offset: 1)
            add(p + "self_attn.q_proj.weight", [24, 24], 0.3)
            add(p + "self_attn.k_proj.weight", [8, 24], 0.3)
            add(p + "self_attn.v_proj.weight", [8, 24], 0.3)
            add(p + "self_attn.o_proj.weight", [24, 24], 0.3)
            if qwen {
                add(p + "self_attn.q_proj.bias", [24], 0.5)
                add(p + "self_attn.k_proj.bias", [8], 0.5)
                add(p + "self_attn.v_proj.bias", [8], 0.5)
            }
            add(p + "mlp.gate_proj.weight", [40, 24], 0.3)
            add(p + "mlp.up_proj.weight", [40, 24], 0.3)
            add(p + "mlp.down_proj.weight", [24, 40], 0.3)
        }
        add("model.norm.weight", [24], 0.2, offset: 1)
        add("lm_head.weight", [50, 24], 0.5)
        try SafetensorsWriter.write(tensors, to: dir + "/model.safetensors")
        var byName: [String: [Float]] = [:]
        for t in tensors { byName[t.name] = t.values }
        return (try BaseModel(path: dir), byName)
    }

    // MARK: naive reference (Double, plain loops)

    func naiveNLL(_ w: [String: [Float]], _ c: NaiveConfig, ids: [Int], labels: [Int],
                  delta: (name: String, values: [Float], gamma: Double)?) -> (sum: Double, count: Int) {
        let H = c.hiddenSize, hd = c.headDim, nh = c.numAttentionHeads, nkv = c.numKeyValueHeads, L = ids.count
        func W(_ n: String) -> [Double] {
            var v = w[n]!.map(Double.init)
            if let d = delta, d.name == n { for i in 0..<v.count { v[i] += d.gamma * Double(d.values[i]) } }
            return v
        }
        func linear(_ x: [[Double]], _ name: String, out: Int, bias: String? = nil) -> [[Double]] {
            let m = W(name + ".weight"), b = bias.flatMap { w[$0] }
            return x.map { row in (0..<out).map { o in
                var s = b.map { Double($0[o]) } ?? 0
                for i in 0..<row.count { s += m[o * row.count + i] * row[i] }
                return s
            } }
        }
        func norm(_ x: [[Double]], _ name: String) -> [[Double]] {
            let g = w[name]!
            return x.map { r in
                let ms = r.map { $0 * $0 }.reduce(0, +) / Double(r.count)
                let inv = 1 / (ms + c.rmsNormEps).squareRoot()
                return r.indices.map { r[$0] * inv * Double(g[$0]) }
            }
        }
        func rope(_ x: inout [[Double]], heads: Int) {
            for p in 0..<L { for h in 0..<heads { for i in 0..<(hd / 2) {
                let a = Double(p) * pow(c.ropeTheta, -Double(2 * i) / Double(hd))
                let (u, v) = (x[p][h * hd + i], x[p][h * hd + i + hd / 2])
                x[p][h * hd + i] = u * cos(a) - v * sin(a)
                x[p][h * hd + i + hd / 2] = v * cos(a) + u * sin(a)
            } } }
        }
        var x = ids.map { id in (0..<H).map { Double(w["model.embed_tokens.weight"]![id * H + $0]) } }
        for b in 0..<c.numHiddenLayers {
            let p = "model.layers.\(b)."
            let xn = norm(x, p + "input_layernorm.weight")
            let bias = c.attentionBias
            var q = linear(xn, p + "self_attn.q_proj", out: nh * hd, bias: bias ? p + "self_attn.q_proj.bias" : nil)
            var k = linear(xn, p + "self_attn.k_proj", out: nkv * hd, bias: bias ? p + "self_attn.k_proj.bias" : nil)
            let v = linear(xn, p + "self_attn.v_proj", out: nkv * hd, bias: bias ? p + "self_attn.v_proj.bias" : nil)
            rope(&q, heads: nh)
            rope(&k, heads: nkv)
            var att = [[Double]](repeating: [Double](repeating: 0, count: nh * hd), count: L)
            for h in 0..<nh {
                let g = h / (nh / nkv)
                for i in 0..<L {
                    var s = [Double](repeating: 0, count: i + 1)
                    for j in 0...i {
                        var dot = 0.0
                        for d in 0..<hd { dot += q[i][h * hd + d] * k[j][g * hd + d] }
                        s[j] = dot / Double(hd).squareRoot()
                    }
                    let mx = s.max()!
                    var z = 0.0
                    for j in 0...i { s[j] = exp(s[j] - mx); z += s[j] }
                    for d in 0..<hd {
                        var acc = 0.0
                        for j in 0...i { acc += s[j] / z * v[j][g * hd + d] }
                        att[i][h * hd + d] = acc
                    }
                }
            }
            let o = linear(att, p + "self_attn.o_proj", out: H)
            x = x.indices.map { t in x[t].indices.map { x[t][$0] + o[t][$0] } }
            let xn2 = norm(x, p + "post_attention_layernorm.weight")
            let gate = linear(xn2, p + "mlp.gate_proj", out: c.intermediateSize)
            let up = linear(xn2, p + "mlp.up_proj", out: c.intermediateSize)
            let h = gate.indices.map { t in gate[t].indices.map { gate[t][$0] / (1 + exp(-gate[t][$0])) * up[t][$0] } }
            let down = linear(h, p + "mlp.down_proj", out: H)
            x = x.indices.map { t in x[t].indices.map { x[t][$0] + down[t][$0] } }
        }
        let logits = linear(norm(x, "model.norm.weight"), "lm_head", out: c.vocabSize)
        var sum = 0.0, count = 0
        for t in 0..<(L - 1) where labels[t + 1] != -100 {
            let mx = logits[t].max()!
            let lse = mx + log(logits[t].map { exp($0 - mx) }.reduce(0, +))
            sum += lse - logits[t][labels[t + 1]]
            count += 1
        }
        return (sum, count)
    }

    func checkArchitecture(qwen: Bool) throws {
        let tmp = TempDir("ila-arch")
        defer { tmp.remove() }
        let (model, w) = try makeModel(dir: tmp.url.path, qwen: qwen)
        XCTAssertEqual(model.spec.linear(.q_proj)?.bias, qwen)
        XCTAssertEqual(model.spec.linear(.o_proj)?.bias, false)
        XCTAssertFalse(model.spec.tieWordEmbeddings)
        let naive = NaiveConfig(attentionBias: qwen)
        let rows = [TokenizedRow(ids: [1, 7, 9, 30, 4, 12, 2], labels: [-100, -100, -100, 30, 4, 12, 2]),
                    TokenizedRow(ids: [1, 44, 3, 3, 18], labels: [-100, 44, 3, 3, 18])]
        // A full delta on q_proj of block 1 and on down_proj of block 0.
        var seed: UInt64 = 99
        let names = ["model.layers.1.self_attn.q_proj", "model.layers.0.mlp.down_proj"]
        let deltas = try names.map { n -> LayerDelta in
            let l = try XCTUnwrap(LinearLayer(name: n))
            let s = try XCTUnwrap(model.spec.shape(of: l.kind))
            return LayerDelta(layer: l, outFeatures: s.out, inFeatures: s.in,
                              payload: .full(Self.values(s.out * s.in, seed: &seed, scale: 0.2)), normDelta: 1, normBase: 1)
        }
        let engine = try TransformerEngine(weights: model.weights, deltas: deltas)
        for gamma in [0.0, 0.6] {
            let r = try engine.evaluate(rows: rows, gamma: [Float(gamma), 0])
            var sum = 0.0, count = 0
            for row in rows {
                let n = naiveNLL(w, naive, ids: row.ids, labels: row.labels,
                                 delta: (names[0] + ".weight", deltas[0].dense(), gamma))
                sum += n.sum
                count += n.count
            }
            XCTAssertEqual(r.tokens, count)
            XCTAssertEqual(r.nllSum, sum, accuracy: 1e-4 * abs(sum), "γ=\(gamma) qwen=\(qwen)")
        }
        // Gate gradients against finite differences of the naive model.
        let g = try engine.gradient(rows: rows, gamma: [0.5, 0.5])
        let h = 1e-3
        for (i, name) in names.enumerated() {
            func nll(_ gamma: Double) -> Double {
                rows.map { row in
                    var ww = w
                    let other = deltas[1 - i].dense()
                    ww[names[1 - i] + ".weight"] = zip(w[names[1 - i] + ".weight"]!, other).map { $0 + 0.5 * $1 }
                    return naiveNLL(ww, naive, ids: row.ids, labels: row.labels,
                                    delta: (name + ".weight", deltas[i].dense(), gamma)).sum
                }.reduce(0, +)
            }
            let fd = (nll(0.5 + h) - nll(0.5 - h)) / (2 * h)
            XCTAssertEqual(g.dNllSumDGamma[i], fd, accuracy: 2e-3 * abs(fd) + 1e-4, "\(name) qwen=\(qwen)")
        }
    }

    func testQwen2StyleBiasesMatchNaiveImplementation() throws { try checkArchitecture(qwen: true) }
    func testMistralStyleUntiedMatchesNaiveImplementation() throws { try checkArchitecture(qwen: false) }

    func testConfigVariantsAndRefusals() throws {
        let tmp = TempDir("ila-cfg")
        defer { tmp.remove() }
        func load(_ obj: [String: Any]) throws -> TransformerSpec {
            let p = tmp.path("config.json")
            try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: p))
            return try Architectures.load(configAt: p)
        }
        let base: [String: Any] = ["architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
                                   "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100]
        var c = try load(base)
        XCTAssertEqual(c.headDim, 16)
        XCTAssertEqual(c.kvHeads, 4)
        XCTAssertEqual(c.layers[0].rope.frequencies(length: 1).invFreq[1], 1 / powf(10000, 2 / 16), accuracy: 1e-9)
        var o = base; o["rope_parameters"] = ["rope_theta": 500000.0, "rope_type": "default"]; o["head_dim"] = 32
        o["eos_token_id"] = [7, 8]
        c = try load(o)
        XCTAssertEqual(c.layers[0].rope.frequencies(length: 1).invFreq[1], 1 / powf(500000, 2 / 32), accuracy: 1e-9)
        XCTAssertEqual(c.headDim, 32)
        XCTAssertEqual(c.eosTokenId, 7)
        o = base; o["attention_bias"] = true
        c = try load(o)
        XCTAssertEqual(c.linears.filter(\.bias).map(\.kind), [.q_proj, .k_proj, .v_proj, .o_proj])
        o = base; o["architectures"] = ["GPT2LMHeadModel"]
        XCTAssertThrowsError(try load(o)) { XCTAssertTrue("\($0)".contains("GPT2LMHeadModel")) }
        o = base; o["num_key_value_heads"] = 3
        XCTAssertThrowsError(try load(o)) { XCTAssertTrue("\($0)".contains("num_key_value_heads")) }
        o = base; o.removeValue(forKey: "hidden_size")
        XCTAssertThrowsError(try load(o)) { XCTAssertTrue("\($0)".contains("hidden_size")) }
        o = base; o["rope_scaling"] = ["rope_type": "su", "factor": 4.0]
        XCTAssertThrowsError(try load(o)) { XCTAssertTrue("\($0)".contains("rope type su"), "\($0)") }
        o = base; o["hidden_act"] = "relu2"
        XCTAssertThrowsError(try load(o)) { XCTAssertTrue("\($0)".contains("hidden_act relu2"), "\($0)") }
        o = base; o["num_local_experts"] = 8
        XCTAssertThrowsError(try load(o)) { XCTAssertTrue("\($0)".contains("num_local_experts"), "\($0)") }
        o = base; o["architectures"] = ["Gemma2ForCausalLM"]; o["use_bidirectional_attention"] = true
        XCTAssertThrowsError(try load(o)) { XCTAssertTrue("\($0)".contains("use_bidirectional_attention"), "\($0)") }
    }

    func testWeightLoaderNamesMissingAndUnexpectedTensors() throws {
        let tmp = TempDir("ila-weights")
        defer { tmp.remove() }
        _ = try makeModel(dir: tmp.url.path, qwen: false)
        let ckpt = try ModelCheckpoint(path: tmp.url.path)
        var spec = try Architectures.load(configAt: tmp.path("config.json"))
        let plain = spec
        spec.linears[0].bias = true
        XCTAssertThrowsError(try ModelWeights.load(spec: spec, checkpoint: ckpt)) {
            XCTAssertTrue("\($0)".contains("missing tensor model.layers.0.self_attn.q_proj.bias"), "\($0)")
        }
        spec = plain
        spec.blocks = 1
        XCTAssertThrowsError(try ModelWeights.load(spec: spec, checkpoint: ckpt)) {
            XCTAssertTrue("\($0)".contains("unexpected tensor model.layers.1."), "\($0)")
        }
    }
}
