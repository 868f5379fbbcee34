import Foundation
import ILARanking
import ILATestSupport
import XCTest

/// `mpirun -np 2 ila-mask score` equals the single-process run for every method (DESIGN.md
/// section 12): the data-driven ones split the rows (5: shares of 2 and 3, or 1: rank 0 holds
/// none) and add their sums with MPI_Allreduce; the data-free ones compute the same everywhere.
/// Rank 0 alone writes and prints: each rank runs in its own working directory with a relative
/// `-o`, so a file written by rank 1 would show in its directory, and `--tag-output` says which
/// rank printed each line.
final class ScoreDataParallelTests: XCTestCase {
    static let dataMethods = ["block-influence", "block-influence-sublayer", "angular", "taylor", "ablation", "ila"]

    /// The tiny test bed's deltas, computed once for the whole class.
    nonisolated(unsafe) static var bed: (dir: TempDir, files: (base: String, deltas: String, train: String, eval: String))?

    func fixture() throws -> (base: String, deltas: String, train: String, eval: String) {
        if let bed = Self.bed { return bed.files }
        let dir = TempDir("ila-mpi-score-bed")
        let files = try tinyDeltas(dir)
        Self.bed = (dir, files)
        return files
    }

    override class func tearDown() {
        bed?.dir.remove()
        bed = nil
        super.tearDown()
    }

    /// 96 tokens keep a response part in every row (at 48 the alpaca prompt fills most rows).
    func scoreArgs(_ method: String, limit: Int, _ f: (base: String, deltas: String, train: String, eval: String),
                   output: String) -> [String] {
        var a = ["score", "--method", method, "--base", f.base, "--deltas", f.deltas, "--seq-len", "96", "--json", "-o", output]
        if ScoreDataParallelTests.dataMethods.contains(method) { a += ["--data", f.train, "--limit", "\(limit)"] }
        // ila: batch 5 over 2 ranks splits each step's rows 2 + 3.
        if method == "ila" { a += ["--steps", "4", "--batch", "5"] }
        return a
    }

    /// What a two-rank job printed, by rank.
    struct TwoRankRun {
        var status: Int32
        var stdout: [Int: String]
        var stderr: String
        var untagged: String
        var seconds: Double
    }

    /// `mpirun --tag-output -np 2 ila-mask args`, rank r in `<prefix>r` (a shell changes there first).
    func runTwoRanks(_ args: [String], dirPrefix: String) throws -> TwoRankRun {
        let tool = try CommandRunner.binary("ila-mask")
        let command = [try MPI.mpirun(), "--oversubscribe", "--tag-output", "-np", "2",
                       "/bin/sh", "-c", #"cd "$0$OMPI_COMM_WORLD_RANK" && exec "$@""#, dirPrefix, tool] + args
        let started = Date()
        let r = CommandRunner.finish(try CommandRunner.start(executable: command[0], Array(command.dropFirst()),
                                                             environment: MPI.environment))
        // mpirun tags each line, and each chunk (of up to 4 KiB) it forwards, even mid-line: the
        // text after a tag, up to the next one, is that rank's.
        var byRank: [Int: String] = [:]
        let text = r.stdout as NSString
        let tags = try NSRegularExpression(pattern: #"\[\d+,(\d+)\]<stdout>:"#)
            .matches(in: r.stdout, range: NSRange(location: 0, length: text.length))
        let untagged = text.substring(to: tags.first?.range.location ?? text.length)
        for (i, m) in tags.enumerated() {
            guard let rank = Int(text.substring(with: m.range(at: 1))) else { continue }
            let end = i + 1 < tags.count ? tags[i + 1].range.location : text.length
            let from = m.range.location + m.range.length
            byRank[rank, default: ""] += text.substring(with: NSRange(location: from, length: end - from))
        }
        return TwoRankRun(status: r.status, stdout: byRank, stderr: r.stderr, untagged: untagged,
                          seconds: Date().timeIntervalSince(started))
    }

    /// The same layers in the same rank order, scores within float summation order: 1e-5 of the
    /// score, or 1e-6 of the method's largest score for scores that are a small difference of
    /// large sums (ablation's NLL_i − NLL, Taylor's Σ over tokens of dNLL/dγ with cancellation),
    /// whose float32 rounding follows the magnitude of the summands rather than of the result.
    func assertSameRanking(_ one: Ranking, _ two: Ranking, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(one.layers.map(\.name), two.layers.map(\.name), what, file: file, line: line)
        XCTAssertEqual(one.ordered.map(\.name), two.ordered.map(\.name), "\(what): ranking order differs", file: file, line: line)
        XCTAssertEqual(one.layers.map(\.rank), two.layers.map(\.rank), "\(what): ranks differ", file: file, line: line)
        let scale = one.layers.map { abs($0.score) }.max() ?? 0
        for (x, y) in zip(one.layers, two.layers) {
            XCTAssertEqual(x.score, y.score, accuracy: max(1e-5 * abs(x.score), 1e-6 * scale), "\(what) \(x.name)", file: file, line: line)
        }
        XCTAssertEqual(one.objective?.method, two.objective?.method, what, file: file, line: line)
        XCTAssertEqual(one.objective?.rows, two.objective?.rows, "\(what): rows", file: file, line: line)
        XCTAssertEqual(one.objective?.tokens, two.objective?.tokens, "\(what): tokens", file: file, line: line)
    }

    /// One method at one row count: the single-process run, then the two-rank run, compared.
    func check(_ method: String, limit: Int = 5, file: StaticString = #filePath, line: UInt = #line) throws {
        _ = try MPI.mpirun()
        let f = try fixture()
        let tmp = TempDir("ila-mpi-score")
        defer { tmp.remove() }
        let single = tmp.path("one.json")
        let a = try CommandRunner.run("ila-mask", scoreArgs(method, limit: limit, f, output: single))
        XCTAssertEqual(a.status, 0, a.stderr, file: file, line: line)

        let dirs = (tmp.sub("rank0"), tmp.sub("rank1"))
        let b = try runTwoRanks(scoreArgs(method, limit: limit, f, output: "ranking.json"), dirPrefix: tmp.path("rank"))
        XCTAssertEqual(b.status, 0, b.stderr, file: file, line: line)
        XCTAssertEqual(b.stderr, "", "ranks printed to stderr", file: file, line: line)
        XCTAssertEqual(b.untagged, "", "untagged output", file: file, line: line)
        // Rank 0 alone prints (one JSON document) and writes (one file, no temporaries left).
        XCTAssertNil(b.stdout[1], "rank 1 printed: \(b.stdout[1] ?? "")", file: file, line: line)
        let printed = try XCTUnwrap(b.stdout[0], "rank 0 printed nothing", file: file, line: line)
        let json = try XCTUnwrap(try? JSONSerialization.jsonObject(with: Data(printed.utf8)) as? [String: Any], printed,
                                 file: file, line: line)
        XCTAssertEqual(json["method"] as? String, method, file: file, line: line)
        XCTAssertEqual(tmp.contents("rank0"), ["ranking.json"], "rank 0's directory", file: file, line: line)
        XCTAssertEqual(tmp.contents("rank1"), [], "rank 1 wrote into its directory", file: file, line: line)

        let one = try Ranking.load(path: single), two = try Ranking.load(path: dirs.0.appendingPathComponent("ranking.json").path)
        assertSameRanking(one, two, "\(method) --limit \(limit)", file: file, line: line)
        if ScoreDataParallelTests.dataMethods.contains(method) && method != "ila" {
            XCTAssertEqual(two.objective?.rows, limit, "\(method): the ranks' rows add up to --limit", file: file, line: line)
        }
        print(String(format: "score --method %@ --limit %d: two ranks %.2f s", method, limit, b.seconds))
    }

    func testBlockInfluence() throws { try check("block-influence") }
    func testBlockInfluenceSublayer() throws { try check("block-influence-sublayer") }
    func testAngular() throws { try check("angular") }
    func testTaylor() throws { try check("taylor") }
    func testAblation() throws { try check("ablation") }
    func testILA() throws { try check("ila") }

    /// The methods the command knows (its --method help) that need --data are the ones tested
    /// here, and the others are the data-free ones.
    func testEveryDataDrivenMethodIsCovered() throws {
        let f = try fixture()
        let help = try CommandRunner.run("ila-mask", ["score", "--help"])
        XCTAssertEqual(help.status, 0, help.stderr)
        let text = help.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        let list = try XCTUnwrap(text.range(of: "(values: ").flatMap { r in text[r.upperBound...].split(separator: ")").first })
        let methods = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        XCTAssertEqual(methods.count, 8, text)
        let tmp = TempDir("ila-mpi-score-list")
        defer { tmp.remove() }
        var needData: [String] = []
        for m in methods {
            let r = try CommandRunner.run("ila-mask", ["score", "--method", m, "--base", f.base, "--deltas", f.deltas, "-o", tmp.path("\(m).json")])
            if r.stderr.contains("needs --data") { needData.append(m) } else { XCTAssertEqual(r.status, 0, "\(m): \(r.stderr)") }
        }
        XCTAssertEqual(Set(needData), Set(Self.dataMethods))
        XCTAssertEqual(Set(methods).subtracting(needData), ["rel-change", "spectrum"])
    }

    /// One row over two ranks: rank 0's share is empty and adds zeros (hidden-state sums, the
    /// gradient, the ablation NLL sums).
    func testRankWithoutRows() throws {
        for m in ["block-influence-sublayer", "angular", "taylor", "ablation"] { try check(m, limit: 1) }
    }

    /// rel-change and spectrum read no data: every rank computes them, rank 0 alone writes.
    func testDataFreeMethods() throws {
        for m in ["rel-change", "spectrum"] { try check(m) }
    }

    /// select-report runs every method through the same code: under two ranks its report (the
    /// held-out NLL of each selection, the selections, the tuned NLL) equals the single-process
    /// one, and rank 0 alone writes the report, the SVG and the saved rankings.
    func testSelectReport() throws {
        _ = try MPI.mpirun()
        let f = try fixture()
        let tmp = TempDir("ila-mpi-select")
        defer { tmp.remove() }
        func args(_ dir: String) -> [String] {
            ["select-report", "--base", f.base, "--deltas", f.deltas, "--data", f.train, "--eval", f.eval, "--limit", "5",
             "--eval-limit", "5", "--seq-len", "96", "--methods", "spectrum,block-influence,taylor,ablation", "--fractions", "0.3,0.5",
             "--random", "1", "--tune-steps", "2", "--tune-batch", "3", "--json",
             "-o", "\(dir)report.json", "--svg", "\(dir)nll.svg", "--save-rankings", "\(dir)rankings",
             // Last: Open MPI 4.1's mpirun may take `--tune` and the next argument, even past the
             // program, for its own --tune (an MCA parameter file) and warn on stderr.
             "--tune"]
        }
        let a = try CommandRunner.run("ila-mask", args(tmp.url.path + "/"))
        XCTAssertEqual(a.status, 0, a.stderr)
        let dirs = (tmp.sub("rank0"), tmp.sub("rank1"))
        let b = try runTwoRanks(args(""), dirPrefix: tmp.path("rank"))
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertEqual(b.stderr, "", "ranks printed to stderr")
        XCTAssertNil(b.stdout[1], "rank 1 printed: \(b.stdout[1] ?? "")")
        XCTAssertEqual(tmp.contents("rank0"), ["nll.svg", "rankings", "report.json"])
        XCTAssertEqual(tmp.contents("rank1"), [], "rank 1 wrote into its directory")

        func load(_ path: String) throws -> [String: Any] {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        }
        let one = try load(tmp.path("report.json")), two = try load(dirs.0.appendingPathComponent("report.json").path)
        XCTAssertNotNil(try? JSONSerialization.jsonObject(with: Data((b.stdout[0] ?? "").utf8)), "rank 0 prints the report")
        XCTAssertEqual(one["eval_tokens"] as? Int, two["eval_tokens"] as? Int)
        XCTAssertEqual(one["eval_rows"] as? Int, 5)
        XCTAssertEqual(two["eval_rows"] as? Int, 5)
        XCTAssertEqual(one["selections"] as? NSDictionary, two["selections"] as? NSDictionary, "selections differ")
        func close(_ x: Any?, _ y: Any?, _ what: String, rel: Double = 1e-6) {
            let p = (x as? [Double]) ?? (x as? Double).map { [$0] } ?? [], q = (y as? [Double]) ?? (y as? Double).map { [$0] } ?? []
            XCTAssertFalse(p.isEmpty, what)
            XCTAssertEqual(p.count, q.count, what)
            for (u, v) in zip(p, q) { XCTAssertEqual(u, v, accuracy: rel * abs(u), what) }
        }
        close(one["nll_base"], two["nll_base"], "nll_base")
        close(one["nll_all_deltas"], two["nll_all_deltas"], "nll_all_deltas")
        close(one["random"], two["random"], "random")
        // Held-out NLL of each selection: sums of the same per-row NLLs (1e-6, as eval's test); the
        // tuned NLL after 2 AdamW steps also carries the LoRA gradients' float32 summation order (1e-5).
        for (key, rel) in [("nll", 1e-6), ("tuned_nll", 1e-5)] {
            let p = try XCTUnwrap(one[key] as? [String: Any], key), q = try XCTUnwrap(two[key] as? [String: Any], key)
            XCTAssertEqual(Set(p.keys), Set(q.keys), key)
            for (m, v) in p { close(v, q[m], "\(key) \(m)", rel: rel) }
        }
        for m in ["spectrum", "block-influence", "taylor", "ablation"] {
            assertSameRanking(try Ranking.load(path: tmp.path("rankings/\(m).json")),
                              try Ranking.load(path: dirs.0.appendingPathComponent("rankings/\(m).json").path), "select-report \(m)")
        }
        print(String(format: "select-report --tune: two ranks %.2f s", b.seconds))
    }
}
