import Foundation
import ILADiff
import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking
import ILATestSupport
import XCTest

/// `ila-mask eval` and `ila-mask learn` end to end through the built binary.
final class MaskCommandTests: XCTestCase {
    var tmp: TempDir!
    let tiny = RepoPaths.fixtures.appendingPathComponent("tiny").path
    let data = RepoPaths.fixtures.appendingPathComponent("data").path

    override func setUpWithError() throws { tmp = TempDir("ila-mask-cmd") }
    override func tearDown() { tmp.remove() }

    func diff(_ aligned: String) throws -> String {
        let out = tmp.path("\(aligned).h5")
        let r = try CommandRunner.run("ila-diff", ["\(tiny)/base-A", "\(tiny)/\(aligned)", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        return out
    }

    func assertOneLineError(_ r: CommandResult, mentions: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 1, "stderr: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, "stderr: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(mentions), "expected '\(mentions)' in: \(r.stderr)", file: file, line: line)
    }

    /// `eval --gamma G --limit 64 --json` prints reference.json's mean_nll_gamma_G.
    func testEvalMatchesReference() throws {
        let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tiny + "/reference.json"))) as? [String: Any]
        let entry = try XCTUnwrap((ref?["aligned"] as? [String: Any])?["lora-whatis"] as? [String: Any])
        let deltas = try diff("lora-whatis")
        for (g, key) in [("0", "mean_nll_gamma_0"), ("0.5", "mean_nll_gamma_0.5"), ("1", "mean_nll_gamma_1")] {
            let r = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--deltas", deltas, "--gamma", g,
                                                      "--data", "\(data)/whatis.eval.jsonl", "--limit", "64", "--json"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let want = try XCTUnwrap(entry[key] as? Double)
            XCTAssertEqual(try XCTUnwrap(o["mean_nll"] as? Double), want, accuracy: 1e-4 * want)
            XCTAssertEqual(o["rows"] as? Int, 64)
        }
        // Base alone equals γ = 0.
        let base = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--data", "\(data)/whatis.eval.jsonl",
                                                     "--limit", "64", "--json"])
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(base.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(try XCTUnwrap(o["mean_nll"] as? Double), try XCTUnwrap(entry["mean_nll_gamma_0"] as? Double), accuracy: 1e-3)
    }

    func testEvalErrors() throws {
        let deltas = try diff("lora-pyapi")
        var r = try CommandRunner.run("ila-mask", ["eval", "--base", tmp.path("nope"), "--data", "\(data)/pyapi.eval.jsonl"])
        assertOneLineError(r, mentions: "nope")
        let bad = tmp.path("bad.jsonl")
        try "{\"instruction\": \"a\", \"output\": \"b\"}\n{not json\n".write(toFile: bad, atomically: true, encoding: .utf8)
        r = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--data", bad])
        assertOneLineError(r, mentions: "bad.jsonl:2")
        // Pre-tokenized ids beyond the model's vocabulary name the data file.
        let big = tmp.path("big.jsonl")
        try "{\"input_ids\": [1, 5, 9999], \"labels\": [-100, 5, 9999]}\n".write(toFile: big, atomically: true, encoding: .utf8)
        r = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--data", big])
        assertOneLineError(r, mentions: "big.jsonl")
        // Deltas of another model (base-B's shapes differ from base-A's).
        r = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-B", "--deltas", deltas, "--data", "\(data)/pyapi.eval.jsonl"])
        assertOneLineError(r, mentions: "shape")
        // Usage errors exit 2.
        r = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--deltas", deltas, "--ranking", "r.json",
                                              "--data", "\(data)/pyapi.eval.jsonl"])
        XCTAssertEqual(r.status, 2)
    }

    /// --stable-steps K stops at the first step where, by a hand computation on the recorded
    /// trajectory of an uninterrupted run, the top-75% set has not changed for K steps and the
    /// scores' Spearman correlation with K steps earlier is ≥ 0.99.
    func testStableStepsStopsWhereTheTrajectorySays() throws {
        let deltas = try diff("lora-define-100")
        let k = 4
        func learn(_ out: String, _ extra: [String]) throws -> Ranking {
            let r = try CommandRunner.run("ila-mask", ["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data", "\(data)/define.train.jsonl",
                                                      "-o", out, "--steps", "120", "--batch", "4", "--seq-len", "64", "--lr", "0.2"] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
            return try Ranking.load(path: out)
        }
        _ = try learn(tmp.path("full.json"), [])
        let h5 = try HDF5File.openReadOnly(path: tmp.path("full.h5"))
        let flat = try h5.root().openDataset("scores").readFloats().map(Double.init)
        let n = 14
        let traj = stride(from: 0, to: flat.count, by: n).map { Array(flat[$0..<($0 + n)]) }
        // Naive: top set by sorting (ties to the lower index), Spearman from ranks without ties.
        func top(_ s: [Double]) -> Set<Int> {
            Set(s.indices.sorted { s[$0] != s[$1] ? s[$0] > s[$1] : $0 < $1 }.prefix(Int((0.75 * Double(n)).rounded(.down) + (0.75 * Double(n) - (0.75 * Double(n)).rounded(.down) >= 0.5 ? 1 : 0))))
        }
        func ranks(_ s: [Double]) -> [Double] {
            var r = [Double](repeating: 0, count: n)
            for (pos, i) in s.indices.sorted(by: { s[$0] < s[$1] }).enumerated() { r[i] = Double(pos) }
            return r
        }
        func spearman(_ a: [Double], _ b: [Double]) -> Double {
            let ra = ranks(a), rb = ranks(b)
            let d2 = zip(ra, rb).map { ($0 - $1) * ($0 - $1) }.reduce(0, +)
            return 1 - 6 * d2 / Double(n * (n * n - 1))
        }
        var expected: Int?
        for i in k..<traj.count where (i - k..<i).allSatisfy({ top(traj[$0]) == top(traj[i]) }) && spearman(traj[i], traj[i - k]) >= 0.99 {
            expected = i + 1
            break
        }
        let want = try XCTUnwrap(expected, "the 120-step run never became stable; the test needs a run that does")
        XCTAssertLessThan(want, 120)
        let stopped = try learn(tmp.path("stable.json"), ["--stable-steps", "\(k)"])
        XCTAssertEqual(stopped.objective?.stoppedAt, want)
        XCTAssertEqual(stopped.objective?.stableSteps, k)
        XCTAssertEqual(stopped.history?.count, want)
        XCTAssertEqual(try HDF5File.openReadOnly(path: tmp.path("stable.h5")).root().openDataset("scores").shape(), [want, n])
    }

    /// learn writes ranking.json and ranking.h5; the same seed gives the same file.
    func testLearnWritesRankingAndTrajectoryDeterministically() throws {
        let deltas = try diff("lora-define-100")
        func learn(_ out: String) throws -> CommandResult {
            try CommandRunner.run("ila-mask", ["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data", "\(data)/define.train.jsonl",
                                              "-o", out, "--steps", "15", "--batch", "4", "--seq-len", "64",
                                              "--eval", "\(data)/define.eval.jsonl", "--eval-limit", "8"])
        }
        let r1 = try learn(tmp.path("a.json")), r2 = try learn(tmp.path("b.json"))
        XCTAssertEqual(r1.status, 0, r1.stderr)
        XCTAssertEqual(r2.status, 0, r2.stderr)
        let a = try Ranking.load(path: tmp.path("a.json")), b = try Ranking.load(path: tmp.path("b.json"))
        XCTAssertEqual(a.layers, b.layers)
        XCTAssertEqual(a.layers.count, 14)
        XCTAssertEqual(a.history?.count, 15)
        XCTAssertEqual(a.objective?.steps, 15)
        XCTAssertNotNil(a.eval?["nll_mask"])
        let h5 = try HDF5File.openReadOnly(path: tmp.path("a.h5"))
        let scores = try h5.root().openDataset("scores")
        XCTAssertEqual(try scores.shape(), [15, 14])
        XCTAssertEqual(try scores.stringArrayAttribute("layers"), a.layers.map(\.name))
        let last = Array(try scores.readFloats().suffix(14))
        for (i, l) in a.layers.enumerated() { XCTAssertEqual(Double(last[i]), l.score, accuracy: 1e-5) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("a.state.json")))
        XCTAssertEqual(tmp.contents().filter { $0.hasPrefix(".") }, [], "no temporary files left")

        // eval --ranking --top works on what learn wrote.
        let e = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--deltas", deltas, "--ranking", tmp.path("a.json"),
                                                  "--top", "0.5", "--data", "\(data)/define.eval.jsonl", "--limit", "8", "--json"])
        XCTAssertEqual(e.status, 0, e.stderr)
    }

    /// SIGINT mid-run saves the state; --resume ends with the same ranking as an uninterrupted run.
    func testInterruptAndResumeGiveTheSameRanking() throws {
        let deltas = try diff("lora-pyapi")
        let args = ["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data", "\(data)/pyapi.train.jsonl",
                    "--steps", "4000", "--batch", "2", "--seq-len", "48", "--save-every", "0"]
        let full = try CommandRunner.run("ila-mask", args + ["-o", tmp.path("full.json")])
        XCTAssertEqual(full.status, 0, full.stderr)

        let started = try CommandRunner.start("ila-mask", args + ["-o", tmp.path("cut.json")])
        // Wait until learning is under way (the state would otherwise not exist yet), then interrupt.
        usleep(800_000)
        kill(started.0.processIdentifier, SIGINT)
        let cut = CommandRunner.finish(started)
        if cut.status == 0 {
            throw XCTSkip("learn finished before the interrupt arrived; machine too fast for this timing")
        }
        XCTAssertEqual(cut.status, 128 + SIGINT, cut.stderr)
        XCTAssertTrue(cut.stderr.contains("--resume"), cut.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("cut.json")), "no ranking before the end")
        XCTAssertTrue(FileManager.default.fileExists(atPath: tmp.path("cut.state.json")))

        let resumed = try CommandRunner.run("ila-mask", args + ["-o", tmp.path("cut.json"), "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let a = try Ranking.load(path: tmp.path("full.json")), b = try Ranking.load(path: tmp.path("cut.json"))
        XCTAssertEqual(a.layers, b.layers)
        XCTAssertEqual(a.history, b.history)

        // Resuming with other options is refused.
        let again = try CommandRunner.run("ila-mask", args + ["-o", tmp.path("x.json"), "--resume"])
        assertOneLineError(again, mentions: "x.state.json")
    }

    /// `-o deltas.json` would put the trajectory (deltas.h5) over the deltas themselves.
    func testLearnRefusesToOverwriteItsDeltas() throws {
        let deltas = try diff("lora-pyapi")
        let before = try Data(contentsOf: URL(fileURLWithPath: deltas))
        let r = try CommandRunner.run("ila-mask", ["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data",
                                                  "\(data)/pyapi.train.jsonl", "-o", String(deltas.dropLast(3)) + ".json", "--steps", "2"])
        assertOneLineError(r, mentions: "--deltas")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: deltas)), before)
    }

    func testLearnRefusesUnwritableOutputBeforeWorking() throws {
        let deltas = try diff("lora-pyapi")
        let r = try CommandRunner.run("ila-mask", ["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data",
                                                  "\(data)/pyapi.train.jsonl", "-o", tmp.path("missing-dir/r.json")])
        assertOneLineError(r, mentions: "missing-dir")
    }
}
