import Foundation
import ILADiff
import ILARanking
import ILATestSupport
import XCTest

/// `ila-transfer -o` killed at any moment (SIGKILL included) leaves the previous complete output
/// or nothing, and the next run removes what a SIGKILL left behind.
final class TransferInterruptionTests: XCTestCase {
    func testSIGKILLLeavesNothingOrThePreviousFile() throws {
        let tmp = TempDir("ila-transfer-interrupt")
        defer { tmp.remove() }
        // A deep target (many header entries) makes a run last long enough to be cut.
        try writeTinyCheckpoint(blocks: 400, to: tmp.path("target.safetensors"))
        try makeRanking(blocks: 8) { b, k in Double(b * 7 + k.count) / 10 }.write(path: tmp.path("ranking.json"))
        let out = tmp.path("selection.svg")
        let args = [tmp.path("ranking.json"), tmp.path("target.safetensors"), "--top", "0.5", "--format", "svg", "-o", out]

        for delay in [5_000, 40_000] as [useconds_t] {  // no previous output
            let p = try CommandRunner.start("ila-transfer", args)
            usleep(delay)
            kill(p.0.processIdentifier, SIGKILL)
            if CommandRunner.finish(p).status == 0 { continue }
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "output after SIGKILL at \(delay) µs")
        }
        let first = try CommandRunner.run("ila-transfer", args)
        XCTAssertEqual(first.status, 0, first.stderr)
        let previous = try Data(contentsOf: URL(fileURLWithPath: out))
        for delay in [1_000, 10_000, 30_000, 60_000, 120_000] as [useconds_t] {
            let p = try CommandRunner.start("ila-transfer", args)
            usleep(delay)
            kill(p.0.processIdentifier, SIGKILL)
            _ = CommandRunner.finish(p)
            // The output is deterministic, so the previous and a newly completed file are identical.
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), previous, "after SIGKILL at \(delay) µs")
        }
        let again = try CommandRunner.run("ila-transfer", args)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(tmp.contents().filter { $0.contains(".tmp-") }, [], "stale temporaries remain")
    }
}
