import Foundation
import ILADiff
import ILATestSupport
import XCTest

/// `ila-diff` killed at any moment (SIGKILL included) leaves at the output path either nothing or
/// the previous complete file, never a partial one; the next run removes the temporary a
/// SIGKILL left behind; SIGTERM/SIGINT remove it at once and exit 1 with one error line.
final class InterruptionTests: XCTestCase {
    var tmp: TempDir!

    override func setUpWithError() throws {
        tmp = TempDir("ila-diff-interrupt")
        // 4 blocks × 7 linear layers, 2.6 M weights per model: long enough (~0.5 s) to kill mid-run.
        try Self.writeModel(tmp.path("base.safetensors"), seed: 1)
        try Self.writeModel(tmp.path("aligned.safetensors"), seed: 2)
    }

    override func tearDown() { tmp.remove() }

    static func writeModel(_ path: String, seed: UInt64) throws {
        let shapes = [("self_attn.q_proj", 256, 256), ("self_attn.k_proj", 256, 256), ("self_attn.v_proj", 256, 256),
                      ("self_attn.o_proj", 256, 256), ("mlp.gate_proj", 512, 256), ("mlp.up_proj", 512, 256),
                      ("mlp.down_proj", 256, 512)]
        var header: [String: Any] = [:]
        var blob = Data()
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for block in 0..<4 {
            for (kind, rows, cols) in shapes {
                var values = [Float](repeating: 0, count: rows * cols)
                for i in values.indices {
                    state ^= state << 13; state ^= state >> 7; state ^= state << 17
                    values[i] = Float(Int64(state % 2001) - 1000) / 1000
                }
                let begin = blob.count
                values.withUnsafeBytes { blob.append(contentsOf: $0) }
                header["model.layers.\(block).\(kind).weight"] = ["dtype": "F32", "shape": [rows, cols],
                                                                  "data_offsets": [begin, blob.count]]
            }
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        json.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8))
        var file = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(json)
        file.append(blob)
        try file.write(to: URL(fileURLWithPath: path))
    }

    var args: [String] { [tmp.path("base.safetensors"), tmp.path("aligned.safetensors"), "-o", tmp.path("deltas.h5")] }

    /// True when `path` is a complete deltas file: it opens and every layer loads.
    func isComplete(_ path: String) -> Bool {
        guard let store = try? DeltaStore(path: path), store.layers.count == 28 else { return false }
        return store.layers.allSatisfy { (try? store.delta($0)) != nil }
    }

    func temporaries() -> [String] { tmp.contents().filter { $0.contains(".tmp-") } }

    func testSIGKILLLeavesNothingOrThePreviousFile() throws {
        let out = tmp.path("deltas.h5")
        // No previous output: a kill at any moment leaves nothing or a complete file.
        for delay in [20_000, 150_000, 300_000] as [useconds_t] {
            try? FileManager.default.removeItem(atPath: out)
            let p = try CommandRunner.start("ila-diff", args)
            usleep(delay)
            kill(p.0.processIdentifier, SIGKILL)
            _ = CommandRunner.finish(p)
            if FileManager.default.fileExists(atPath: out) {
                XCTAssertTrue(isComplete(out), "partial output after SIGKILL at \(delay) µs")
            }
        }
        // A complete previous output: after a kill it is still there, byte for byte, or replaced
        // by a complete new one.
        let first = try CommandRunner.run("ila-diff", args)
        XCTAssertEqual(first.status, 0, first.stderr)
        let previous = try Data(contentsOf: URL(fileURLWithPath: out))
        var sawKilledMidRun = false
        for delay in [30_000, 120_000, 250_000, 400_000] as [useconds_t] {
            let p = try CommandRunner.start("ila-diff", args)
            usleep(delay)
            kill(p.0.processIdentifier, SIGKILL)
            let r = CommandRunner.finish(p)
            if r.status != 0 { sawKilledMidRun = true }
            let now = try Data(contentsOf: URL(fileURLWithPath: out))
            XCTAssertTrue(now == previous || isComplete(out), "partial output after SIGKILL at \(delay) µs")
        }
        XCTAssertTrue(sawKilledMidRun, "no run was killed before finishing")
        // The next run clears the temporaries the killed runs left.
        let again = try CommandRunner.run("ila-diff", args)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(isComplete(out))
        XCTAssertEqual(temporaries(), [], "stale temporaries remain")
    }

    func testSIGTERMAndSIGINTRemoveTheTemporaryAndExit1() throws {
        let out = tmp.path("deltas.h5")
        for sig in [SIGTERM, SIGINT] {
            let p = try CommandRunner.start("ila-diff", args)
            // Wait until the temporary exists (the run is writing), then interrupt.
            let deadline = Date().addingTimeInterval(5)
            while temporaries().isEmpty && p.0.isRunning && Date() < deadline { usleep(2_000) }
            kill(p.0.processIdentifier, sig)
            let r = CommandRunner.finish(p)
            if r.status == 0 { continue }  // finished first: nothing to check
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertEqual(r.errorLines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("no output written"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
            XCTAssertEqual(temporaries(), [])
        }
    }

    /// A temporary of a live process (another run writing the same file) is left alone.
    func testLiveTemporaryIsKept() throws {
        let live = tmp.path(".deltas.h5.tmp-\(getppid())")
        let dead = tmp.path(".deltas.h5.tmp-\(Int32.max - 7)")
        FileManager.default.createFile(atPath: live, contents: Data("x".utf8))
        FileManager.default.createFile(atPath: dead, contents: Data("x".utf8))
        _ = try AtomicOutput(path: tmp.path("deltas.h5"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: live))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dead))
    }
}
