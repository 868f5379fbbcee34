import Foundation
import ILADiff
import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking
import ILATestSupport
import XCTest

/// Hostile config.json, tokenizer.json, JSONL rows and ranking.json against the built `ila-mask`
/// (issue #6): one clear `error:` line, exit 1, within seconds, no output file.
final class MaskHostileInputTests: XCTestCase {
    var tmp: TempDir!
    let tiny = RepoPaths.fixtures.appendingPathComponent("tiny").path
    let data = RepoPaths.fixtures.appendingPathComponent("data").path

    override func setUpWithError() throws { tmp = TempDir("ila-hostile-mask") }
    override func tearDown() { tmp.remove() }

    /// A copy of base-A with `file` replaced by `contents`.
    func base(replacing file: String, with contents: Data) throws -> String {
        let dir = tmp.url.appendingPathComponent("base-\(UUID().uuidString.prefix(8))")
        try FileManager.default.copyItem(atPath: "\(tiny)/base-A", toPath: dir.path)
        try contents.write(to: dir.appendingPathComponent(file))
        return dir.path
    }

    func assertRefused(_ args: [String], mentions: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let start = Date()
        let r = try CommandRunner.run("ila-mask", args)
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, "stderr: \(r.stderr)", file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "expected '\(m)' in: \(r.stderr)", file: file, line: line) }
        XCTAssertLessThan(Date().timeIntervalSince(start), 15, file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("out.json")), file: file, line: line)
    }

    func eval(base: String, data rows: String? = nil) -> [String] {
        ["eval", "--base", base, "--data", rows ?? "\(data)/define.eval.jsonl", "--limit", "2"]
    }

    static let deepArray = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)

    /// A run that does not fit its memory budget is refused before loading, naming the need and
    /// the budget; one that fits in a tight budget runs with smaller micro-batches, same result.
    func testOverBudgetRunIsRefusedBeforeLoading() throws {
        let deltas = tmp.path("d.h5")
        let d = try CommandRunner.run("ila-diff", ["\(tiny)/base-A", "\(tiny)/full-pyapi", "-o", deltas])
        XCTAssertEqual(d.status, 0, d.stderr)
        try assertRefused(["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data", "\(data)/define.train.jsonl",
                           "--steps", "1", "-o", tmp.path("out.json"), "--max-memory", "2M"],
                          mentions: ["base-A: needs", "available (--max-memory)", "weights"])
        try assertRefused(eval(base: "\(tiny)/base-A") + ["--max-memory", "1K"], mentions: ["needs", "1 KB"].dropLast() + ["available"])
        let usage = try CommandRunner.run("ila-mask", eval(base: "\(tiny)/base-A") + ["--max-memory", "lots"])
        XCTAssertEqual(usage.status, 2, usage.stderr)
        // The plan's fixed part for this model, then a budget leaving room for about one row.
        let base = try BaseModel(path: "\(tiny)/base-A")
        var plan = MemoryPlan(spec: base.spec, checkpoint: base.checkpoint, deltas: try DeltaStore(path: deltas), gradient: false)
        plan.runtime = MemoryPlan.runtimeBytes(.auto)
        let tight = plan.total(tokens: 300)
        let args = eval(base: "\(tiny)/base-A") + ["--deltas", deltas, "--gamma", "1", "--json"]
        let roomy = try CommandRunner.run("ila-mask", args)
        let small = try CommandRunner.run("ila-mask", args + ["--max-memory", "\(tight)"])
        XCTAssertEqual(roomy.status, 0, roomy.stderr)
        XCTAssertEqual(small.status, 0, small.stderr)
        func nll(_ r: CommandResult) throws -> Double {
            try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["mean_nll"] as? Double)
        }
        XCTAssertEqual(try nll(roomy), try nll(small))
        XCTAssertEqual(try plan.tokenBudget(budget: tight, rowTokens: 256, source: "test", what: "x"), 300)
    }

    /// A budget where one row's activations fit only recomputed: learn switches to activation
    /// recomputation by itself and learns the same scores as with room to spare.
    func testTightBudgetRecomputesActivations() throws {
        let deltas = tmp.path("d.h5")
        XCTAssertEqual(try CommandRunner.run("ila-diff", ["\(tiny)/base-A", "\(tiny)/lora-pyapi", "-o", deltas]).status, 0)
        let base = try BaseModel(path: "\(tiny)/base-A")
        var plan = MemoryPlan(spec: base.spec, checkpoint: base.checkpoint, deltas: try DeltaStore(path: deltas), gradient: true)
        plan.runtime = MemoryPlan.runtimeBytes(.auto)
        XCTAssertLessThan(plan.perTokenRecomputed, plan.perToken)
        let seqLen = 64
        let budget = plan.beforeTokens + seqLen * (plan.perTokenRecomputed + plan.perToken) / 2
        XCTAssertGreaterThan(plan.total(tokens: seqLen), budget, "one row must not fit without recomputation")
        func learn(_ extra: [String], _ out: String) throws -> (scores: [Double], recompute: Int) {
            let r = try CommandRunner.run("ila-mask", ["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data", "\(data)/pyapi.train.jsonl",
                                                       "--steps", "3", "--seq-len", "\(seqLen)", "--limit", "12", "-o", tmp.path(out), "--json"] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
            let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let m = try XCTUnwrap(o["memory"] as? [String: Int])
            let ranking = try Ranking.load(path: tmp.path(out))
            return (ranking.layers.map(\.score), try XCTUnwrap(m["recompute"]))
        }
        let roomy = try learn([], "roomy.json")
        let tight = try learn(["--max-memory", "\(budget)"], "tight.json")
        let forced = try learn(["--recompute"], "forced.json")
        XCTAssertEqual(roomy.recompute, 0)
        XCTAssertEqual(tight.recompute, 1)
        XCTAssertEqual(forced.recompute, 1)
        XCTAssertEqual(tight.scores.count, roomy.scores.count)
        for (a, b) in zip(tight.scores, roomy.scores) { XCTAssertEqual(a, b, accuracy: 1e-9 * max(1, abs(b))) }
        for (a, b) in zip(forced.scores, roomy.scores) { XCTAssertEqual(a, b, accuracy: 1e-9 * max(1, abs(b))) }
        // Below even the recomputed need, the run is refused.
        try assertRefused(["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data", "\(data)/pyapi.train.jsonl", "--steps", "1",
                           "--seq-len", "\(seqLen)", "-o", tmp.path("no.json"),
                           "--max-memory", "\(plan.beforeTokens + seqLen * plan.perTokenRecomputed - 1)"], mentions: ["needs", "available"])
    }

    /// The plan's estimate for the micro-batches that ran is within 15% of the measured peak
    /// resident memory (`--json` reports both), for LoRA and full deltas, learn and eval.
    func testMemoryPlanEstimatesThePeak() throws {
        var sets: [(base: String, aligned: String, data: String)] = [("\(tiny)/base-A", "\(tiny)/full-pyapi", "\(data)/pyapi.train.jsonl"),
                                                                     ("\(tiny)/base-A", "\(tiny)/lora-pyapi", "\(data)/pyapi.train.jsonl")]
        if let bed = RepoPaths.sharedTestbed {
            for a in ["lora-pyapi", "full-pyapi"] {
                sets.append(("\(bed.path)/small/base-A", "\(bed.path)/small/\(a)", "\(bed.path)/data/pyapi.train.jsonl"))
            }
        }
        for (i, set) in sets.enumerated() {
            let deltas = tmp.path("m\(i).h5")
            XCTAssertEqual(try CommandRunner.run("ila-diff", [set.base, set.aligned, "-o", deltas]).status, 0)
            for command in [["learn", "--steps", "2", "-o", tmp.path("m\(i)-r.json")], ["eval", "--gamma", "1", "--limit", "32"]] {
                let r = try CommandRunner.run("ila-mask", command + ["--base", set.base, "--deltas", deltas, "--data", set.data, "--json"])
                XCTAssertEqual(r.status, 0, r.stderr)
                let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
                let m = try XCTUnwrap(o["memory"] as? [String: Int])
                let planned = Double(try XCTUnwrap(m["planned_bytes"])), peak = Double(try XCTUnwrap(m["peak_rss_bytes"]))
                XCTAssertEqual(planned, peak, accuracy: 0.15 * peak, "\(command[0]) \(set.aligned): planned \(planned), peak \(peak)")
            }
        }
    }

    func testHostileConfig() throws {
        let cases: [(String, [String])] = [
            (Self.deepArray, ["config.json"]),
            (String(repeating: #"{"a":"#, count: 50_000) + "1" + String(repeating: "}", count: 50_000), ["config.json"]),
        ]
        for (text, mentions) in cases {
            try assertRefused(eval(base: try base(replacing: "config.json", with: Data(text.utf8))), mentions: mentions)
        }
        let good = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(tiny)/base-A/config.json"))) as! [String: Any]
        let edits: [(String, Any, String)] = [
            ("hidden_size", 1e300, "hidden_size"), ("hidden_size", -64, "hidden_size"),
            ("vocab_size", 4_000_000_000_000, "vocab_size"), ("num_key_value_heads", 0, "num_key_value_heads"),
            ("num_attention_heads", 0, "num_attention_heads"), ("intermediate_size", "176", "intermediate_size"),
            ("head_dim", 9_223_372_036_854_775_807, "head_dim"), ("rms_norm_eps", -1, "rms_norm_eps"),
        ]
        for (key, value, mention) in edits {
            var cfg = good
            cfg[key] = value
            if key == "num_attention_heads" { cfg["head_dim"] = nil }
            let b = try base(replacing: "config.json", with: JSONSerialization.data(withJSONObject: cfg))
            try assertRefused(eval(base: b), mentions: [mention])
        }
    }

    func testHostileTokenizer() throws {
        var tok = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(tiny)/base-A/tokenizer.json"))) as! [String: Any]
        var model = tok["model"] as! [String: Any]
        // Merges referring to unknown tokens.
        var m = model
        m["merges"] = ["▁ zzqq"]
        tok["model"] = m
        try assertRefused(eval(base: try base(replacing: "tokenizer.json", with: JSONSerialization.data(withJSONObject: tok))),
                          mentions: ["tokenizer.json", "merge 1", "not in the vocabulary"])
        m["merges"] = [["only-one"]]
        tok["model"] = m
        try assertRefused(eval(base: try base(replacing: "tokenizer.json", with: JSONSerialization.data(withJSONObject: tok))),
                          mentions: ["merge 1"])
        // Ids out of range and negative.
        m = model
        var vocab = m["vocab"] as! [String: Any]
        vocab["zz"] = 1e300
        m["vocab"] = vocab
        tok["model"] = m
        try assertRefused(eval(base: try base(replacing: "tokenizer.json", with: JSONSerialization.data(withJSONObject: tok))),
                          mentions: ["zz"])
        // Deep nesting.
        try assertRefused(eval(base: try base(replacing: "tokenizer.json", with: Data(Self.deepArray.utf8))),
                          mentions: ["tokenizer.json", "nesting"])
        // A vocabulary of 300 000 extra entries loads within seconds (ids beyond the model's
        // vocab_size are refused only if a row uses them).
        vocab = model["vocab"] as! [String: Any]
        let first = vocab.count
        for i in 0..<300_000 { vocab["x\(i)"] = first + i }
        model["vocab"] = vocab
        tok["model"] = model
        let big = try base(replacing: "tokenizer.json", with: JSONSerialization.data(withJSONObject: tok))
        let start = Date()
        let r = try CommandRunner.run("ila-mask", eval(base: big))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(start), 15)
        // A row that uses one of them is refused.
        let rows = tmp.path("big-ids.jsonl")
        try Data(#"{"input_ids": [1, \#(first + 5), 7], "labels": [-100, 7, 7]}"#.utf8).write(to: URL(fileURLWithPath: rows))
        try assertRefused(eval(base: big, data: rows), mentions: ["outside the vocabulary"])
    }

    func testHostileRows() throws {
        let lines: [(String, String)] = [
            (Self.deepArray, "not valid JSON"),
            (#"{"input_ids": [1, 99999999999999999999], "labels": [1, 2]}"#, "input_ids[1]"),
            (#"{"input_ids": [1, 2], "labels": [1, -5]}"#, "labels[1]"),
            (#"{"input_ids": [], "labels": []}"#, "empty"),
            (#"{"messages": []}"#, "no assistant turn"),
            (#"{"messages": [{"role": "assistant", "content": 5}]}"#, "content"),
            (#"{"instruction": {"a": 1}, "output": "x"}"#, "instruction"),
        ]
        for (i, (line, mention)) in lines.enumerated() {
            let p = tmp.path("rows\(i).jsonl")
            try Data((line + "\n").utf8).write(to: URL(fileURLWithPath: p))
            for template in PromptTemplate.allCases {
                try assertRefused(eval(base: "\(tiny)/base-A", data: p) + ["--template", template.rawValue],
                                  mentions: ["rows\(i).jsonl:1", mention])
            }
        }
        // A 10 MB row is tokenized (and cut to --seq-len) within seconds.
        let p = tmp.path("long.jsonl")
        let long = String(repeating: "much ", count: 2_000_000)
        try Data((#"{"instruction": "x", "output": "\#(long)"}"# + "\n").utf8).write(to: URL(fileURLWithPath: p))
        let start = Date()
        let r = try CommandRunner.run("ila-mask", eval(base: "\(tiny)/base-A", data: p) + ["--seq-len", "32"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(start), 20)
    }

    func testHostileRanking() throws {
        let out = tmp.path("out.json")
        let cases: [(String, String)] = [
            (Self.deepArray, "not valid JSON"),
            (#"{"format": "ila-ranking", "version": 1, "model": {"architecture": "x", "blocks": 1, "kinds": []}, "layers": [{"name": "model.layers.0.self_attn.q_proj", "block": 0, "kind": "q_proj", "score": 0, "rank": 99999999999999999999}]}"#, "out of range"),
            (#"{"format": "ila-ranking", "version": 1, "model": {"architecture": "x", "blocks": -3, "kinds": []}, "layers": [{"name": "model.layers.0.self_attn.q_proj", "block": 0, "kind": "q_proj", "score": 0, "rank": 1}]}"#, "blocks"),
            (#"{"format": "ila-ranking", "version": 1, "model": {"architecture": "x", "blocks": 1, "kinds": []}, "layers": []}"#, "no layers"),
        ]
        for (i, (text, mention)) in cases.enumerated() {
            let p = tmp.path("r\(i).json")
            try Data(text.utf8).write(to: URL(fileURLWithPath: p))
            try assertRefused(["export", p, "--top", "0.5", "--format", "json", "-o", out], mentions: ["r\(i).json", mention])
        }
    }
}
