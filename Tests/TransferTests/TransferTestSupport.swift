import Foundation
import ILATestSupport
import XCTest
import ILADiff
import ILARanking

// Helpers of the TransferTests: fixture locations, temporary folders, a minimal safetensors
// writer (checkpoints of any depth for the edge cases), ranking builders and a runner for the
// built `ila-transfer` binary.

enum TransferPaths {
    /// The repository root: Tests/TransferTests/<this file> → three levels up.
    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// A model of fixtures/tiny, failing clearly when the copy is missing.
    static func tiny(_ name: String) throws -> URL {
        let u = repoRoot.appendingPathComponent("fixtures/tiny").appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: u.path) else {
            XCTFail("fixture \(u.path) is missing (copy testbed/tiny into fixtures/tiny)")
            throw XCTSkip("fixture missing")
        }
        return u
    }

    /// The built `ila-transfer`.
    static func binary() throws -> URL { URL(fileURLWithPath: try CommandRunner.binary("ila-transfer")) }
}

/// (parent, kind) of the 7 linear kinds in canonical order.
let kindParents: [(parent: String, kind: String)] = [
    ("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
    ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"),
]
let allKinds = kindParents.map(\.kind)

func layerName(_ block: Int, _ kind: String) -> String {
    let parent = kindParents.first { $0.kind == kind }!.parent
    return "model.layers.\(block).\(parent).\(kind)"
}

/// A Llama-shaped safetensors file with tiny F32 zero tensors: `blocks` blocks of `kinds`, plus
/// an embedding, norms and (as a decoy) a 1-D bias; written by the test, not by the reader under test.
@discardableResult
func writeTinyCheckpoint(blocks: Int, kinds: [String] = allKinds, to path: String) throws -> [String] {
    var names = ["model.embed_tokens.weight", "model.norm.weight"]
    var layers: [String] = []
    for b in 0..<blocks {
        names.append("model.layers.\(b).input_layernorm.weight")
        for k in kinds {
            names.append(layerName(b, k) + ".weight")
            layers.append(layerName(b, k))
        }
        if kinds.contains("q_proj") { names.append(layerName(b, "q_proj") + ".bias") }
    }
    try SafetensorsWriter.write(names.map { n in
        let oneD = n.hasSuffix("norm.weight") || n.hasSuffix(".bias")
        return (name: n, shape: oneD ? [2] : [2, 2], values: [Float](repeating: 0, count: oneD ? 2 : 4))
    }, to: path)
    return layers
}

/// A ranking of `blocks` blocks with score(block, kind) for every kind in `kinds` (and every block
/// for which `has` says yes), ranks by the ranking's own rule, gammas σ(score).
func makeRanking(blocks: Int, kinds: [String] = allKinds, names: [String]? = nil,
                 has: (Int, String) -> Bool = { _, _ in true },
                 score: (Int, String) -> Double) -> Ranking {
    var entries: [(LinearLayer, Double)] = []
    let layerNames = names ?? (0..<blocks).flatMap { b in kinds.map { layerName(b, $0) } }
    for n in layerNames {
        let l = LinearLayer(name: n)!
        guard has(l.block, l.kind.rawValue) else { continue }
        entries.append((l, score(l.block, l.kind.rawValue)))
    }
    return Ranking.from(scores: entries, gammas: entries.map { 1 / (1 + exp(-$0.1)) }, architecture: "LlamaForCausalLM",
                        blocks: blocks,
                        source: Ranking.Source(base: "base", deltas: "deltas.h5", data: "train.jsonl", tool: "test"),
                        objective: nil, history: nil)
}

/// Ranks by the rule of DESIGN.md section 3, computed here: score descending, ties by the
/// position in canonical order.
func independentRanks(_ scores: [(name: String, score: Double)]) -> [String: Int] {
    let order = scores.indices.sorted { a, b in
        scores[a].score != scores[b].score ? scores[a].score > scores[b].score : a < b
    }
    var out: [String: Int] = [:]
    for (r, i) in order.enumerated() { out[scores[i].name] = r + 1 }
    return out
}

/// ⌊F·N + 0.5⌋, at least 1, computed here.
func independentTopCount(_ f: Double, _ n: Int) -> Int { max(1, min(n, Int(floor(f * Double(n) + 0.5)))) }

/// Section 7 computed independently in plain floating point, straight from the text.
func formulaScore(targetBlock j: Int, sourceBlocks ns: Int, targetBlocks nt: Int, s: (Int) -> Double) -> Double {
    var p = (Double(j) + 0.5) * Double(ns) / Double(nt) - 0.5
    p = min(max(p, 0), Double(ns - 1))
    let lo = floor(p), hi = ceil(p), w = p - lo
    return (1 - w) * s(Int(lo)) + w * s(Int(hi))
}

// MARK: - Running the binary

typealias TransferRun = CommandResult

func runTransfer(_ arguments: [String]) throws -> TransferRun { try CommandRunner.run("ila-transfer", arguments) }

/// Expects an ILAError from `body` whose single-line message contains every fragment.
func assertTransferError(contains fragments: [String], _ body: () throws -> Void,
                         file: StaticString = #filePath, line: UInt = #line) {
    do {
        try body()
        XCTFail("expected an error mentioning \(fragments)", file: file, line: line)
    } catch let e as ILAError {
        XCTAssertFalse(e.message.contains("\n"), "multi-line message: \(e.message)", file: file, line: line)
        for f in fragments {
            XCTAssert(e.message.contains(f), "message lacks \"\(f)\": \(e.message)", file: file, line: line)
        }
    } catch {
        XCTFail("expected ILAError, got \(type(of: error)): \(error)", file: file, line: line)
    }
}
