import Foundation
import ILADiff
import ILARanking
import ILATestSupport
import XCTest

/// `mpirun -np 2 ila-mask learn | eval` equals the single-process run (DESIGN.md section 12):
/// the same rows, split across the ranks, summed with MPI_Allreduce.
final class DataParallelTests: XCTestCase {
    /// Without a launcher nothing of MPI is loaded: the binary does not even link libmpi.
    func testToolsDoNotLinkMPI() throws {
        let ldd = Process()
        ldd.executableURL = URL(fileURLWithPath: "/usr/bin/ldd")
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/ldd") else { throw XCTSkip("no ldd") }
        ldd.arguments = [try CommandRunner.binary("ila-mask")]
        let pipe = Pipe()
        ldd.standardOutput = pipe
        try ldd.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        ldd.waitUntilExit()
        XCTAssertTrue(text.contains("libc.so"), text)
        XCTAssertFalse(text.contains("libmpi"), "ila-mask links libmpi:\n\(text)")
    }

    func learnArgs(_ f: (base: String, deltas: String, train: String, eval: String), out: String, steps: Int, batch: Int) -> [String] {
        ["learn", "--base", f.base, "--deltas", f.deltas, "--data", f.train, "--steps", "\(steps)", "--batch", "\(batch)",
         "--seq-len", "48", "--save-every", "0", "--json", "-o", out]
    }

    /// Scores within 1e-5, the same ranking, the same per-step batch NLL, and the trajectory of s
    /// (ranking.h5) within 1e-5 at every step. Batch 5 over 2 ranks splits 2 + 3; batch 1 leaves
    /// rank 0 without rows (its share is empty and adds zeros).
    func testTwoRankLearnEqualsSingleProcess() throws {
        let tmp = TempDir("ila-mpi-learn")
        let f = try tinyDeltas(tmp)
        for (steps, batch) in [(6, 5), (3, 1)] {
            let one = tmp.path("one-\(batch).json"), two = tmp.path("two-\(batch).json")
            let a = try CommandRunner.run("ila-mask", learnArgs(f, out: one, steps: steps, batch: batch))
            XCTAssertEqual(a.status, 0, a.stderr)
            let b = try MPI.run(np: 2, "ila-mask", learnArgs(f, out: two, steps: steps, batch: batch))
            XCTAssertEqual(b.status, 0, b.stderr)
            // Rank 0 alone prints: stdout is one JSON document.
            XCTAssertNotNil(try? JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as? [String: Any], b.stdout)
            XCTAssertEqual(b.stderr, "", "ranks printed to stderr")
            try assertSameRanking(one, two, steps: steps, "batch \(batch)")
            let s1 = try HDF5File.openReadOnly(path: String(one.dropLast(5)) + ".h5").root().openDataset("scores").readFloats()
            let s2 = try HDF5File.openReadOnly(path: String(two.dropLast(5)) + ".h5").root().openDataset("scores").readFloats()
            XCTAssertEqual(s1.count, s2.count)
            XCTAssertLessThanOrEqual(zip(s1, s2).map { abs($0 - $1) }.max() ?? 1, 1e-5, "trajectories differ")
        }
    }

    /// eval: the same mean NLL, tokens and rows; 9 rows split 4 + 5; with --ranking/--top too.
    func testTwoRankEvalEqualsSingleProcess() throws {
        let tmp = TempDir("ila-mpi-eval")
        let f = try tinyDeltas(tmp)
        let args = ["eval", "--base", f.base, "--deltas", f.deltas, "--gamma", "0.5", "--data", f.eval, "--limit", "9",
                    "--seq-len", "48", "--json"]
        let a = try CommandRunner.run("ila-mask", args)
        XCTAssertEqual(a.status, 0, a.stderr)
        let b = try MPI.run(np: 2, "ila-mask", args)
        XCTAssertEqual(b.status, 0, b.stderr)
        let ja = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(a.stdout.utf8)) as? [String: Any])
        let jb = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as? [String: Any], b.stdout)
        XCTAssertEqual(ja["tokens"] as? Int, jb["tokens"] as? Int)
        XCTAssertEqual(ja["rows"] as? Int, 9)
        XCTAssertEqual(jb["rows"] as? Int, 9)
        let na = try XCTUnwrap(ja["mean_nll"] as? Double), nb = try XCTUnwrap(jb["mean_nll"] as? Double)
        XCTAssertEqual(na, nb, accuracy: 1e-6 * na)
        // A bad input under mpirun: exit 1, one error line (rank 0's), nothing on stdout.
        let bad = try MPI.run(np: 2, "ila-mask", ["eval", "--base", f.base, "--data", tmp.path("missing.jsonl")])
        XCTAssertEqual(bad.status, 1, bad.stderr)
        XCTAssertEqual(bad.stdout, "")
        XCTAssertEqual(bad.errorLines.count, 1, bad.stderr)
        XCTAssertTrue(bad.errorLines.first?.contains("missing.jsonl") ?? false, bad.stderr)
    }
}
