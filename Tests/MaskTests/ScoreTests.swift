import Foundation
import ILABLAS
import ILADiff
@testable import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking
import ILATestSupport
import XCTest

/// `ila-mask score`'s methods against independent computations: fixtures/scores/tiny-pyapi.json
/// (bench/scores_torch.py: NumPy for Spectrum, PyTorch + transformers + PEFT for the rest, on
/// fixtures/tiny base-A + lora-pyapi, the first 16 rows of pyapi.train at seq_len 64), and naive
/// loops written here.
final class ScoreTests: XCTestCase {
    var tmp: TempDir!
    let tiny = RepoPaths.fixtures.appendingPathComponent("tiny").path
    let data = RepoPaths.fixtures.appendingPathComponent("data").path

    override func setUpWithError() throws { tmp = TempDir("ila-score") }
    override func tearDown() { tmp.remove() }

    func fixture() throws -> [String: Any] {
        let url = RepoPaths.fixtures.appendingPathComponent("scores/tiny-pyapi.json")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    func fixtureRows(_ base: BaseModel, _ f: [String: Any]) throws -> [TokenizedRow] {
        try base.rows(path: "\(data)/pyapi.train.jsonl", template: .alpaca, seqLen: try XCTUnwrap(f["seq_len"] as? Int),
                      limit: try XCTUnwrap(f["rows"] as? Int))
    }

    func assertClose(_ a: [Double], _ b: [Double], rel: Double, abs floor: Double, _ what: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        for (i, (x, y)) in zip(a, b).enumerated() {
            XCTAssertEqual(x, y, accuracy: max(floor, rel * Swift.abs(y)), "\(what)[\(i)]", file: file, line: line)
        }
    }

    // MARK: spectrum

    /// The SNR of every tiny base-A weight equals the NumPy reimplementation of spectrum.py's
    /// formula (which the script checks against spectrum.py's own torch lines).
    func testSpectrumMatchesNumPyReimplementation() throws {
        let f = try fixture()
        let names = try XCTUnwrap(f["layers"] as? [String])
        let want = try XCTUnwrap(f["spectrum"] as? [Double])
        let checkpoint = try ModelCheckpoint(path: "\(tiny)/base-A")
        let layers = try names.map { try XCTUnwrap(LinearLayer(name: $0)) }
        let got = try Spectrum.scores(checkpoint: checkpoint, layers: layers)
        XCTAssertEqual(got.layers, layers)
        assertClose(got.scores, want, rel: 1e-4, abs: 1e-7, "spectrum SNR")
        // The shapes cover both orientations and β < 1: [64,64], [32,64], [176,64], [64,176].
        XCTAssertEqual(Set(layers.compactMap { checkpoint.info($0.weightName)?.shape }).count, 4)
    }

    /// The formula on a matrix whose singular values are known (a diagonal), computed by hand here.
    func testSpectrumFormulaOnKnownSingularValues() throws {
        let s: [Double] = [10, 6, 3, 2.5, 2, 1.5, 1, 0.5]
        var m = [Float](repeating: 0, count: 8 * 12)   // [8, 12], β = 8/12
        for (i, v) in s.enumerated() { m[i * 12 + (i * 5) % 12] = Float(v) }  // permuted columns: same singular values
        let sv = try BLAS.singularValues(&m, m: 8, n: 12)
        assertClose(sv.map(Double.init), s, rel: 1e-5, abs: 1e-6, "singular values")
        // sorted ascending 0.5 1 1.5 2 2.5 3 6 10; q25 at 1.75 → 1 + 0.75·0.5 = 1.375; q75 at 5.25 → 3 + 0.25·3 = 3.75
        // (numpy.quantile agrees); σ = 1.761, threshold = σ·(1 + √(8/12)) = 3.198: 10 and 6 are signal.
        let sigma = (3.75 - 1.375) / 1.349
        let threshold = sigma * (1 + (8.0 / 12).squareRoot())
        let signal = s.filter { $0 > threshold }.reduce(0, +), noise = s.filter { $0 <= threshold }.reduce(0, +)
        XCTAssertEqual(signal, 16)
        XCTAssertEqual(Spectrum.snr(singularValues: sv, rows: 8, cols: 12), signal / noise / 10, accuracy: 1e-5)
        XCTAssertEqual(Spectrum.snr(singularValues: [Float](repeating: 0, count: 4), rows: 4, cols: 4), 0)
    }

    // MARK: hidden-state methods

    /// Block influence (all tokens; normed and raw last state), the sub-layer halves and the
    /// angular distance (last token, n = 1 and 2) of the base model equal PyTorch's from
    /// transformers' hidden_states.
    func testHiddenStateMethodsMatchPyTorch() throws {
        let f = try fixture()
        let perBlock = try XCTUnwrap(f["per_block"] as? [String: [Double]])
        let base = try BaseModel(path: "\(tiny)/base-A")
        let engine = try TransformerEngine(weights: base.weights, deltas: [], tokenBudget: 100)  // several micro-batches
        let rows = try fixtureRows(base, f)
        let all = try HiddenStateStatistics.measure(engine: engine, rows: rows, gamma: [], positions: .all, distance: 1, lastState: .normed, chunk: 5)
        XCTAssertEqual(all.positions, try XCTUnwrap(f["tokens"] as? Int))
        assertClose(all.blockInfluence, try XCTUnwrap(perBlock["block-influence"]), rel: 1e-4, abs: 1e-6, "BI")
        assertClose(all.attentionInfluence, try XCTUnwrap(perBlock["attention"]), rel: 1e-4, abs: 1e-6, "BI attention")
        assertClose(all.mlpInfluence, try XCTUnwrap(perBlock["mlp"]), rel: 1e-4, abs: 1e-6, "BI mlp")
        let raw = try HiddenStateStatistics.measure(engine: engine, rows: rows, gamma: [], positions: .all, distance: 1, lastState: .raw)
        assertClose(raw.blockInfluence, try XCTUnwrap(perBlock["block-influence-raw"]), rel: 1e-4, abs: 1e-6, "BI raw")
        for n in [1, 2] {
            let st = try HiddenStateStatistics.measure(engine: engine, rows: rows, gamma: [], positions: .last, distance: n, lastState: .normed)
            XCTAssertEqual(st.positions, rows.count)
            assertClose(st.angularPerBlock, try XCTUnwrap(perBlock["angular-\(n)"]), rel: 1e-4, abs: 1e-6, "angular n=\(n)")
        }
    }

    /// Observing hidden states does not change the NLL, and S_k is what a naive recomputation of
    /// block inputs gives: the embedding row of each token for S_0.
    func testHiddenStatesStartAtTheEmbedding() throws {
        let base = try BaseModel(path: "\(tiny)/base-A")
        let engine = try TransformerEngine(weights: base.weights, deltas: [])
        let rows = try base.rows(path: "\(data)/pyapi.train.jsonl", template: .alpaca, seqLen: 32, limit: 3)
        let embed = try base.checkpoint.floats("model.embed_tokens.weight")
        let H = base.spec.hiddenSize
        var points: [HiddenPoint] = []
        let r = try engine.forEachHiddenState(rows: rows, gamma: []) { point, mb, values in
            points.append(point)
            if point == .blockInput(0) {
                for (t, id) in mb.flatMap(\.ids).enumerated() {
                    for i in 0..<H { XCTAssertEqual(values[t * H + i], embed[id * H + i]) }
                }
            }
        }
        let plain = try engine.evaluate(rows: rows, gamma: [])
        XCTAssertEqual(r.nllSum, plain.nllSum)
        let L = base.spec.blocks
        XCTAssertEqual(points, (0..<L).flatMap { [HiddenPoint.blockInput($0), .afterAttention($0)] } + [.blockInput(L), .finalNorm])
    }

    // MARK: taylor, ablation, rel-change

    func testTaylorAndAblationMatchPyTorch() throws {
        let f = try fixture()
        let (base, engine, _) = try makeEngine(set: tiny, aligned: "lora-pyapi")
        XCTAssertEqual(engine.maskedLayers.map(\.name), try XCTUnwrap(f["lora_layers"] as? [String]))
        let rows = try fixtureRows(base, f)
        let taylor = try taylorScores(engine: engine, rows: rows, chunk: 7)
        assertClose(taylor.scores, try XCTUnwrap(f["taylor"] as? [Double]), rel: 1e-3, abs: 1e-6, "taylor")
        let ablation = try ablationScores(engine: engine, rows: rows)
        assertClose(ablation.scores, try XCTUnwrap(f["ablation"] as? [Double]), rel: 1e-3, abs: 2e-6, "ablation")
    }

    /// rel-change = ‖scale·B·A‖_F / ‖W0‖_F by naive loops over the adapter and base tensors.
    func testRelChangeMatchesNaiveLoop() throws {
        let store = try DeltaStore(path: try diff("lora-pyapi"))
        let got = try relChangeScores(store: store)
        let base = try ModelCheckpoint(path: "\(tiny)/base-A")
        let adapter = try ModelCheckpoint(path: "\(tiny)/lora-pyapi/adapter_model.safetensors")
        let cfg = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(tiny)/lora-pyapi/adapter_config.json"))) as? [String: Any])
        let scale = try XCTUnwrap(cfg["lora_alpha"] as? Double) / Double(try XCTUnwrap(cfg["r"] as? Int))
        for (l, s) in zip(got.layers, got.scores) {
            let a = try adapter.floats("base_model.model.\(l.name).lora_A.weight"), b = try adapter.floats("base_model.model.\(l.name).lora_B.weight")
            let w = try base.floats(l.weightName)
            let shape = try XCTUnwrap(base.info(l.weightName)?.shape)
            let (o, n) = (shape[0], shape[1]), r = a.count / n
            var d2 = 0.0
            for i in 0..<o {
                for j in 0..<n {
                    var v = 0.0
                    for k in 0..<r { v += Double(b[i * r + k]) * Double(a[k * n + j]) }
                    d2 += (scale * v) * (scale * v)
                }
            }
            let w2 = w.reduce(0.0) { $0 + Double($1) * Double($1) }
            XCTAssertEqual(s, (d2 / w2).squareRoot(), accuracy: 1e-5 * s, l.name)
        }
    }

    // MARK: the command and the consumers of its rankings

    func diff(_ aligned: String) throws -> String {
        let out = tmp.path("\(aligned).h5")
        if FileManager.default.fileExists(atPath: out) { return out }
        let r = try CommandRunner.run("ila-diff", ["\(tiny)/base-A", "\(tiny)/\(aligned)", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        return out
    }

    func score(_ method: String, _ extra: [String] = []) throws -> String {
        let out = tmp.path("\(method).json")
        let r = try CommandRunner.run("ila-mask", ["score", "--method", method, "--base", "\(tiny)/base-A", "--deltas", try diff("lora-pyapi"),
                                                  "--data", "\(data)/pyapi.train.jsonl", "--limit", "6", "--seq-len", "64",
                                                  "-o", out] + extra)
        XCTAssertEqual(r.status, 0, "\(method): \(r.stderr)")
        return out
    }

    static let methods = ["rel-change", "spectrum", "block-influence", "block-influence-sublayer", "angular", "taylor", "ablation", "ila"]

    /// Every method's ranking.json records its method and goes through compare, export (every
    /// format), eval --ranking and ila-transfer unchanged; the command's scores are the library's.
    func testEveryMethodsRankingPassesThroughTheConsumers() throws {
        var files: [String] = []
        for m in Self.methods {
            let path = try score(m, m == "ila" ? ["--steps", "3", "--batch", "4"] : [])
            let r = try Ranking.load(path: path)
            XCTAssertEqual(r.objective?.method, m)
            XCTAssertEqual(r.layers.count, 14, m)
            XCTAssertEqual(Set(r.layers.map(\.rank)), Set(1...14), m)
            files.append(path)
        }
        // The command's spectrum equals the fixture (the CLI path, not only the library).
        let f = try fixture()
        let spectrum = try Ranking.load(path: files[1])
        let want = Dictionary(uniqueKeysWithValues: zip(try XCTUnwrap(f["layers"] as? [String]), try XCTUnwrap(f["spectrum"] as? [Double])))
        for l in spectrum.layers { XCTAssertEqual(l.score, try XCTUnwrap(want[l.name]), accuracy: 1e-4 * abs(l.score)) }
        // Block influence gives every layer of a block the same score; the sub-layer variant splits q k v o from gate up down.
        let bi = try Ranking.load(path: files[2]), sub = try Ranking.load(path: files[3])
        for b in 0..<2 {
            XCTAssertEqual(Set(bi.layers.filter { $0.block == b }.map(\.score)).count, 1)
            XCTAssertEqual(Set(sub.layers.filter { $0.block == b }.map(\.score)).count, 2)
        }

        let compare = try CommandRunner.run("ila-mask", ["compare"] + files + ["--top", "0.5", "--json"])
        XCTAssertEqual(compare.status, 0, compare.stderr)
        let c = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(compare.stdout.utf8)) as? [String: Any])
        XCTAssertEqual((c["jaccard"] as? [[Double]])?.count, Self.methods.count)
        for (m, path) in zip(Self.methods, files) {
            for format in ["json", "csv", "peft", "axolotl", "llama-factory", "freeze", "svg"] {
                let r = try CommandRunner.run("ila-mask", ["export", path, "--top", "0.5", "--format", format, "-o", tmp.path("\(m).export.\(format)")])
                XCTAssertEqual(r.status, 0, "\(m) \(format): \(r.stderr)")
            }
            let ev = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--deltas", try diff("lora-pyapi"), "--ranking", path,
                                                        "--top", "0.5", "--data", "\(data)/pyapi.eval.jsonl", "--limit", "4", "--json"])
            XCTAssertEqual(ev.status, 0, "\(m) eval: \(ev.stderr)")
            let tr = try CommandRunner.run("ila-transfer", [path, "\(tiny)/base-B", "--top", "0.5", "--format", "json", "-o", tmp.path("\(m).transfer.json")])
            XCTAssertEqual(tr.status, 0, "\(m) transfer: \(tr.stderr)")
            let sel = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tmp.path("\(m).transfer.json")))) as? [String: Any])
            XCTAssertEqual((sel["layers"] as? [Any])?.count, 21, "\(m): base-B has 3 blocks × 7 kinds")
        }
    }

    /// select-report's NLL column equals `eval --ranking R --top F` on the saved rankings, its
    /// Jaccard equals the saved rankings' top-F overlap, and it writes the SVG.
    func testSelectReportAgreesWithEvalAndCompare() throws {
        let dir = tmp.path("rankings"), svg = tmp.path("nll.svg")
        let deltas = try diff("lora-pyapi")
        let r = try CommandRunner.run("ila-mask", ["select-report", "--base", "\(tiny)/base-A", "--deltas", deltas,
                                                  "--data", "\(data)/pyapi.train.jsonl", "--limit", "6", "--seq-len", "64",
                                                  "--eval", "\(data)/pyapi.eval.jsonl", "--eval-limit", "4",
                                                  "--methods", "rel-change,spectrum,taylor", "--fractions", "0.3,0.75", "--random", "1",
                                                  "--save-rankings", dir, "--svg", svg, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(o["methods"] as? [String], ["rel-change", "spectrum", "taylor"])
        let nll = try XCTUnwrap(o["nll"] as? [String: [Double]])
        for m in ["rel-change", "spectrum", "taylor"] {
            for (i, top) in ["0.3", "0.75"].enumerated() {
                let ev = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--deltas", deltas, "--ranking", "\(dir)/\(m).json",
                                                            "--top", top, "--data", "\(data)/pyapi.eval.jsonl", "--limit", "4", "--seq-len", "64", "--json"])
                let e = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(ev.stdout.utf8)) as? [String: Any])
                XCTAssertEqual(try XCTUnwrap(nll[m])[i], try XCTUnwrap(e["mean_nll"] as? Double), accuracy: 1e-9, "\(m) F=\(top)")
            }
        }
        let rankings = try ["rel-change", "spectrum", "taylor"].map { try Ranking.load(path: "\(dir)/\($0).json") }
        let jac = try XCTUnwrap((o["jaccard"] as? [String: [[Double]]])?["0.3"])
        for a in 0..<3 {
            for b in 0..<3 {
                let x = rankings[a].top(0.3), y = rankings[b].top(0.3)
                XCTAssertEqual(jac[a][b], Double(x.intersection(y).count) / Double(x.union(y).count), accuracy: 1e-12)
            }
        }
        let text = try String(contentsOfFile: svg, encoding: .utf8)
        XCTAssertTrue(text.hasPrefix("<svg") && text.contains("taylor") && text.contains("polyline"))
        XCTAssertEqual((o["random"] as? [Double])?.count, 2)
    }

    func testScoreErrors() throws {
        // A method's missing inputs and foreign options are usage errors (exit 2).
        var r = try CommandRunner.run("ila-mask", ["score", "--method", "taylor", "--base", "\(tiny)/base-A", "--data", "\(data)/pyapi.train.jsonl", "-o", tmp.path("t.json")])
        XCTAssertEqual(r.status, 2, r.stderr)
        XCTAssertTrue(r.stderr.contains("needs --deltas"), r.stderr)
        r = try CommandRunner.run("ila-mask", ["score", "--method", "spectrum", "--distance", "2", "--base", "\(tiny)/base-A", "-o", tmp.path("t.json")])
        XCTAssertEqual(r.status, 2, r.stderr)
        r = try CommandRunner.run("ila-mask", ["score", "--method", "snr", "--base", "\(tiny)/base-A", "-o", tmp.path("t.json")])
        XCTAssertEqual(r.status, 2, r.stderr)
        r = try CommandRunner.run("ila-mask", ["score", "--method", "spectrum", "--bogus", "--base", "\(tiny)/base-A", "-o", tmp.path("t.json")])
        XCTAssertEqual(r.status, 2, r.stderr)
        // Bad files: one line naming the file, exit 1, no output.
        r = try CommandRunner.run("ila-mask", ["score", "--method", "spectrum", "--base", tmp.path("nope"), "-o", tmp.path("t.json")])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("nope"), r.stderr)
        let bad = tmp.path("bad.jsonl")
        try "{\"instruction\": \"a\", \"output\": \"b\"}\n{not json\n".write(toFile: bad, atomically: true, encoding: .utf8)
        r = try CommandRunner.run("ila-mask", ["score", "--method", "block-influence", "--base", "\(tiny)/base-A", "--data", bad, "-o", tmp.path("t.json")])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("bad.jsonl:2"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("t.json")))
        // select-report: a ranking that does not cover the deltas' layers.
        let other = try Ranking.load(path: try score("spectrum"))
        var cut = other
        cut.layers.removeLast()
        cut.layers = cut.layers.enumerated().map { i, l in var l = l; l.rank = i + 1; return l }
        try cut.write(path: tmp.path("cut.json"))
        r = try CommandRunner.run("ila-mask", ["select-report", "--base", "\(tiny)/base-A", "--deltas", try diff("lora-pyapi"),
                                              "--eval", "\(data)/pyapi.eval.jsonl", "--methods", "none", "--ranking", tmp.path("cut.json")])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("cut.json") && r.stderr.contains("does not cover"), r.stderr)
    }
}
