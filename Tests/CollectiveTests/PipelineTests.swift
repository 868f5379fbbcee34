import Foundation
import ILADiff
import ILARanking
import ILATestSupport
import XCTest

/// `mpirun -np P×D … --pipeline P` (DESIGN.md section 12): the blocks split over P consecutive
/// ranks, micro-batches streamed between them, equal to the single-process run; each stage holds
/// only its own weights.
final class PipelineTests: XCTestCase {
    let arch = RepoPaths.fixtures.appendingPathComponent("arch").path

    func json(_ r: CommandResult, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        try XCTUnwrap(try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
                      "stdout is not one JSON document: \(r.stdout)\n\(r.stderr)", file: file, line: line)
    }

    /// Gemma 3's fixture (3 blocks: sliding-window and global attention, sandwich and q/k norms,
    /// tied lm_head) over P = 2 and P = 3, with a token budget that cuts each step into one-row
    /// micro-batches over several rounds, with and without --recompute; the tiny test bed over
    /// P = 2 × D = 2. Rankings identical, scores within 1e-5, every step's NLL within 1e-6.
    func testPipelinedLearnEqualsSingleProcess() throws {
        _ = try MPI.mpirun()
        let tmp = TempDir("ila-pipe-learn")
        defer { tmp.remove() }
        let g = "\(arch)/gemma3", deltas = tmp.path("g3.h5")
        let d = try CommandRunner.run("ila-diff", ["\(g)/base", "\(g)/lora", "-o", deltas])
        XCTAssertEqual(d.status, 0, d.stderr)
        func args(_ out: String) -> [String] {
            ["learn", "--base", "\(g)/base", "--deltas", deltas, "--data", "\(g)/rows.jsonl", "--steps", "4", "--batch", "7",
             "--save-every", "0", "--json", "-o", out]
        }
        let one = tmp.path("one.json")
        let a = try CommandRunner.run("ila-mask", args(one))
        XCTAssertEqual(a.status, 0, a.stderr)
        for (np, extra) in [(2, ["--token-budget", "120"]), (3, ["--token-budget", "120"]), (2, ["--token-budget", "160", "--recompute"]),
                            (3, [])] {
            let out = tmp.path("p\(np)-\(extra.count).json")
            let b = try MPI.run(np: np, "ila-mask", args(out) + ["--pipeline", "\(np)"] + extra)
            XCTAssertEqual(b.status, 0, b.stderr)
            XCTAssertEqual(b.stderr, "", "ranks printed to stderr")
            let memory = try XCTUnwrap(try json(b)["memory"] as? [String: Any])
            XCTAssertEqual((memory["weights_bytes_per_rank"] as? [Int])?.count, np, "\(memory)")
            try assertSameRanking(one, out, "P = \(np) \(extra)")
        }

        let f = try tinyDeltas(tmp)
        let tinyArgs = { (out: String) in
            ["learn", "--base", f.base, "--deltas", f.deltas, "--data", f.train, "--steps", "5", "--batch", "5", "--seq-len", "64",
             "--save-every", "0", "--json", "-o", out, "--eval", f.eval, "--eval-limit", "5"]
        }
        let t1 = tmp.path("tiny-one.json"), t4 = tmp.path("tiny-2x2.json")
        XCTAssertEqual(try CommandRunner.run("ila-mask", tinyArgs(t1)).status, 0)
        let b = try MPI.run(np: 4, "ila-mask", tinyArgs(t4) + ["--pipeline", "2", "--token-budget", "100"])
        XCTAssertEqual(b.status, 0, b.stderr)
        try assertSameRanking(t1, t4, "P = 2 × D = 2")
        let e1 = try XCTUnwrap(try Ranking.load(path: t1).eval), e4 = try XCTUnwrap(try Ranking.load(path: t4).eval)
        for k in ["nll_mask", "nll_all_deltas", "nll_base"] {
            XCTAssertEqual(e1[k] ?? .nan, e4[k] ?? .nan, accuracy: 1e-6 * (e1[k] ?? 1), k)
        }
    }

    /// eval: P = 3 on Gemma 3 (odd row count, several micro-batches) and P = 2 × D = 2 on Qwen3.
    func testPipelinedEvalEqualsSingleProcess() throws {
        _ = try MPI.mpirun()
        let tmp = TempDir("ila-pipe-eval")
        defer { tmp.remove() }
        for (name, np, pipeline) in [("gemma3", 3, 3), ("qwen3", 4, 2)] {
            let g = "\(arch)/\(name)", deltas = tmp.path("\(name).h5")
            XCTAssertEqual(try CommandRunner.run("ila-diff", ["\(g)/base", "\(g)/lora", "-o", deltas]).status, 0)
            let args = ["eval", "--base", "\(g)/base", "--deltas", deltas, "--gamma", "0.7", "--data", "\(g)/rows.jsonl",
                        "--limit", "7", "--json"]
            let a = try json(try CommandRunner.run("ila-mask", args))
            let r = try MPI.run(np: np, "ila-mask", args + ["--pipeline", "\(pipeline)", "--token-budget", "150"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let b = try json(r)
            XCTAssertEqual(a["tokens"] as? Int, b["tokens"] as? Int, name)
            XCTAssertEqual(b["rows"] as? Int, 7, name)
            let na = try XCTUnwrap(a["mean_nll"] as? Double), nb = try XCTUnwrap(b["mean_nll"] as? Double)
            XCTAssertEqual(na, nb, accuracy: 1e-6 * na, name)
        }
    }

    /// ila-tune: the LoRA gradients of each stage's layers come from its own backward; the adapter
    /// equals the single-process one within 1e-5 relative, ‖Δ‖/‖A‖ per tensor (P = 2 on Gemma 3
    /// with small micro-batches; P = 2 × D = 2 on the tiny test bed). Not max-abs: AdamW's first
    /// steps move every entry by about lr whatever its gradient's size, so an entry whose gradient is
    /// float noise differs by noise × lr / |g| between any two summation orders (the single process
    /// with another --token-budget differs from itself by as much, 5e-5 of the largest entry).
    func testPipelinedTuneEqualsSingleProcess() throws {
        _ = try MPI.mpirun()
        let tmp = TempDir("ila-pipe-tune")
        defer { tmp.remove() }
        let tiny = RepoPaths.fixtures.appendingPathComponent("tiny").path
        let data = RepoPaths.fixtures.appendingPathComponent("data").path
        let g = "\(arch)/gemma3"
        let cases: [(String, [String], Int, [String])] = [
            ("gemma3", ["--base", "\(g)/base", "--data", "\(g)/rows.jsonl", "--batch", "4", "--grad-accum", "2"], 2,
             ["--pipeline", "2", "--token-budget", "130"]),
            ("tiny", ["--base", "\(tiny)/base-A", "--data", "\(data)/pyapi.train.jsonl", "--batch", "3", "--grad-accum", "2",
                      "--seq-len", "64"], 4, ["--pipeline", "2"]),
        ]
        for (name, model, np, pipeline) in cases {
            let common = model + ["--steps", "5", "--lr", "5e-3", "--weight-decay", "0.01", "--save-every", "0", "--json"]
            let one = tmp.path("\(name)-one"), pipe = tmp.path("\(name)-pipe")
            let a = try CommandRunner.run("ila-tune", common + ["-o", one])
            XCTAssertEqual(a.status, 0, a.stderr)
            let b = try MPI.run(np: np, "ila-tune", common + ["-o", pipe] + pipeline)
            XCTAssertEqual(b.status, 0, b.stderr)
            let ja = try json(a), jb = try json(b)
            XCTAssertEqual(ja["tokens"] as? Int, jb["tokens"] as? Int, "\(name): tokens counted once per row")
            let la = try XCTUnwrap(ja["final_loss"] as? Double), lb = try XCTUnwrap(jb["final_loss"] as? Double)
            XCTAssertEqual(la, lb, accuracy: 1e-6 * la, name)
            let fa = try SafetensorsFile(path: one + "/adapter_model.safetensors")
            let fb = try SafetensorsFile(path: pipe + "/adapter_model.safetensors")
            XCTAssertEqual(Set(fa.names), Set(fb.names), name)
            for t in fa.names {
                let x = try fa.floats(t), y = try fb.floats(t)
                let norm = x.map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
                let diff = zip(x, y).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
                XCTAssertLessThanOrEqual(diff, 1e-5 * norm, "\(name): \(t)")
            }
        }
    }

    /// A 24-block bf16 model (about 340 MB) over two stages: each rank holds half of the block
    /// weights, and its peak resident memory is about half of the single process's (plus what every
    /// process has: the runtime, the GEMM library).
    func testEachStageHoldsHalfTheModel() throws {
        _ = try MPI.mpirun()
        let tmp = TempDir("ila-pipe-memory")
        defer { tmp.remove() }
        let model = tmp.path("model")
        try SyntheticModel(blocks: 24, hidden: 768, intermediate: 2048).write(to: model)
        let rows = tmp.path("rows.jsonl")
        try SyntheticModel.writeRows(to: rows, count: 4, length: 24)
        let args = ["eval", "--base", model, "--data", rows, "--json"]
        let one = try json(try CommandRunner.run("ila-mask", args))
        let r = try MPI.run(np: 2, "ila-mask", args + ["--pipeline", "2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let two = try json(r)
        XCTAssertEqual(one["mean_nll"] as? Double ?? 0, two["mean_nll"] as? Double ?? 1, accuracy: 1e-6)
        let m1 = try XCTUnwrap(one["memory"] as? [String: Any]), m2 = try XCTUnwrap(two["memory"] as? [String: Any])
        let weights = try XCTUnwrap(m1["weights_bytes"] as? Int), single = try XCTUnwrap(m1["peak_rss_bytes"] as? Int)
        let stageWeights = try XCTUnwrap(m2["weights_bytes_per_rank"] as? [Int])
        let stageRSS = try XCTUnwrap(m2["peak_rss_bytes_per_rank"] as? [Int])
        XCTAssertEqual(stageWeights.count, 2)
        XCTAssertEqual(stageRSS.count, 2)
        for (w, rss) in zip(stageWeights, stageRSS) {
            XCTAssertEqual(Double(w), 0.5 * Double(weights), accuracy: 0.02 * Double(weights), "weights per stage \(stageWeights) of \(weights)")
            XCTAssertLessThan(Double(rss), 0.5 * Double(single) + 60e6, "peak RSS per stage \(stageRSS), single process \(single)")
            XCTAssertLessThan(Double(rss), 0.7 * Double(single), "peak RSS per stage \(stageRSS), single process \(single)")
        }
        XCTAssertGreaterThan(single, weights, "the single process holds the whole model")

        // A per-process budget the whole model does not fit, but each stage does.
        let budget = ["--max-memory", "300M"]
        let refused = try CommandRunner.run("ila-mask", args + budget)
        XCTAssertEqual(refused.status, 1, refused.stderr)
        XCTAssertEqual(refused.errorLines.count, 1, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("needs") && refused.stderr.contains("available (--max-memory)"), refused.stderr)
        let fits = try MPI.run(np: 2, "ila-mask", args + budget + ["--pipeline", "2"])
        XCTAssertEqual(fits.status, 0, fits.stderr)
        XCTAssertEqual(try json(fits)["mean_nll"] as? Double ?? 0, one["mean_nll"] as? Double ?? 1, accuracy: 1e-6)
    }

    /// What a pipeline refuses, in one line each, exit 1, nothing written.
    func testPipelineRefusals() throws {
        _ = try MPI.mpirun()
        let tmp = TempDir("ila-pipe-refuse")
        defer { tmp.remove() }
        let f = try tinyDeltas(tmp)
        let eval = ["eval", "--base", f.base, "--data", f.eval, "--limit", "3"]
        // Without mpirun there is one process.
        let alone = try CommandRunner.run("ila-mask", eval + ["--pipeline", "2"])
        XCTAssertEqual(alone.status, 1, alone.stderr)
        XCTAssertEqual(alone.errorLines.count, 1, alone.stderr)
        XCTAssertTrue(alone.stderr.contains("--pipeline 2"), alone.stderr)
        // 3 ranks are not P × D for P = 2.
        let odd = try MPI.run(np: 3, "ila-mask", eval + ["--pipeline", "2"])
        XCTAssertEqual(odd.status, 1, odd.stderr)
        XCTAssertEqual(odd.errorLines.count, 1, odd.stderr)
        XCTAssertTrue(odd.stderr.contains("does not divide"), odd.stderr)
        // More stages than blocks (the tiny model has 2).
        let deep = try MPI.run(np: 3, "ila-mask", eval + ["--pipeline", "3"])
        XCTAssertEqual(deep.status, 1, deep.stderr)
        XCTAssertEqual(deep.errorLines.count, 1, deep.stderr)
        XCTAssertTrue(deep.stderr.contains("fewer than the 3 pipeline stages"), deep.stderr)
    }

    /// A tensor only the second stage reads holds NaN: that rank alone sees it, yet the job ends
    /// at once with exit 1, one line naming the rank, the file and the tensor, and no output.
    func testStageLocalBadTensorEndsTheJob() throws {
        _ = try MPI.mpirun()
        let tmp = TempDir("ila-pipe-bad")
        defer { tmp.remove() }
        let model = tmp.path("model")
        try SyntheticModel(blocks: 4, hidden: 64, intermediate: 128, poison: "model.layers.3.mlp.up_proj.weight").write(to: model)
        let rows = tmp.path("rows.jsonl")
        try SyntheticModel.writeRows(to: rows, count: 3, length: 16)
        // The first stage (blocks 0–1) alone loads fine.
        let out = tmp.path("ranking.json")
        let r = try MPI.run(np: 2, "ila-mask", ["eval", "--base", model, "--data", rows, "--pipeline", "2"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(r.stdout, "")
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        let line = r.errorLines.first ?? ""
        XCTAssertTrue(line.contains("rank 1") && line.contains("model.layers.3.mlp.up_proj.weight") && line.contains("NaN"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}

/// A Llama-shaped checkpoint of any size, written by the test (bf16 weights from a repeating
/// pseudo-random pattern; tied embeddings; vocab 512 with the tiny test bed's tokenizer).
struct SyntheticModel {
    var blocks: Int
    var hidden: Int
    var intermediate: Int
    var heads = 4
    var kvHeads = 2
    var vocab = 512
    /// A tensor whose first value is NaN.
    var poison: String?

    func write(to dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tiny = RepoPaths.fixtures.appendingPathComponent("tiny/base-A").path
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(atPath: "\(tiny)/\(f)", toPath: "\(dir)/\(f)")
        }
        let config: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_attention_heads": heads, "num_key_value_heads": kvHeads, "num_hidden_layers": blocks, "vocab_size": vocab,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true, "max_position_embeddings": 1024,
            "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
        ]
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]).write(to: URL(fileURLWithPath: "\(dir)/config.json"))
        let hd = hidden / heads, kv = kvHeads * hd
        var tensors: [(String, [Int])] = [("model.embed_tokens.weight", [vocab, hidden])]
        for b in 0..<blocks {
            let p = "model.layers.\(b)."
            tensors += [(p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden]),
                        (p + "self_attn.q_proj.weight", [hidden, hidden]), (p + "self_attn.k_proj.weight", [kv, hidden]),
                        (p + "self_attn.v_proj.weight", [kv, hidden]), (p + "self_attn.o_proj.weight", [hidden, hidden]),
                        (p + "mlp.gate_proj.weight", [intermediate, hidden]), (p + "mlp.up_proj.weight", [intermediate, hidden]),
                        (p + "mlp.down_proj.weight", [hidden, intermediate])]
        }
        tensors.append(("model.norm.weight", [hidden]))
        // bf16: 2 bytes a value; norms 1.0, matrices small values (±0.02) from one repeating block.
        var header = "{"
        var offset = 0
        for (i, (name, shape)) in tensors.enumerated() {
            let n = shape.reduce(1, *) * 2
            header += (i > 0 ? "," : "") + "\"\(name)\":{\"dtype\":\"BF16\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + n)]}"
            offset += n
        }
        header += "}"
        var head = Array(header.utf8)
        while head.count % 8 != 0 { head.append(0x20) }
        var pattern = [UInt16](repeating: 0, count: 1 << 16)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in pattern.indices {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let u = Float(state >> 40) / Float(1 << 24)
            pattern[i] = UInt16((Float(0.04) * (u - 0.5)).bitPattern >> 16)
        }
        let one = UInt16(Float(1).bitPattern >> 16)
        let file = "\(dir)/model.safetensors"
        guard FileManager.default.createFile(atPath: file, contents: nil) else { throw ILAError(file: file, "cannot create") }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        defer { try? handle.close() }
        var prefix = Data()
        withUnsafeBytes(of: UInt64(head.count).littleEndian) { prefix.append(contentsOf: $0) }
        prefix.append(contentsOf: head)
        handle.write(prefix)
        for (name, shape) in tensors {
            let count = shape.reduce(1, *)
            var values = [UInt16](repeating: one, count: count)
            if shape.count == 2 {
                var at = 0
                while at < count {
                    let n = min(pattern.count, count - at)
                    values.withUnsafeMutableBufferPointer { dst in
                        pattern.withUnsafeBufferPointer { src in (dst.baseAddress! + at).update(from: src.baseAddress!, count: n) }
                    }
                    at += n
                }
            }
            if name == poison { values[0] = 0x7FC0 }
            handle.write(values.withUnsafeBytes { Data($0) })
        }
    }

    /// Pre-tokenized rows (ids 3..511, labels on the second half).
    static func writeRows(to path: String, count: Int, length: Int) throws {
        var lines: [String] = []
        for r in 0..<count {
            let ids = [1] + (1..<length).map { 3 + ($0 * 37 + r * 101) % 509 }
            let labels = ids.enumerated().map { $0.offset < length / 2 ? -100 : $0.element }
            lines.append("{\"input_ids\": \(ids), \"labels\": \(labels)}")
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }
}
