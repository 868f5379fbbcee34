import Foundation
import ILARanking
import ILATestSupport
import XCTest

/// A rank killed mid-run ends the whole job within seconds, exit 1, one line naming it, no ranking
/// written; the state saved every --save-every steps resumes with another number of ranks (here
/// 2 → 1) to the single-process result.
final class FaultTests: XCTestCase {
    func testKilledRankEndsJobAndResumeWithOtherRankCountFinishes() throws {
        try killAndResume(layout: [], victim: 1, resumeRanks: 1)
    }

    /// The same with a 2-stage pipeline, rank 0 (the first stage, which writes the state) killed,
    /// resumed by two data-parallel ranks.
    func testKilledPipelineStageEndsJobAndResumesDataParallel() throws {
        try killAndResume(layout: ["--pipeline", "2"], victim: 0, resumeRanks: 2)
    }

    /// Runs a 2-rank learn with `layout`, kills rank `victim`'s worker after the first saved state,
    /// checks the job's end, then resumes with `resumeRanks` ranks to the uninterrupted ranking.
    func killAndResume(layout: [String], victim rank: Int, resumeRanks: Int, line: UInt = #line) throws {
        let tmp = TempDir("ila-mpi-fault")
        defer { tmp.remove() }
        let f = try tinyDeltas(tmp)
        func args(_ out: String, resume: Bool = false) -> [String] {
            ["learn", "--base", f.base, "--deltas", f.deltas, "--data", f.train, "--steps", "400", "--batch", "2",
             "--seq-len", "48", "--save-every", "10", "-o", out] + (resume ? ["--resume"] : [])
        }
        let reference = tmp.path("reference.json")
        let ref = try CommandRunner.run("ila-mask", args(reference))
        XCTAssertEqual(ref.status, 0, ref.stderr, line: line)

        let out = tmp.path("ranking.json"), state = tmp.path("ranking.state.json")
        // -q: mpirun's own banners off, so that the rank's line is the job's only output.
        let job = try MPI.start(np: 2, "ila-mask", args(out) + layout, mpirunOptions: ["-q"])
        let mpirunPID = job.0.processIdentifier
        // Wait for the first saved state (step 10), then kill the rank.
        var waited = 0.0
        while !FileManager.default.fileExists(atPath: state) && job.0.isRunning && waited < 120 {
            usleep(20_000); waited += 0.02
        }
        // mpirun started the rank's supervisor; the process doing the work is its child (what the
        // OOM killer or a crash would end).
        let supervisor = try XCTUnwrap(MPI.rankPID(under: mpirunPID, rank: rank), "rank \(rank) not found under mpirun \(mpirunPID)",
                                       line: line)
        let victim = try XCTUnwrap(MPI.rankPID(under: supervisor, rank: rank), "rank \(rank)'s worker not found under \(supervisor)",
                                   line: line)
        let killedAt = Date()
        kill(victim, SIGKILL)
        let r = CommandRunner.finish(job)
        let elapsed = Date().timeIntervalSince(killedAt)
        XCTAssertLessThan(elapsed, 10, "the job took \(elapsed) s to end after rank \(rank) was killed", line: line)
        XCTAssertEqual(r.status, 1, "exit status after a rank was killed:\n\(r.stderr)", line: line)
        XCTAssertEqual(r.errorLines.count, 1, r.stderr, line: line)
        XCTAssertTrue(r.errorLines.first?.contains("rank \(rank)") ?? false, "the line does not name the dead rank:\n\(r.stderr)", line: line)
        XCTAssertEqual(r.stdout, "", line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "a ranking was written by a broken job", line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("ranking.h5")), "a trajectory was written by a broken job", line: line)
        XCTAssertEqual(tmp.contents().filter { $0.hasPrefix("ranking.json.") || $0.hasPrefix("ranking.h5.") }, [], "partial files remain",
                       line: line)
        XCTAssertTrue(FileManager.default.fileExists(atPath: state), "no state to resume from", line: line)

        // Resume with another layout: the same ranking as the uninterrupted run.
        let resumed = resumeRanks == 1 ? try CommandRunner.run("ila-mask", args(out, resume: true))
            : try MPI.run(np: resumeRanks, "ila-mask", args(out, resume: true))
        XCTAssertEqual(resumed.status, 0, resumed.stderr, line: line)
        try assertSameRanking(reference, out, steps: 400, "resumed", line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: state), "state left after a finished run", line: line)
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
