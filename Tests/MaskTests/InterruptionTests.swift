import Foundation
import ILADiff
import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking
import ILATestSupport
import XCTest

/// `ila-mask learn` killed at any moment (SIGKILL included) leaves ranking.json / ranking.h5 /
/// ranking.state.json either absent or complete (the previous file byte for byte, or a complete
/// new one), never partial; the next run removes the temporaries a SIGKILL left behind.
final class LearnInterruptionTests: XCTestCase {
    func testSIGKILLLeavesNothingPartial() throws {
        let tmp = TempDir("ila-learn-interrupt")
        defer { tmp.remove() }
        let tiny = RepoPaths.fixtures.appendingPathComponent("tiny").path
        let data = RepoPaths.fixtures.appendingPathComponent("data").path
        let deltas = tmp.path("deltas.h5")
        let d = try CommandRunner.run("ila-diff", ["\(tiny)/base-A", "\(tiny)/lora-pyapi", "-o", deltas])
        XCTAssertEqual(d.status, 0, d.stderr)
        let out = tmp.path("ranking.json"), trajectory = tmp.path("ranking.h5"), state = tmp.path("ranking.state.json")
        func args(steps: Int) -> [String] {
            ["learn", "--base", "\(tiny)/base-A", "--deltas", deltas, "--data", "\(data)/pyapi.train.jsonl",
             "--steps", "\(steps)", "--batch", "2", "--seq-len", "48", "--save-every", "2", "-o", out]
        }
        let first = try CommandRunner.run("ila-mask", args(steps: 6))
        XCTAssertEqual(first.status, 0, first.stderr)
        let previous = try Data(contentsOf: URL(fileURLWithPath: out))
        let previousTrajectory = try Data(contentsOf: URL(fileURLWithPath: trajectory))

        var killedMidRun = 0
        for delay in [50_000, 300_000, 700_000, 1_200_000] as [useconds_t] {
            let p = try CommandRunner.start("ila-mask", args(steps: 4000))
            usleep(delay)
            kill(p.0.processIdentifier, SIGKILL)
            let r = CommandRunner.finish(p)
            if r.status != 0 { killedMidRun += 1 }
            let now = try Data(contentsOf: URL(fileURLWithPath: out))
            XCTAssertTrue(now == previous || (try? Ranking.load(path: out)) != nil, "partial ranking.json after \(delay) µs")
            let nowTrajectory = try Data(contentsOf: URL(fileURLWithPath: trajectory))
            XCTAssertTrue(nowTrajectory == previousTrajectory || r.status == 0, "ranking.h5 changed by a killed run")
            if FileManager.default.fileExists(atPath: state) {
                // The resumable state is always a complete JSON document.
                let json = try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: state)))
                XCTAssertNotNil(json as? [String: Any], "partial state after \(delay) µs")
            }
        }
        XCTAssertGreaterThan(killedMidRun, 0, "no run was killed before finishing")
        let again = try CommandRunner.run("ila-mask", args(steps: 4))
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertNotNil(try? Ranking.load(path: out))
        XCTAssertEqual(tmp.contents().filter { $0.contains(".tmp-") }, [], "stale temporaries remain")
    }
}
