import Foundation
import ILATestSupport
import XCTest

/// The whole pipeline through the built commands on architectures other than Llama: the kinds
/// of the model travel through deltas.h5, ranking.json, eval, export and ila-transfer.
final class ArchitectureCommandTests: XCTestCase {
    var tmp: TempDir!
    let arch = RepoPaths.fixtures.appendingPathComponent("arch").path

    override func setUpWithError() throws { tmp = TempDir("ila-arch-cli") }
    override func tearDown() { tmp.remove() }

    func run(_ tool: String, _ args: [String]) throws -> String {
        let r = try CommandRunner.run(tool, args)
        XCTAssertEqual(r.status, 0, "\(tool) \(args.joined(separator: " ")): \(r.stderr)")
        return r.stdout
    }

    func json(_ path: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    func pipeline(_ name: String, aligned: String, kinds: [String], architecture: String) throws {
        let dir = "\(arch)/\(name)", base = "\(dir)/base", rows = "\(dir)/rows.jsonl"
        let deltas = tmp.path("\(name)-deltas.h5"), ranking = tmp.path("\(name).json")
        _ = try run("ila-diff", [base, "\(dir)/\(aligned)", "-o", deltas])
        // eval --gamma 1 prints transformers' mean NLL of the rows.
        let ref = try json("\(dir)/reference.json")
        let want = try XCTUnwrap(((ref["aligned"] as? [String: Any])?[aligned] as? [String: Any])?["mean_nll_gamma_1"] as? Double)
        let ev = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try run("ila-mask", ["eval", "--base", base, "--deltas", deltas,
            "--gamma", "1", "--data", rows, "--json"]).utf8)) as? [String: Any])
        XCTAssertEqual(try XCTUnwrap(ev["mean_nll"] as? Double), want, accuracy: 1e-4 * want, name)
        _ = try run("ila-mask", ["learn", "--base", base, "--deltas", deltas, "--data", rows, "--steps", "3", "--batch", "4",
                                 "-o", ranking])
        let r = try json(ranking)
        let model = try XCTUnwrap(r["model"] as? [String: Any])
        XCTAssertEqual(model["kinds"] as? [String], kinds, name)
        XCTAssertEqual(model["architecture"] as? String, architecture)
        let layers = try XCTUnwrap(r["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.compactMap { $0["kind"] as? String }, Array(repeating: kinds, count: layers.count / kinds.count).flatMap { $0 })
        // Only the selected layers' deltas: the mean NLL moves from the base's toward the aligned one.
        let top = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(try run("ila-mask", ["eval", "--base", base, "--deltas", deltas,
            "--ranking", ranking, "--top", "0.5", "--data", rows, "--json"]).utf8)) as? [String: Any])
        XCTAssertNotEqual(top["mean_nll"] as? Double, want)
        for format in ["peft", "axolotl", "svg", "json"] {
            _ = try run("ila-mask", ["export", ranking, "--top", "0.5", "--format", format, "-o", tmp.path("\(name)-export.\(format)")])
        }
        let svg = try String(contentsOfFile: tmp.path("\(name)-export.svg"), encoding: .utf8)
        for k in kinds { XCTAssertTrue(svg.contains(k), "figure lacks row \(k)") }
        let peft = try json(tmp.path("\(name)-export.peft"))
        let pattern = try XCTUnwrap(peft["target_modules"] as? String)
        let regex = try NSRegularExpression(pattern: "^(?:\(pattern))$")
        let selected = try XCTUnwrap(try json(tmp.path("\(name)-export.json"))["layers"] as? [[String: Any]])
        for l in selected {
            let n = try XCTUnwrap(l["name"] as? String)
            let matches = regex.firstMatch(in: n, range: NSRange(n.startIndex..., in: n)) != nil
            XCTAssertEqual(matches, l["selected"] as? Bool, "peft pattern on \(n)")
        }
        // Transfer onto the same architecture works; onto one without these kinds it names them.
        _ = try run("ila-transfer", [ranking, base, "--top", "0.5", "--format", "json", "-o", tmp.path("\(name).t.json")])
    }

    func testPhi3FusedKindsThroughThePipeline() throws {
        try pipeline("phi3", aligned: "lora", kinds: ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], architecture: "Phi3ForCausalLM")
        let r = try CommandRunner.run("ila-transfer", [tmp.path("phi3.json"), "\(arch)/qwen3/base", "--top", "0.5", "-o", tmp.path("x.json")])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("q_proj"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("x.json")))
    }

    func testGemma2FullFineTuneThroughThePipeline() throws {
        try pipeline("gemma2", aligned: "full", kinds: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                     architecture: "Gemma2ForCausalLM")
    }
}
