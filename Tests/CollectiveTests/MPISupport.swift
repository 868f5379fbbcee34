import Foundation
import ILARanking
import ILATestSupport
import XCTest

/// Runs the built commands under Open MPI's mpirun (DESIGN.md section 12).
enum MPI {
    /// mpirun on PATH (Debian's openmpi-bin), or the test is skipped saying why.
    static func mpirun() throws -> String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") + ["/usr/bin"] {
            let p = "\(dir)/mpirun"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw XCTSkip("mpirun is not installed (scripts/install-deps installs openmpi-bin); MPI tests skipped")
    }

    /// What every test's mpirun needs: root allowed (CI runs as root), more ranks than cores, and
    /// nothing from a launcher that may have started the test runner itself.
    static var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") }
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        return env
    }

    /// `mpirun --oversubscribe -np N <tool> args` (plus `extra` mpirun options), started.
    /// `wrapper` runs mpirun (`wrapper… mpirun …`); `rankWrapper` runs each rank (`mpirun … rankWrapper… tool args`).
    static func start(np: Int, _ tool: String, _ args: [String], mpirunOptions extra: [String] = [],
                      wrapper: [String] = [], rankWrapper: [String] = []) throws -> (Process, URL, URL) {
        let command = [try mpirun(), "--oversubscribe", "-np", "\(np)"] + extra + rankWrapper + [try CommandRunner.binary(tool)] + args
        let full = wrapper + command
        return try CommandRunner.start(executable: full[0], Array(full.dropFirst()), environment: environment)
    }

    static func run(np: Int, _ tool: String, _ args: [String], mpirunOptions extra: [String] = [],
                    wrapper: [String] = []) throws -> CommandResult {
        CommandRunner.finish(try start(np: np, tool, args, mpirunOptions: extra, wrapper: wrapper))
    }

    /// Process ids of the children of `parent` whose environment says rank `rank` of a job.
    static func rankPID(under parent: Int32, rank: Int) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for e in entries {
            guard let pid = Int32(e), let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8) else { continue }
            // ppid is the 2nd field after the parenthesised command name.
            guard let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == parent else { continue }
            guard let env = FileManager.default.contents(atPath: "/proc/\(e)/environ") else { continue }
            let vars = env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if vars.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        return nil
    }
}

/// The tiny test bed's deltas, computed once per test into `dir`.
func tinyDeltas(_ dir: TempDir) throws -> (base: String, deltas: String, train: String, eval: String) {
    let tiny = RepoPaths.fixtures.appendingPathComponent("tiny").path
    let data = RepoPaths.fixtures.appendingPathComponent("data").path
    let deltas = dir.path("deltas.h5")
    let d = try CommandRunner.run("ila-diff", ["\(tiny)/base-A", "\(tiny)/lora-pyapi", "-o", deltas])
    XCTAssertEqual(d.status, 0, d.stderr)
    return ("\(tiny)/base-A", deltas, "\(data)/pyapi.train.jsonl", "\(data)/pyapi.eval.jsonl")
}

/// Two rankings.json from the same objective: the same layers in the same order, scores within
/// 1e-5, and (when `steps` is given, that many) every step's batch NLL within 1e-6 relative.
func assertSameRanking(_ a: String, _ b: String, steps: Int? = nil, _ what: String = "",
                       file: StaticString = #filePath, line: UInt = #line) throws {
    let r1 = try Ranking.load(path: a), r2 = try Ranking.load(path: b)
    XCTAssertEqual(r1.layers.map(\.name), r2.layers.map(\.name), what, file: file, line: line)
    XCTAssertEqual(r1.layers.map(\.rank), r2.layers.map(\.rank), "\(what): rankings differ", file: file, line: line)
    for (x, y) in zip(r1.layers, r2.layers) {
        XCTAssertEqual(x.score, y.score, accuracy: 1e-5, "\(what): \(x.name)", file: file, line: line)
    }
    let h1 = r1.history ?? [], h2 = r2.history ?? []
    if let steps { XCTAssertEqual(h1.count, steps, what, file: file, line: line) }
    XCTAssertEqual(h1.count, h2.count, what, file: file, line: line)
    for (x, y) in zip(h1, h2) {
        XCTAssertEqual(x.nll, y.nll, accuracy: 1e-6 * max(1, abs(x.nll)), "\(what): step \(x.step)", file: file, line: line)
    }
}
