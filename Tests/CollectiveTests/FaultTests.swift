import Foundation
import ILARanking
import ILATestSupport
import XCTest

/// A rank killed mid-run ends the whole job within seconds, exit 1, one line naming it, no ranking
/// written; the state saved every --save-every steps resumes with another number of ranks (here
/// 2 → 1) to the single-process result.
final class FaultTests: XCTestCase {
    func testKilledRankEndsJobAndResumeWithOtherRankCountFinishes() throws {
        let tmp = TempDir("ila-mpi-fault")
        let f = try tinyDeltas(tmp)
        func args(_ out: String, resume: Bool = false) -> [String] {
            ["learn", "--base", f.base, "--deltas", f.deltas, "--data", f.train, "--steps", "400", "--batch", "2",
             "--seq-len", "48", "--save-every", "10", "-o", out] + (resume ? ["--resume"] : [])
        }
        let reference = tmp.path("reference.json")
        let ref = try CommandRunner.run("ila-mask", args(reference))
        XCTAssertEqual(ref.status, 0, ref.stderr)

        let out = tmp.path("ranking.json"), state = tmp.path("ranking.state.json")
        // -q: mpirun's own banners off, so that the rank's line is the job's only output.
        let job = try MPI.start(np: 2, "ila-mask", args(out), mpirunOptions: ["-q"])
        let mpirunPID = job.0.processIdentifier
        // Wait for the first saved state (step 10), then kill rank 1.
        var waited = 0.0
        while !FileManager.default.fileExists(atPath: state) && job.0.isRunning && waited < 120 {
            usleep(20_000); waited += 0.02
        }
        // mpirun started rank 1's supervisor; the process doing the work is its child (what the
        // OOM killer or a crash would end).
        let supervisor = try XCTUnwrap(MPI.rankPID(under: mpirunPID, rank: 1), "rank 1 not found under mpirun \(mpirunPID)")
        let victim = try XCTUnwrap(MPI.rankPID(under: supervisor, rank: 1), "rank 1's worker not found under \(supervisor)")
        let killedAt = Date()
        kill(victim, SIGKILL)
        let r = CommandRunner.finish(job)
        let elapsed = Date().timeIntervalSince(killedAt)
        XCTAssertLessThan(elapsed, 10, "the job took \(elapsed) s to end after rank 1 was killed")
        XCTAssertEqual(r.status, 1, "exit status after a rank was killed:\n\(r.stderr)")
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        XCTAssertTrue(r.errorLines.first?.contains("rank 1") ?? false, "the line does not name the dead rank:\n\(r.stderr)")
        XCTAssertEqual(r.stdout, "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "a ranking was written by a broken job")
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("ranking.h5")), "a trajectory was written by a broken job")
        XCTAssertEqual(tmp.contents().filter { $0.hasPrefix("ranking.json.") || $0.hasPrefix("ranking.h5.") }, [], "partial files remain")
        XCTAssertTrue(FileManager.default.fileExists(atPath: state), "no state to resume from")

        // Resume in a single process: the same ranking as the uninterrupted run.
        let resumed = try CommandRunner.run("ila-mask", args(out, resume: true))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let a = try Ranking.load(path: reference), b = try Ranking.load(path: out)
        XCTAssertEqual(a.layers.map(\.rank), b.layers.map(\.rank), "resumed ranking differs")
        for (x, y) in zip(a.layers, b.layers) { XCTAssertEqual(x.score, y.score, accuracy: 1e-5, x.name) }
        XCTAssertEqual(b.history?.count, 400)
        XCTAssertFalse(FileManager.default.fileExists(atPath: state), "state left after a finished run")
    }

    /// A state saved by one process resumes under two ranks to the same result.
    func testSingleProcessStateResumesUnderTwoRanks() throws {
        let tmp = TempDir("ila-mpi-resume")
        let f = try tinyDeltas(tmp)
        func args(_ out: String, steps: Int, resume: Bool = false) -> [String] {
            ["learn", "--base", f.base, "--deltas", f.deltas, "--data", f.train, "--steps", "\(steps)", "--batch", "3",
             "--seq-len", "48", "--save-every", "4", "-o", out] + (resume ? ["--resume"] : [])
        }
        let reference = tmp.path("reference.json")
        XCTAssertEqual(try CommandRunner.run("ila-mask", args(reference, steps: 12)).status, 0)
        // Interrupt a single-process run with SIGTERM (saves its state), then resume with 2 ranks.
        let out = tmp.path("ranking.json"), state = tmp.path("ranking.state.json")
        let p = try CommandRunner.start("ila-mask", args(out, steps: 12))
        var waited = 0.0
        while !FileManager.default.fileExists(atPath: state) && p.0.isRunning && waited < 60 { usleep(5_000); waited += 0.005 }
        kill(p.0.processIdentifier, SIGTERM)
        let first = CommandRunner.finish(p)
        guard first.status != 0 else { throw XCTSkip("the run finished before it could be interrupted") }
        XCTAssertTrue(FileManager.default.fileExists(atPath: state))
        let resumed = try MPI.run(np: 2, "ila-mask", args(out, steps: 12, resume: true))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let a = try Ranking.load(path: reference), b = try Ranking.load(path: out)
        XCTAssertEqual(a.layers.map(\.rank), b.layers.map(\.rank))
        for (x, y) in zip(a.layers, b.layers) { XCTAssertEqual(x.score, y.score, accuracy: 1e-5, x.name) }
    }
}
