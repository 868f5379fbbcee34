import Foundation
import ILADiff
@testable import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking
import ILATestSupport
import XCTest

/// Runs the built `ila-mask` binary: `export` and `compare` end to end.
final class ExportCommandTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ila-export-cmd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    typealias Result = CommandResult

    private func run(_ args: [String]) throws -> Result { try CommandRunner.run("ila-mask", args) }

    private func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    private func writeRanking(_ name: String = "ranking.json", blocks: Int = 8, seed: UInt64 = 7) throws -> String {
        let p = path(name)
        try ExportFixtures.ranking(blocks: blocks, seed: seed).write(path: p)
        return p
    }

    /// Files in the work folder other than the given ones and the runner's own stdout/stderr files.
    private func strayFiles(except keep: Set<String>) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { !keep.contains($0) && !$0.hasPrefix(".std") }
    }

    private func assertRuntimeError(_ r: Result, contains: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(contains), "expected \(contains) in: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stdout, "", file: file, line: line)
    }

    /// ArgumentParser's usage errors: its own exit code (64 = EX_USAGE on Linux, 2 in the design
    /// text), an `Error:` line, no output.
    private func assertUsageError(_ r: Result, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(r.status == 2 || r.status == 64, "status \(r.status): \(r.stderr)", file: file, line: line)
        XCTAssertGreaterThanOrEqual(r.errorLines.count, 1, r.stderr, file: file, line: line)
    }

    // MARK: export

    func testEveryFormatSucceeds() throws {
        let ranking = try writeRanking()
        for format in ExportFormat.allCases {
            let out = path("out-\(format.rawValue).\(format.fileExtension)")
            let r = try run(["export", ranking, "--top", "0.3", "--format", format.rawValue, "-o", out])
            XCTAssertEqual(r.status, 0, "\(format): \(r.stderr)")
            XCTAssertTrue(r.errorLines.isEmpty, r.stderr)
            let data = try Data(contentsOf: URL(fileURLWithPath: out))
            XCTAssertFalse(data.isEmpty)
            // the same bytes as the library renders
            let sel = Selection(ranking: try Ranking.load(path: ranking), top: 0.3, source: ranking)
            XCTAssertEqual(data, try SelectionExporter.render(sel, format: format), "\(format)")
        }
        XCTAssertEqual(Set(try strayFiles(except: ["ranking.json"])).count, ExportFormat.allCases.count, "no temporary files left")
    }

    func testPeftOptionsAndOverwrite() throws {
        let ranking = try writeRanking()
        let out = path("adapter_config.json")
        try Data("old".utf8).write(to: URL(fileURLWithPath: out))
        let r = try run(["export", ranking, "--top", "0.5", "--format", "peft", "--lora-r", "4", "--lora-alpha", "8", "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let cfg = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any])
        XCTAssertEqual(cfg["r"] as? Int, 4)
        XCTAssertEqual(cfg["lora_alpha"] as? Int, 8)
        let pattern = try XCTUnwrap(cfg["target_modules"] as? String)
        let expected = try Ranking.load(path: ranking).top(0.5)
        let all = try Ranking.load(path: ranking).layers.map(\.name)
        XCTAssertEqual(Set(try all.filter { try ExportFixtures.fullMatch(pattern, $0) }), expected)
    }

    func testMissingRanking() throws {
        let out = path("out.json")
        let r = try run(["export", path("nope.json"), "--top", "0.3", "--format", "json", "-o", out])
        assertRuntimeError(r, contains: "nope.json")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    func testWrongFormatAndVersion() throws {
        let ranking = try writeRanking()
        var obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: ranking))) as? [String: Any])
        obj["format"] = "ila-deltas"
        let badFormat = path("bad-format.json")
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: badFormat))
        obj["format"] = "ila-ranking"
        obj["version"] = 2
        let badVersion = path("bad-version.json")
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: badVersion))
        let notJSON = path("not-json.json")
        try Data("{\"format\": ".utf8).write(to: URL(fileURLWithPath: notJSON))

        let out = path("out.svg")
        assertRuntimeError(try run(["export", badFormat, "--top", "0.3", "--format", "svg", "-o", out]), contains: "format")
        assertRuntimeError(try run(["export", badVersion, "--top", "0.3", "--format", "svg", "-o", out]), contains: "version 2")
        assertRuntimeError(try run(["export", notJSON, "--top", "0.3", "--format", "svg", "-o", out]), contains: "not-json.json")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    func testUnwritableOutput() throws {
        let ranking = try writeRanking()
        let missingDir = path("no-such-dir/out.json")
        assertRuntimeError(try run(["export", ranking, "--top", "0.3", "--format", "json", "-o", missingDir]), contains: "no-such-dir")
        XCTAssertFalse(FileManager.default.fileExists(atPath: missingDir))
        // output path is a folder
        let folder = path("a-folder")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        assertRuntimeError(try run(["export", ranking, "--top", "0.3", "--format", "json", "-o", folder]), contains: "a-folder")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), [])
        XCTAssertEqual(Set(try strayFiles(except: ["ranking.json", "a-folder"])), [])
    }

    func testUsageErrors() throws {
        let ranking = try writeRanking()
        let out = path("out.json")
        for args in [["--top", "0"], ["--top", "1.5"], ["--top", "-0.2"], ["--top", "nan"], ["--top", "abc"]] {
            assertUsageError(try run(["export", ranking] + args + ["--format", "json", "-o", out]))
        }
        assertUsageError(try run(["export", ranking, "--top", "0.3", "--format", "yaml", "-o", out]))
        assertUsageError(try run(["export", ranking, "--top", "0.3", "-o", out]))
        assertUsageError(try run(["export", ranking, "--top", "0.3", "--format", "peft", "--lora-r", "0", "-o", out]))
        assertUsageError(try run(["export", ranking, "--format", "json", "-o", out]))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    func testHelpHasExamples() throws {
        for sub in ["export", "compare"] {
            let r = try run([sub, "--help"])
            XCTAssertEqual(r.status, 0)
            XCTAssertTrue(r.stdout.contains("Examples:"), r.stdout)
            XCTAssertTrue(r.stdout.contains("ila-mask \(sub) "), r.stdout)
            XCTAssertTrue(r.stdout.contains("--top"), r.stdout)
        }
    }

    // MARK: compare

    func testCompareTextAndJSON() throws {
        let a = try writeRanking("a.json", seed: 1)
        let b = try writeRanking("b.json", seed: 2)
        let text = try run(["compare", a, b, "--top", "0.5"])
        XCTAssertEqual(text.status, 0, text.stderr)
        for needle in ["Jaccard", "Spearman", "Kendall", " a ", " b "] { XCTAssertTrue(text.stdout.contains(needle), text.stdout) }

        let r = try run(["compare", a, b, a, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["top"] as? Double, 0.75)
        XCTAssertEqual(obj["rankings"] as? [String], [a, b, a])
        let lib = try RankingComparison(paths: [a, b, a])
        for (key, m) in [("jaccard", lib.jaccard), ("spearman", lib.spearman), ("kendall", lib.kendall)] {
            let got = try XCTUnwrap(obj[key] as? [[Double]], key)
            XCTAssertEqual(got.count, 3)
            for i in 0..<3 { for j in 0..<3 { XCTAssertEqual(got[i][j], m[i][j], accuracy: 1e-12, key) } }
            XCTAssertEqual(got[0][2], 1, accuracy: 1e-12)
        }
    }

    func testCompareErrors() throws {
        let a = try writeRanking("a.json", blocks: 8)
        let c = try writeRanking("c.json", blocks: 6)
        assertUsageError(try run(["compare", a]))
        assertUsageError(try run(["compare"]))
        assertUsageError(try run(["compare", a, a, "--top", "0"]))
        let r = try run(["compare", a, c])
        assertRuntimeError(r, contains: "model.layers.")
        XCTAssertTrue(r.stderr.contains("a.json") && r.stderr.contains("c.json"), r.stderr)
        assertRuntimeError(try run(["compare", a, path("missing.json")]), contains: "missing.json")
    }
}
