import Foundation
import ILADiff
import ILATestSupport
import XCTest

/// `ila-tune --order file --init ADAPTER` against PEFT + torch.optim.AdamW + transformers'
/// cosine schedule (fixtures/tune, written by bench/tune_reference.py): per-step loss and
/// learning rate, and the final A and B of every layer.
final class TuneReferenceTests: XCTestCase {
    func testTwentyStepsMatchPyTorch() throws {
        let dir = RepoPaths.fixtures.appendingPathComponent("tune")
        let ref = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("reference.json"))) as? [String: Any])
        let cfg = try XCTUnwrap(ref["config"] as? [String: Any])
        let root = RepoPaths.root.path
        let tmp = TempDir("ila-tune-ref")
        defer { tmp.remove() }
        let out = tmp.path("adapter")
        let r = try CommandRunner.run("ila-tune", [
            "--base", "\(root)/\(cfg["base"] as! String)", "--data", "\(root)/\(cfg["data"] as! String)",
            "--init", "\(root)/\(cfg["init"] as! String)", "-o", out, "--order", "file",
            "--steps", "\(cfg["steps"] as! Int)", "--batch", "\(cfg["batch"] as! Int)", "--grad-accum", "\(cfg["grad_accum"] as! Int)",
            "--lr", "\(cfg["lr"] as! Double)", "--schedule", cfg["schedule"] as! String, "--warmup", "\(cfg["warmup"] as! Double)",
            "--weight-decay", "\(cfg["weight_decay"] as! Double)", "--seq-len", "\(cfg["seq_len"] as! Int)", "--save-every", "0"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let log = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/train_log.json"))) as? [String: Any])
        let steps = try XCTUnwrap(log["steps"] as? [[String: Any]])
        let losses = try XCTUnwrap(ref["losses"] as? [Double]), lrs = try XCTUnwrap(ref["lrs"] as? [Double])
        XCTAssertEqual(steps.count, losses.count)
        for (k, s) in steps.enumerated() where k < losses.count {
            let loss = try XCTUnwrap(s["loss"] as? Double), lr = try XCTUnwrap(s["lr"] as? Double)
            XCTAssertEqual(loss, losses[k], accuracy: 1e-4 * abs(losses[k]), "loss at step \(k + 1)")
            XCTAssertEqual(lr, lrs[k], accuracy: 1e-12 + 1e-9 * lrs[k], "lr at step \(k + 1)")
        }
        let want = try SafetensorsFile(path: dir.appendingPathComponent("reference_final.safetensors").path)
        let got = try SafetensorsFile(path: out + "/adapter_model.safetensors")
        XCTAssertEqual(Set(got.names), Set(want.names))
        XCTAssertEqual(want.names.count, 28)
        for name in want.names {
            let a = try got.floats(name), b = try want.floats(name)
            XCTAssertEqual(got.info(name)?.shape, want.info(name)?.shape, name)
            guard a.count == b.count else { continue }
            let scale = b.map { abs($0) }.max() ?? 1
            let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(name): max |Δ| \(worst) of max |w| \(scale)")
        }
    }
}
