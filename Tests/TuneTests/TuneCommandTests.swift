import Foundation
import ILADiff
import ILARanking
import ILATestSupport
import XCTest

/// ila-tune end to end: PEFT loads what it writes (same NLL as transformers), ila-diff reads it,
/// an interrupted run resumes to the uninterrupted result, milestones, the ε-stable stop,
/// selections, and one clear line for bad input.
final class TuneCommandTests: XCTestCase {
    let tiny = RepoPaths.fixtures.appendingPathComponent("tiny").path
    let data = RepoPaths.fixtures.appendingPathComponent("data").path

    func tune(_ out: String, _ extra: [String]) throws -> CommandResult {
        try CommandRunner.run("ila-tune", ["--base", "\(tiny)/base-A", "--data", "\(data)/pyapi.train.jsonl", "-o", out,
                                           "--seq-len", "48", "--batch", "2", "--lr", "5e-3"] + extra)
    }

    func json(_ path: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    static var pythonHasPEFT: Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", "import torch, transformers, peft"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    /// The adapter of a subset of layers: PEFT adapts exactly those modules and its NLL in
    /// transformers equals ila-tune's own held-out NLL and ila-mask eval's on ila-diff's deltas.
    func testAdapterLoadsInPEFTAndIlaDiff() throws {
        let tmp = TempDir("ila-tune-peft")
        defer { tmp.remove() }
        let out = tmp.path("adapter")
        let regex = "model\\.layers\\.1\\..*|model\\.layers\\.0\\.self_attn\\.q_proj"
        let r = try tune(out, ["--steps", "6", "--layers", regex, "--eval", "\(data)/pyapi.eval.jsonl", "--eval-limit", "16",
                               "--seq-len", "64", "--rslora", "--r", "4", "--alpha", "8"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let log = try json(out + "/train_log.json")
        let ownNLL = try XCTUnwrap(log["eval_nll"] as? Double)
        let layers = try XCTUnwrap(log["layers"] as? [String])
        XCTAssertEqual(layers.count, 8)
        // ila-diff reads the adapter; ila-mask eval at γ = 1 is the tuned model.
        let deltas = tmp.path("deltas.h5")
        let d = try CommandRunner.run("ila-diff", ["\(tiny)/base-A", out, "-o", deltas, "--json"])
        XCTAssertEqual(d.status, 0, d.stderr)
        let e = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--deltas", deltas, "--gamma", "1",
                                                   "--data", "\(data)/pyapi.eval.jsonl", "--limit", "16", "--seq-len", "64", "--json"])
        XCTAssertEqual(e.status, 0, e.stderr)
        let evalNLL = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as? [String: Any])?["mean_nll"] as? Double)
        XCTAssertEqual(evalNLL, ownNLL, accuracy: 1e-5 * ownNLL)
        let base = try CommandRunner.run("ila-mask", ["eval", "--base", "\(tiny)/base-A", "--data", "\(data)/pyapi.eval.jsonl",
                                                      "--limit", "16", "--seq-len", "64", "--json"])
        let baseNLL = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(base.stdout.utf8)) as? [String: Any])?["mean_nll"] as? Double)
        XCTAssertGreaterThan(abs(baseNLL - ownNLL), 1e-3, "the adapter must change the model for the check to mean anything")

        guard Self.pythonHasPEFT else {
            throw XCTSkip("python3 with torch, transformers and peft is not installed; the PEFT load check did not run")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", RepoPaths.root.appendingPathComponent("bench/tune_peft_nll.py").path, "\(tiny)/base-A", out,
                       "\(data)/pyapi.eval.jsonl", "--limit", "16", "--seq-len", "64"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let py = try XCTUnwrap(try JSONSerialization.jsonObject(with: output) as? [String: Any])
        XCTAssertEqual(try XCTUnwrap(py["mean_nll"] as? Double), ownNLL, accuracy: 1e-4 * ownNLL)
        XCTAssertEqual(Set(try XCTUnwrap(py["adapted"] as? [String])), Set(layers))
    }

    /// SIGINT saves the state and writes no adapter; --resume finishes with the adapter an
    /// uninterrupted run writes, bit for bit.
    func testResumeEqualsUninterrupted() throws {
        let tmp = TempDir("ila-tune-resume")
        defer { tmp.remove() }
        let whole = tmp.path("whole"), split = tmp.path("split")
        let args = ["--steps", "120", "--save-every", "3", "--order", "shuffle", "--seed", "5", "--weight-decay", "0.01",
                    "--eval", "\(data)/pyapi.eval.jsonl", "--eval-limit", "4", "--eval-every", "40"]
        let a = try tune(whole, args)
        XCTAssertEqual(a.status, 0, a.stderr)
        var interrupted = false
        for attempt in 0..<3 where !interrupted {
            let p = try CommandRunner.start("ila-tune", ["--base", "\(tiny)/base-A", "--data", "\(data)/pyapi.train.jsonl", "-o", split,
                                                         "--seq-len", "48", "--batch", "2", "--lr", "5e-3"] + args + (attempt > 0 ? ["--resume"] : []))
            let state = split + ".state.safetensors"
            let deadline = Date().addingTimeInterval(60)
            while !FileManager.default.fileExists(atPath: state) && p.0.isRunning && Date() < deadline { usleep(5_000) }
            kill(p.0.processIdentifier, SIGINT)
            let r = CommandRunner.finish(p)
            if r.status == 130 {
                interrupted = true
                XCTAssertEqual(r.errorLines.count, 1, r.stderr)
                XCTAssertTrue(r.stderr.contains("--resume"), r.stderr)
                XCTAssertFalse(FileManager.default.fileExists(atPath: split), "an interrupted run wrote the adapter")
                XCTAssertTrue(FileManager.default.fileExists(atPath: state))
            } else {
                XCTAssertEqual(r.status, 0, r.stderr)
                try? FileManager.default.removeItem(atPath: split)
            }
        }
        XCTAssertTrue(interrupted, "the run was never interrupted before finishing")
        let b = try tune(split, args + ["--resume"])
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: whole + "/adapter_model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: split + "/adapter_model.safetensors")))
        let la = try json(whole + "/train_log.json"), lb = try json(split + "/train_log.json")
        XCTAssertEqual(la["loss_curve"] as? [Double], lb["loss_curve"] as? [Double])
        XCTAssertEqual((la["eval"] as? [[String: Any]])?.count, 3)
        XCTAssertEqual((lb["eval"] as? [[String: Any]])?.compactMap { $0["nll"] as? Double },
                       (la["eval"] as? [[String: Any]])?.compactMap { $0["nll"] as? Double })
        XCTAssertFalse(FileManager.default.fileExists(atPath: split + ".state.safetensors"), "state left after finishing")
    }

    /// --save-at writes ADAPTER-<pct> at its step; the 100% milestone is the final adapter.
    func testMilestones() throws {
        let tmp = TempDir("ila-tune-milestones")
        defer { tmp.remove() }
        let out = tmp.path("ad")
        let r = try tune(out, ["--steps", "8", "--save-at", "25,50,100"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for (p, step) in [(25, 2), (50, 4), (100, 8)] {
            let dir = out + String(format: "-%03d", p)
            let log = try json(dir + "/train_log.json")
            XCTAssertEqual(log["step"] as? Int, step, "milestone \(p)%")
            XCTAssertEqual((log["loss_curve"] as? [Double])?.count, step)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "-001"))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "-100/adapter_model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: out + "/adapter_model.safetensors")))
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: out + "-025/adapter_model.safetensors")),
                          try Data(contentsOf: URL(fileURLWithPath: out + "/adapter_model.safetensors")))
    }

    /// --until-stable stops at the first step where the windows' mean losses differ by < ε,
    /// checked against the run's own loss log.
    func testUntilStable() throws {
        let tmp = TempDir("ila-tune-stable")
        defer { tmp.remove() }
        let out = tmp.path("ad")
        let w = 4, eps = 0.05
        let r = try tune(out, ["--steps", "200", "--until-stable", "\(eps)", "--window", "\(w)", "--lr", "2e-3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let log = try json(out + "/train_log.json")
        let curve = try XCTUnwrap(log["loss_curve"] as? [Double])
        let stable = try XCTUnwrap(log["stable_at"] as? Int, "no stable point recorded")
        XCTAssertEqual(curve.count, stable)
        XCTAssertLessThan(stable, 200)
        func windowsDiffer(_ t: Int) -> Double {
            let a = curve[(t - w)..<t].reduce(0, +) / Double(w), b = curve[(t - 2 * w)..<(t - w)].reduce(0, +) / Double(w)
            return abs(a - b)
        }
        XCTAssertLessThan(windowsDiffer(stable), eps)
        for t in (2 * w)..<stable { XCTAssertGreaterThanOrEqual(windowsDiffer(t), eps, "stable already at \(t)") }
    }

    /// --ranking/--top and --select train exactly the layers they name.
    func testSelections() throws {
        let tmp = TempDir("ila-tune-select")
        defer { tmp.remove() }
        let deltas = tmp.path("deltas.h5"), ranking = tmp.path("ranking.json"), sel = tmp.path("sel.json")
        XCTAssertEqual(try CommandRunner.run("ila-diff", ["\(tiny)/base-A", "\(tiny)/lora-pyapi", "-o", deltas]).status, 0)
        let l = try CommandRunner.run("ila-mask", ["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data", "\(data)/pyapi.train.jsonl",
                                                   "--steps", "3", "--batch", "2", "--seq-len", "48", "-o", ranking])
        XCTAssertEqual(l.status, 0, l.stderr)
        let x = try CommandRunner.run("ila-mask", ["export", ranking, "--top", "0.5", "--format", "json", "-o", sel])
        XCTAssertEqual(x.status, 0, x.stderr)
        let want = try Ranking.load(path: ranking).top(0.3)
        let a = try tune(tmp.path("a"), ["--steps", "2", "--ranking", ranking, "--top", "0.3"])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(Set(try json(tmp.path("a") + "/train_log.json")["layers"] as? [String] ?? []), want)
        let s = try tune(tmp.path("s"), ["--steps", "2", "--select", sel])
        XCTAssertEqual(s.status, 0, s.stderr)
        let selected = (try json(sel)["layers"] as? [[String: Any]] ?? []).filter { $0["selected"] as? Bool == true }.compactMap { $0["name"] as? String }
        XCTAssertEqual(selected.count, 7)
        XCTAssertEqual(Set(try json(tmp.path("s") + "/train_log.json")["layers"] as? [String] ?? []), Set(selected))
        let names = try SafetensorsFile(path: tmp.path("s") + "/adapter_model.safetensors").names
        XCTAssertEqual(names.count, 14)
    }

    /// Bad input: one error line naming the problem, exit 1, no adapter directory.
    func testBadInputIsOneLineAndNoOutput() throws {
        let tmp = TempDir("ila-tune-bad")
        defer { tmp.remove() }
        let out = tmp.path("ad")
        // A selection of another (deeper) model's layers.
        let foreign = tmp.path("foreign.json")
        try Data(#"{"format": "ila-selection", "version": 1, "layers": [{"name": "model.layers.5.self_attn.q_proj", "selected": true}]}"#.utf8)
            .write(to: URL(fileURLWithPath: foreign))
        let cases: [([String], String)] = [
            (["--steps", "2", "--layers", "nothing\\.matches"], "matches none"),
            (["--steps", "2", "--init", "\(tiny)/lora-pyapi", "--layers", ".*"], ""),
            (["--steps", "2", "--resume"], "no saved state"),
            (["--steps", "2", "--select", "\(tiny)/lora-pyapi/adapter_config.json"], "not an ila-selection"),
            (["--steps", "2", "--ranking", "\(tmp.path("missing.json"))", "--top", "0.3"], "missing.json"),
            (["--steps", "2", "--select", foreign], "model.layers.5.self_attn.q_proj"),
            (["--steps", "2", "--data", "\(tiny)/base-A/config.json"], "config.json"),
        ]
        for (args, needle) in cases {
            let r = try tune(out, args)
            if args.contains("--init") {
                // lora-pyapi adapts every layer: this one must succeed (the control case).
                XCTAssertEqual(r.status, 0, r.stderr)
                try? FileManager.default.removeItem(atPath: out)
                continue
            }
            XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
            XCTAssertEqual(r.errorLines.count, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(needle), "\(args): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(args) left output")
        }
        // A file where the adapter directory should go is refused before training.
        FileManager.default.createFile(atPath: out, contents: Data("x".utf8))
        let f = try tune(out, ["--steps", "2"])
        XCTAssertEqual(f.status, 1)
        XCTAssertTrue(f.stderr.contains("is a file"), f.stderr)
        // Usage errors exit 2.
        XCTAssertEqual(try tune(tmp.path("u"), ["--steps", "2", "--top", "0.3"]).status, 2)
        XCTAssertEqual(try tune(tmp.path("u"), ["--save-at", "0,50"]).status, 2)
        XCTAssertEqual(try tune(tmp.path("u"), ["--init", "\(tiny)/lora-pyapi", "--r", "4"]).status, 2)
    }

    /// select-report --tune: each selection's tuned NLL is what ila-tune gives on that selection.
    func testSelectReportTuneEqualsIlaTune() throws {
        let tmp = TempDir("ila-select-tune")
        defer { tmp.remove() }
        let deltas = tmp.path("d.h5"), dir = tmp.path("rankings")
        XCTAssertEqual(try CommandRunner.run("ila-diff", ["\(tiny)/base-A", "\(tiny)/lora-pyapi", "-o", deltas]).status, 0)
        let common = ["--base", "\(tiny)/base-A", "--data", "\(data)/pyapi.train.jsonl", "--limit", "40", "--seq-len", "48"]
        let r = try CommandRunner.run("ila-mask", ["select-report", "--deltas", deltas, "--eval", "\(data)/pyapi.eval.jsonl",
                                                   "--eval-limit", "8", "--methods", "rel-change", "--fractions", "0.3,0.6",
                                                   "--random", "0", "--tune", "--tune-steps", "3", "--tune-batch", "2",
                                                   "--save-rankings", dir, "--json"] + common)
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let tuned = try XCTUnwrap((o["tuned_nll"] as? [String: [Double]])?["rel-change"])
        XCTAssertEqual(tuned.count, 2)
        for (k, f) in [0.3, 0.6].enumerated() {
            let out = tmp.path("ad\(k)")
            let t = try CommandRunner.run("ila-tune", common + ["-o", out, "--ranking", "\(dir)/rel-change.json", "--top", "\(f)",
                                                               "--steps", "3", "--batch", "2", "--lr", "2e-3", "--eval",
                                                               "\(data)/pyapi.eval.jsonl", "--eval-limit", "8", "--save-every", "0"])
            XCTAssertEqual(t.status, 0, t.stderr)
            let nll = try XCTUnwrap(try json(out + "/train_log.json")["eval_nll"] as? Double)
            XCTAssertEqual(tuned[k], nll, accuracy: 1e-9 * nll, "F = \(f)")
        }
        XCTAssertNotEqual(tuned[0], tuned[1])
    }
}
