import Foundation
import ILATestSupport
import XCTest
import ILADiff

/// A LoRA adapter written by a test: factors by module, in PEFT orientation (A [r, in], B [out, r]).
struct TestAdapter {
    var a: [String: [Float]] = [:]
    var b: [String: [Float]] = [:]
    var rank: [String: Int] = [:]
}

/// The mini model's [out, in] for a module name.
func miniShape(_ module: String, h: Int = 8, kv: Int = 4, m: Int = 12) -> (out: Int, inF: Int) {
    if module.hasSuffix("k_proj") || module.hasSuffix("v_proj") { return (kv, h) }
    if module.hasSuffix("gate_proj") || module.hasSuffix("up_proj") { return (m, h) }
    if module.hasSuffix("down_proj") { return (h, m) }
    return (h, h)
}

func allMiniModules(blocks: Int = 2) -> [String] {
    (0..<blocks).flatMap { b in linearKinds.map { "model.layers.\(b).\($0.parent).\($0.kind)" } }
}

/// Writes adapter_config.json (verbatim text, so pattern key order is the test's) and
/// adapter_model.safetensors with factors of rank `ranks[module]` for each module.
@discardableResult
func writeAdapter(in dir: URL, config: String, ranks: [String: Int], seed: UInt64 = 3, fanInFanOut: Bool = false,
                  extra: [TestTensor] = [], edit: ((inout [TestTensor]) -> Void)? = nil) throws -> TestAdapter {
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    try Data(config.utf8).write(to: dir.appendingPathComponent("adapter_config.json"))
    var rng = SplitMix(seed)
    var out = TestAdapter()
    var tensors: [TestTensor] = []
    for module in ranks.keys.sorted() {
        let r = ranks[module]!
        let (o, i) = miniShape(module)
        let a = rng.floats(r * i, scale: 0.7), b = rng.floats(o * r, scale: 0.3)
        out.a[module] = a; out.b[module] = b; out.rank[module] = r
        let p = "base_model.model.\(module)"
        if fanInFanOut {
            tensors.append(.f32(p + ".lora_A.weight", [i, r], transposedTest(a, rows: r, cols: i)))
            tensors.append(.f32(p + ".lora_B.weight", [r, o], transposedTest(b, rows: o, cols: r)))
        } else {
            tensors.append(.f32(p + ".lora_A.weight", [r, i], a))
            tensors.append(.f32(p + ".lora_B.weight", [o, r], b))
        }
    }
    tensors += extra
    edit?(&tensors)
    try writeSafetensors(tensors, to: dir.appendingPathComponent("adapter_model.safetensors").path)
    return out
}

func transposedTest(_ m: [Float], rows: Int, cols: Int) -> [Float] {
    var t = [Float](repeating: 0, count: m.count)
    for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = m[i * cols + j] } }
    return t
}

func adapterConfig(r: Int = 4, alpha: Double = 8, rslora: Bool = false, fanInFanOut: Bool = false,
                   rankPattern: String = "{}", alphaPattern: String = "{}", extra: String = "") -> String {
    """
    {
      "alpha_pattern": \(alphaPattern),
      "fan_in_fan_out": \(fanInFanOut),
      "lora_alpha": \(alpha),
      "peft_type": "LORA",
      "r": \(r),
      "rank_pattern": \(rankPattern),
      "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
      \(extra)
      "use_rslora": \(rslora)
    }
    """
}

final class LoRAAdapterTests: XCTestCase {
    var tmp: TempDir!
    override func setUp() { tmp = TempDir("lora") }
    override func tearDown() { tmp.remove() }

    private func uniformRanks(_ r: Int) -> [String: Int] {
        Dictionary(uniqueKeysWithValues: allMiniModules().map { ($0, r) })
    }

    func testPlainScaleAndFactorsExact() throws {
        let dir = tmp.sub("plain")
        let written = try writeAdapter(in: dir, config: adapterConfig(r: 4, alpha: 8), ranks: uniformRanks(4))
        let adapter = try LoRAAdapter(path: dir.path)
        XCTAssertEqual(adapter.layers.map(\.name), allMiniModules())
        for layer in adapter.layers {
            let f = try adapter.factors(layer)
            XCTAssertEqual(f.scale, 2)
            XCTAssertEqual(f.rank, 4)
            XCTAssertEqual(f.a, written.a[layer.name])
            XCTAssertEqual(f.b, written.b[layer.name])
            let (o, i) = miniShape(layer.name)
            XCTAssertEqual(f.outFeatures, o)
            XCTAssertEqual(f.inFeatures, i)
        }
    }

    func testRSLoRAScale() throws {
        let dir = tmp.sub("rslora")
        try writeAdapter(in: dir, config: adapterConfig(r: 4, alpha: 8, rslora: true), ranks: uniformRanks(4))
        let adapter = try LoRAAdapter(path: dir.path)
        for layer in adapter.layers { XCTAssertEqual(try adapter.factors(layer).scale, 4) }  // 8 / √4
        XCTAssertEqual(adapter.config.scale(for: "model.layers.0.self_attn.q_proj"), 4)
    }

    /// PEFT's get_pattern_key: exact key, else the first key k in dict (file) order with
    /// re.match(rf"(.*\.)?({k})$", module).
    func testPatternKeyRules() throws {
        func config(_ rp: String, _ ap: String = "{}", rslora: Bool = false) throws -> LoRAAdapter.Config {
            let dir = tmp.sub("cfg-\(UUID().uuidString.prefix(6))")
            try Data(adapterConfig(r: 4, alpha: 8, rslora: rslora, rankPattern: rp, alphaPattern: ap).utf8)
                .write(to: dir.appendingPathComponent("adapter_config.json"))
            return try Self.readConfigViaAdapter(dir: dir, module: "model.layers.0.self_attn.q_proj", rank: nil)
        }
        let q0 = "model.layers.0.self_attn.q_proj", q1 = "model.layers.1.self_attn.q_proj"
        let down1 = "model.layers.1.mlp.down_proj", down0 = "model.layers.0.mlp.down_proj"

        // Suffix key.
        var c = try config(#"{"q_proj": 2}"#)
        XCTAssertEqual(c.rankAndAlpha(for: q0).r, 2)
        XCTAssertEqual(c.rankAndAlpha(for: q1).r, 2)
        XCTAssertEqual(c.rankAndAlpha(for: down0).r, 4)
        // A key must match whole dot-separated components from the end: "proj" and "_proj" do not match q_proj.
        c = try config(#"{"proj": 2, "_proj": 3}"#)
        XCTAssertEqual(c.rankAndAlpha(for: q0).r, 4)
        // A key that is a regex.
        c = try config(#"{"layers\\.1\\..*": 6, "q_proj|k_proj": 2}"#)
        XCTAssertEqual(c.rankAndAlpha(for: q1).r, 6)
        XCTAssertEqual(c.rankAndAlpha(for: q0).r, 2)
        XCTAssertEqual(c.rankAndAlpha(for: "model.layers.0.self_attn.k_proj").r, 2)
        XCTAssertEqual(c.rankAndAlpha(for: "model.layers.0.self_attn.v_proj").r, 4)
        // An exact key wins even when a suffix key comes first.
        c = try config(#"{"down_proj": 2, "model.layers.1.mlp.down_proj": 3}"#)
        XCTAssertEqual(c.rankAndAlpha(for: down1).r, 3)
        XCTAssertEqual(c.rankAndAlpha(for: down0).r, 2)
        // Otherwise the first matching key in file order wins (not sorted order).
        c = try config(#"{"self_attn.q_proj": 5, "0.self_attn.q_proj": 7}"#)
        XCTAssertEqual(c.rankAndAlpha(for: q0).r, 5)
        c = try config(#"{"0.self_attn.q_proj": 7, "self_attn.q_proj": 5}"#)
        XCTAssertEqual(c.rankAndAlpha(for: q0).r, 7)
        XCTAssertEqual(c.rankAndAlpha(for: q1).r, 5)
        // alpha_pattern follows the same rule; scale = alpha/r, or alpha/√r with rsLoRA.
        c = try config(#"{"v_proj": 16}"#, #"{"v_proj": 32, "layers.1.mlp.up_proj": 2}"#)
        let v0 = "model.layers.0.self_attn.v_proj", up1 = "model.layers.1.mlp.up_proj"
        XCTAssertEqual(c.rankAndAlpha(for: v0).alpha, 32)
        XCTAssertEqual(c.scale(for: v0), 2)
        XCTAssertEqual(c.scale(for: up1), 0.5)
        XCTAssertEqual(c.scale(for: q0), 2)
        c = try config(#"{"v_proj": 16}"#, #"{"v_proj": 32}"#, rslora: true)
        XCTAssertEqual(c.scale(for: v0), 8)
        XCTAssertEqual(c.scale(for: q0), 4)
    }

    /// Opens an adapter directory holding only `adapter_config.json` plus one factor pair for
    /// `module` of the rank the config gives it, and returns its parsed config.
    static func readConfigViaAdapter(dir: URL, module: String, rank: Int?) throws -> LoRAAdapter.Config {
        // A throwaway pair; ranks are checked against the config only when factors are loaded.
        let (o, i) = miniShape(module)
        let p = "base_model.model.\(module)"
        let r = rank ?? 1
        try writeSafetensors([.f32(p + ".lora_A.weight", [r, i], [Float](repeating: 0.1, count: r * i)),
                              .f32(p + ".lora_B.weight", [o, r], [Float](repeating: 0.1, count: o * r))],
                             to: dir.appendingPathComponent("adapter_model.safetensors").path)
        return try LoRAAdapter(path: dir.path).config
    }

    func testPatternsDriveFactorRanksAndDeltas() throws {
        let rp = #"{"down_proj": 2, "model.layers.1.mlp.down_proj": 3, "layers.0.self_attn.q_proj": 6}"#
        let ap = #"{"v_proj": 4, "up_proj": 1}"#
        for rslora in [false, true] {
            var ranks = uniformRanks(4)
            ranks["model.layers.0.mlp.down_proj"] = 2
            ranks["model.layers.1.mlp.down_proj"] = 3
            ranks["model.layers.0.self_attn.q_proj"] = 6
            let dir = tmp.sub("patterns-\(rslora)")
            let w = try writeAdapter(in: dir, config: adapterConfig(r: 4, alpha: 8, rslora: rslora, rankPattern: rp, alphaPattern: ap),
                                     ranks: ranks)
            let baseFile = try writeSafetensors(miniModelTensors(), to: tmp.path("base-\(rslora).safetensors"))
            let computer = try DeltaComputer(base: ModelCheckpoint(path: baseFile), aligned: .open(dir.path))
            XCTAssertEqual(computer.layers.count, 14)
            let base = try RawSafetensors(path: baseFile)
            for layer in computer.layers {
                let r = ranks[layer.name]!
                let alpha: Double = layer.name.hasSuffix("v_proj") ? 4 : layer.name.hasSuffix("up_proj") ? 1 : 8
                let expectScale = rslora ? alpha / Double(r).squareRoot() : alpha / Double(r)
                let d = try computer.delta(for: layer)
                guard case .factors(let a, let b, let rank, let scale) = d.payload else { return XCTFail("expected factors") }
                XCTAssertEqual(rank, r, layer.name)
                XCTAssertEqual(Double(scale), expectScale, accuracy: 1e-6, layer.name)
                XCTAssertEqual(a, w.a[layer.name])
                XCTAssertEqual(b, w.b[layer.name])
                let (o, i) = miniShape(layer.name)
                let naive = naiveLoRADelta(a: w.a[layer.name]!, b: w.b[layer.name]!, r: r, inF: i, outF: o, scale: expectScale)
                assertClose(d.normDelta, naiveNorm(naive), rel: 1e-6, layer.name)
                assertClose(d.normBase, naiveNorm(base[layer.weightName]!.values), rel: 1e-12)
                for (x, y) in zip(d.dense(), naive) { XCTAssertEqual(Double(x), y, accuracy: 1e-5) }
            }
        }
    }

    func testFanInFanOutIsTransposedBack() throws {
        let dir = tmp.sub("fifo")
        let w = try writeAdapter(in: dir, config: adapterConfig(r: 3, alpha: 6, fanInFanOut: true), ranks: uniformRanks(3),
                                 fanInFanOut: true)
        let adapter = try LoRAAdapter(path: dir.path)
        for layer in adapter.layers {
            let f = try adapter.factors(layer)
            XCTAssertEqual(f.a, w.a[layer.name], layer.name)
            XCTAssertEqual(f.b, w.b[layer.name], layer.name)
            let (o, i) = miniShape(layer.name)
            XCTAssertEqual([f.outFeatures, f.inFeatures, f.rank], [o, i, 3])
            XCTAssertEqual(f.scale, 2)
        }
    }

    func testTinyFixtureAdapter() throws {
        let dir = try Paths.tinyModel("lora-pyapi")
        let adapter = try LoRAAdapter(path: dir.path)
        XCTAssertEqual(adapter.layers.count, 14)
        XCTAssertEqual(adapter.config.r, 8)
        XCTAssertEqual(adapter.config.loraAlpha, 16)
        let raw = try RawSafetensors(path: dir.appendingPathComponent("adapter_model.safetensors").path)
        for layer in adapter.layers {
            let f = try adapter.factors(layer)
            XCTAssertEqual(f.scale, 2)
            XCTAssertEqual(f.a, raw["base_model.model.\(layer.name).lora_A.weight"]!.values)
            XCTAssertEqual(f.b, raw["base_model.model.\(layer.name).lora_B.weight"]!.values)
        }
    }

    // MARK: refusals, each one line naming the file

    func testRefusesDoRAAndNonLinearAdapters() throws {
        let cfgPath = { (d: URL) in d.appendingPathComponent("adapter_config.json").path }
        let wPath = { (d: URL) in d.appendingPathComponent("adapter_model.safetensors").path }

        let dora = tmp.sub("dora")
        try writeAdapter(in: dora, config: adapterConfig(extra: "\"use_dora\": true,"), ranks: uniformRanks(4))
        assertILAError(file: cfgPath(dora), contains: ["use_dora", "DoRA"]) { _ = try LoRAAdapter(path: dora.path) }

        let magnitude = tmp.sub("magnitude")
        try writeAdapter(in: magnitude, config: adapterConfig(), ranks: uniformRanks(4),
                         extra: [.f32("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", [8], [Float](repeating: 1, count: 8))])
        assertILAError(file: wPath(magnitude), contains: ["DoRA"]) { _ = try LoRAAdapter(path: magnitude.path) }

        let embed = tmp.sub("embed")
        try writeAdapter(in: embed, config: adapterConfig(), ranks: uniformRanks(4),
                         extra: [.f32("base_model.model.model.embed_tokens.lora_embedding_A", [4, 16], [Float](repeating: 0, count: 64))])
        assertILAError(file: wPath(embed), contains: ["embedding"]) { _ = try LoRAAdapter(path: embed.path) }

        let head = tmp.sub("head")
        try writeAdapter(in: head, config: adapterConfig(), ranks: ["lm_head": 4])
        assertILAError(file: wPath(head), contains: ["lm_head", "not a q/k/v/o/gate/up/down"]) { _ = try LoRAAdapter(path: head.path) }

        let saved = tmp.sub("modules-to-save")
        try writeAdapter(in: saved, config: adapterConfig(), ranks: uniformRanks(4),
                         extra: [.f32("base_model.model.lm_head.modules_to_save.default.weight", [2, 2], [1, 2, 3, 4])])
        assertILAError(file: wPath(saved), contains: ["lm_head.modules_to_save", "not a LoRA factor"]) { _ = try LoRAAdapter(path: saved.path) }

        let ia3 = tmp.sub("ia3")
        try writeAdapter(in: ia3, config: adapterConfig().replacingOccurrences(of: "\"LORA\"", with: "\"IA3\""), ranks: uniformRanks(4))
        assertILAError(file: cfgPath(ia3), contains: ["IA3"]) { _ = try LoRAAdapter(path: ia3.path) }
    }

    func testMalformedAdapters() throws {
        let cfgPath = { (d: URL) in d.appendingPathComponent("adapter_config.json").path }
        let wPath = { (d: URL) in d.appendingPathComponent("adapter_model.safetensors").path }

        let onlyA = tmp.sub("only-a")
        try writeAdapter(in: onlyA, config: adapterConfig(), ranks: uniformRanks(4)) { t in
            t.removeAll { $0.name == "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight" }
        }
        assertILAError(file: wPath(onlyA), contains: ["model.layers.1.mlp.up_proj", "without lora_B"]) { _ = try LoRAAdapter(path: onlyA.path) }

        let wrongRank = tmp.sub("wrong-rank")
        try writeAdapter(in: wrongRank, config: adapterConfig(r: 4), ranks: uniformRanks(4).merging(["model.layers.0.mlp.up_proj": 5]) { $1 })
        let a = try LoRAAdapter(path: wrongRank.path)
        assertILAError(file: wPath(wrongRank), contains: ["model.layers.0.mlp.up_proj", "rank 5", "r=4"]) {
            _ = try a.factors(LinearLayer(name: "model.layers.0.mlp.up_proj")!)
        }

        let mismatch = tmp.sub("mismatch")
        try writeAdapter(in: mismatch, config: adapterConfig(r: 4), ranks: uniformRanks(4)) { t in
            if let i = t.firstIndex(where: { $0.name == "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight" }) {
                t[i] = .f32(t[i].name, [4, 12], [Float](repeating: 0, count: 48))
            }
        }
        let m = try LoRAAdapter(path: mismatch.path)
        assertILAError(file: wPath(mismatch), contains: ["model.layers.0.mlp.up_proj", "rank"]) {
            _ = try m.factors(LinearLayer(name: "model.layers.0.mlp.up_proj")!)
        }

        let nan = tmp.sub("nan")
        try writeAdapter(in: nan, config: adapterConfig(r: 4), ranks: uniformRanks(4)) { t in
            if let i = t.firstIndex(where: { $0.name == "base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight" }) {
                var v = RawTensor(name: t[i].name, dtype: "F32", shape: t[i].shape, bytes: t[i].bytes).values
                v[5] = .nan
                t[i] = .f32(t[i].name, t[i].shape, v)
            }
        }
        let n = try LoRAAdapter(path: nan.path)
        assertILAError(file: wPath(nan), contains: ["model.layers.1.self_attn.o_proj", "NaN"]) {
            _ = try n.factors(LinearLayer(name: "model.layers.1.self_attn.o_proj")!)
        }

        let noR = tmp.sub("no-r")
        try writeAdapter(in: noR, config: #"{"lora_alpha": 8, "peft_type": "LORA"}"#, ranks: uniformRanks(4))
        assertILAError(file: cfgPath(noR), contains: ["r"]) { _ = try LoRAAdapter(path: noR.path) }

        let noAlpha = tmp.sub("no-alpha")
        try writeAdapter(in: noAlpha, config: #"{"r": 4, "peft_type": "LORA"}"#, ranks: uniformRanks(4))
        assertILAError(file: cfgPath(noAlpha), contains: ["lora_alpha"]) { _ = try LoRAAdapter(path: noAlpha.path) }

        let badJSON = tmp.sub("bad-json")
        try writeAdapter(in: badJSON, config: "{\"r\": 4,", ranks: uniformRanks(4))
        assertILAError(file: cfgPath(badJSON), contains: ["not valid JSON"]) { _ = try LoRAAdapter(path: badJSON.path) }

        let badRegex = tmp.sub("bad-regex")
        try writeAdapter(in: badRegex, config: adapterConfig(rankPattern: #"{"q_proj(": 2}"#), ranks: uniformRanks(4))
        assertILAError(file: cfgPath(badRegex), contains: ["q_proj(", "regular expression"]) { _ = try LoRAAdapter(path: badRegex.path) }

        let badPattern = tmp.sub("bad-pattern")
        try writeAdapter(in: badPattern, config: adapterConfig(rankPattern: #"{"q_proj": "two"}"#), ranks: uniformRanks(4))
        assertILAError(file: cfgPath(badPattern), contains: ["rank_pattern"]) { _ = try LoRAAdapter(path: badPattern.path) }

        let noWeights = tmp.sub("no-weights")
        try Data(adapterConfig().utf8).write(to: noWeights.appendingPathComponent("adapter_config.json"))
        assertILAError(file: wPath(noWeights), contains: ["no such file"]) { _ = try LoRAAdapter(path: noWeights.path) }
        try Data([0]).write(to: noWeights.appendingPathComponent("adapter_model.bin"))
        assertILAError(file: noWeights.path, contains: ["adapter_model.bin", "safe_serialization"]) { _ = try LoRAAdapter(path: noWeights.path) }

        let empty = tmp.sub("empty")
        try writeAdapter(in: empty, config: adapterConfig(), ranks: [:])
        assertILAError(file: wPath(empty), contains: ["no LoRA factors"]) { _ = try LoRAAdapter(path: empty.path) }
    }
}
