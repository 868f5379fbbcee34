import Foundation
import ILATestSupport
import XCTest
import ILADiff
import ILARanking
@testable import ILATransfer

/// Transfers of whole rankings onto target checkpoints.
final class RankingTransferTests: XCTestCase {
    /// Scores of the tiny base-A ranking used below, per kind (block 0, block 1).
    static let tinyScores: [String: (Double, Double)] = [
        "q_proj": (1.0, 3.0), "k_proj": (-2.0, 0.5), "v_proj": (0.25, 0.75), "o_proj": (4.0, 4.0),
        "gate_proj": (2.0, -1.0), "up_proj": (0.5, 1.5), "down_proj": (3.0, 2.0),
    ]

    /// A ranking of tiny base-A (2 blocks) with `tinyScores`, written to `dir`.
    func tinyRanking(in dir: TempDir) throws -> (Ranking, String) {
        let ckpt = try ModelCheckpoint(path: try TransferPaths.tiny("base-A").path)
        let names = LinearLayer.layers(in: ckpt).map(\.name)
        XCTAssertEqual(names.count, 14)
        let r = makeRanking(blocks: 2, names: names) { b, k in
            let s = Self.tinyScores[k]!
            return b == 0 ? s.0 : s.1
        }
        let path = dir.path("ranking-A.json")
        try r.write(path: path)
        return (r, path)
    }

    /// tiny base-A (2 blocks, hidden 64) → tiny base-B (3 blocks, hidden 48): block 0 takes
    /// s(0), block 1 takes (s(0) + s(1))/2 (p = 0.5), block 2 takes s(1) — worked out by hand.
    func testTinyAToTinyBAgainstAHandComputation() throws {
        let dir = TempDir()
        let (_, rankingPath) = try tinyRanking(in: dir)
        let target = try TransferPaths.tiny("base-B").path
        let t = try RankingTransfer.load(rankingPath: rankingPath, targetPath: target)

        XCTAssertEqual(t.map.sourceBlocks, 2)
        XCTAssertEqual(t.map.targetBlocks, 3)
        XCTAssertEqual(t.layers.count, 21)
        let expected: [String: [Double]] = [
            "q_proj": [1.0, 2.0, 3.0], "k_proj": [-2.0, -0.75, 0.5], "v_proj": [0.25, 0.5, 0.75],
            "o_proj": [4.0, 4.0, 4.0], "gate_proj": [2.0, 0.5, -1.0], "up_proj": [0.5, 1.0, 1.5],
            "down_proj": [3.0, 2.5, 2.0],
        ]
        for l in t.layers {
            XCTAssertEqual(l.score, expected[l.kind.rawValue]![l.block], "\(l.name)")
        }
        // Ranks by hand: 4.0 ×3 (o0 o1 o2), 3.0 (down0, q2), 2.5 (down1), 2.0 (gate0, q1, down2),
        // 1.5 (up2), 1.0 (q0, up1), 0.75 (v2), 0.5 (up0, v1, gate1, k2), 0.25 (v0), −0.75 (k1),
        // −1 (gate2), −2 (k0); ties in canonical order.
        let handRanks: [String: Int] = [
            "0.o_proj": 1, "1.o_proj": 2, "2.o_proj": 3, "0.down_proj": 4, "2.q_proj": 5, "1.down_proj": 6,
            "0.gate_proj": 7, "1.q_proj": 8, "2.down_proj": 9, "2.up_proj": 10, "0.q_proj": 11, "1.up_proj": 12,
            "2.v_proj": 13, "0.up_proj": 14, "1.v_proj": 15, "1.gate_proj": 16, "2.k_proj": 17, "0.v_proj": 18,
            "1.k_proj": 19, "2.gate_proj": 20, "0.k_proj": 21,
        ]
        let s = t.selection(top: 0.25)
        XCTAssertEqual(s.target, target)
        XCTAssertEqual(s.source, rankingPath)
        XCTAssertEqual(s.blocks, 3)
        XCTAssertEqual(s.top, 0.25)
        XCTAssertEqual(s.layers.map(\.name), LinearLayer.layers(in: try ModelCheckpoint(path: target)).map(\.name))
        for e in s.layers {
            XCTAssertEqual(e.rank, handRanks["\(e.block).\(e.kind)"], e.name)
            XCTAssertNil(e.gamma)
            XCTAssertEqual(e.score, expected[e.kind]![e.block])
        }
        // top 0.25 of 21 = ⌊5.25 + 0.5⌋ = 5 layers; top 0.5 = 11
        XCTAssertEqual(Set(s.selectedNames), Set(["model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj",
                                                  "model.layers.2.self_attn.o_proj", "model.layers.0.mlp.down_proj",
                                                  "model.layers.2.self_attn.q_proj"]))
        XCTAssertEqual(t.selection(top: 0.5).selectedNames.count, 11)
        XCTAssertEqual(t.selection(top: 0.01).selectedNames, ["model.layers.0.self_attn.o_proj"])  // at least 1
        XCTAssertEqual(t.selection(top: 1).selectedNames.count, 21)

        // the source layers behind block 1 are blocks 0 and 1 with w = 0.5
        let q1 = try XCTUnwrap(t.layer(named: "model.layers.1.self_attn.q_proj"))
        XCTAssertEqual(q1.sourceLo.name, "model.layers.0.self_attn.q_proj")
        XCTAssertEqual(q1.sourceHi.name, "model.layers.1.self_attn.q_proj")
        XCTAssertEqual(q1.position.w, 0.5)
    }

    /// Dataset transfer on the same model: scores and ranks are the ranking's own, bit for bit.
    func testEqualDepthIsTheIdentity() throws {
        let dir = TempDir()
        let (ranking, rankingPath) = try tinyRanking(in: dir)
        let t = try RankingTransfer.load(rankingPath: rankingPath, targetPath: try TransferPaths.tiny("base-A").path)
        XCTAssertTrue(t.isIdentity)
        XCTAssertEqual(t.layers.map(\.name), ranking.layers.map(\.name))
        for (l, r) in zip(t.layers, ranking.layers) {
            XCTAssertEqual(l.score.bitPattern, r.score.bitPattern, l.name)
        }
        for top in [0.1, 0.25, 0.5, 0.75, 1.0] {
            let s = t.selection(top: top)
            let direct = Selection(ranking: ranking, top: top, source: rankingPath)
            XCTAssertEqual(s.layers.map(\.rank), direct.layers.map(\.rank))
            XCTAssertEqual(s.layers.map(\.selected), direct.layers.map(\.selected))
            XCTAssertEqual(s.layers.map(\.score), direct.layers.map(\.score))
        }

        // also with random scores on an 8-block model against itself
        let ckpt = dir.path("eight.safetensors")
        try writeTinyCheckpoint(blocks: 8, to: ckpt)
        var rng = SystemRandomNumberGenerator()
        let r8 = makeRanking(blocks: 8) { _, _ in Double.random(in: -5...5, using: &rng) }
        let t8 = try RankingTransfer(ranking: r8, rankingPath: "r8.json",
                                     targetLayers: LinearLayer.layers(in: try ModelCheckpoint(path: ckpt)), targetPath: ckpt)
        XCTAssertEqual(t8.targetRanking.layers.map(\.score), r8.layers.map(\.score))
        XCTAssertEqual(t8.targetRanking.layers.map(\.rank), r8.layers.map(\.rank))
    }

    /// 8 → 3 with s(b, kind) = 10·b + kind index: block 0 = s(0)/6 + 5·s(1)/6, block 1 =
    /// (s(3) + s(4))/2, block 2 = 5·s(6)/6 + s(7)/6.
    func testEightToThree() throws {
        let dir = TempDir()
        let target = dir.path("three.safetensors")
        try writeTinyCheckpoint(blocks: 3, to: target)
        let r = makeRanking(blocks: 8) { b, k in 10 * Double(b) + Double(allKinds.firstIndex(of: k)!) }
        let rankingPath = dir.path("r8.json")
        try r.write(path: rankingPath)
        let t = try RankingTransfer.load(rankingPath: rankingPath, targetPath: target)
        for l in t.layers {
            let k = Double(allKinds.firstIndex(of: l.kind.rawValue)!)
            let expected = [50.0 / 6.0, 35.0, 370.0 / 6.0][l.block] + k
            XCTAssertEqual(l.score, expected, accuracy: 1e-12, l.name)
        }
        XCTAssertEqual(t.layers.filter { $0.block == 1 }.map(\.sourceLo.block), Array(repeating: 3, count: 7))
        XCTAssertEqual(t.layers.filter { $0.block == 1 }.map(\.sourceHi.block), Array(repeating: 4, count: 7))
        // deeper blocks score higher here, so the top 3 are block 2's three best kinds
        XCTAssertEqual(t.selection(top: 3.0 / 21.0).selectedNames,
                       ["model.layers.2.mlp.gate_proj", "model.layers.2.mlp.up_proj", "model.layers.2.mlp.down_proj"])
    }

    /// 3 → 8 against exact dyadic weights.
    func testThreeToEight() throws {
        let dir = TempDir()
        let target = dir.path("eight.safetensors")
        try writeTinyCheckpoint(blocks: 8, to: target)
        let s = [1.0, 5.0, -3.0]
        let r = makeRanking(blocks: 3) { b, k in s[b] + (k == "v_proj" ? 100 : 0) }
        let path = dir.path("r3.json")
        try r.write(path: path)
        let t = try RankingTransfer.load(rankingPath: path, targetPath: target)
        // w = 0, 1/16, 7/16, 13/16 (0→1), 3/16, 9/16, 15/16 (1→2), 0
        let expected = [1.0, 1.25, 2.75, 4.25, 3.5, 0.5, -2.5, -3.0]
        for l in t.layers {
            XCTAssertEqual(l.score, expected[l.block] + (l.kind == .v_proj ? 100 : 0), l.name)
        }
    }

    /// One source block: every target block gets that block's scores, unchanged.
    func testOneToN() throws {
        let dir = TempDir()
        let r = makeRanking(blocks: 1) { _, k in Double(allKinds.firstIndex(of: k)!) * 0.3 - 1 }
        for n in [1, 2, 5, 9] {
            let target = dir.path("n\(n).safetensors")
            try writeTinyCheckpoint(blocks: n, to: target)
            let t = try RankingTransfer(ranking: r, rankingPath: "r1.json",
                                        targetLayers: LinearLayer.layers(in: try ModelCheckpoint(path: target)), targetPath: target)
            XCTAssertEqual(t.layers.count, 7 * n)
            for l in t.layers {
                XCTAssertEqual(l.score, Double(allKinds.firstIndex(of: l.kind.rawValue)!) * 0.3 - 1)
                XCTAssertEqual(l.position.lo, 0); XCTAssertEqual(l.position.hi, 0)
            }
            // all blocks tie per kind: ties go to the shallower block (canonical order)
            let ranks = t.targetRanking.layers.filter { $0.kind == "down_proj" }.map(\.rank)
            XCTAssertEqual(ranks, Array(1...n))
        }
    }

    /// Transferred scores and ranks on random depths and scores against the formula of
    /// section 7 and the ranking rule of section 3, both computed here.
    func testRandomDepthsAgainstIndependentFormula() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<60 {
            let ns = Int.random(in: 1...30, using: &rng), nt = Int.random(in: 1...30, using: &rng)
            var table: [String: Double] = [:]
            let r = makeRanking(blocks: ns) { b, k in
                let v = (Double.random(in: -4...4, using: &rng) * 8).rounded() / 8   // some ties
                table["\(b).\(k)"] = v
                return v
            }
            let targetLayers = (0..<nt).flatMap { b in allKinds.map { LinearLayer(name: layerName(b, $0))! } }
            let t = try RankingTransfer(ranking: r, rankingPath: "r.json", targetLayers: targetLayers, targetPath: "t")
            var expectedScores: [(name: String, score: Double)] = []
            for l in targetLayers {
                let e = formulaScore(targetBlock: l.block, sourceBlocks: ns, targetBlocks: nt) { table["\($0).\(l.kind.rawValue)"]! }
                expectedScores.append((l.name, e))
                XCTAssertEqual(t.layer(named: l.name)!.score, e, "\(ns)→\(nt) \(l.name)")   // bit for bit
            }
            // ranks by the section-3 rule over the transferred scores (the formula check above covers the scores)
            let ranks = independentRanks(t.layers.map { ($0.name, $0.score) })
            for l in t.targetRanking.layers { XCTAssertEqual(l.rank, ranks[l.name]) }
            let f = Double.random(in: 0.01...1, using: &rng)
            let sel = t.selection(top: f)
            let k = independentTopCount(f, targetLayers.count)
            XCTAssertEqual(Set(sel.selectedNames), Set(sel.layers.filter { ranks[$0.name]! <= k }.map(\.name)))
        }
    }

    /// A target kind the source lacks is an error naming the kind and both files.
    func testTargetKindMissingFromTheSource() throws {
        let dir = TempDir()
        let target = dir.path("full.safetensors")
        try writeTinyCheckpoint(blocks: 4, to: target)
        let r = makeRanking(blocks: 2, kinds: ["q_proj", "v_proj"]) { b, _ in Double(b) }
        let path = dir.path("qv.json")
        try r.write(path: path)
        assertTransferError(contains: [path, target, "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "q_proj, v_proj"]) {
            _ = try RankingTransfer.load(rankingPath: path, targetPath: target)
        }
        // the other way round is fine: a target with fewer kinds takes only those
        let qv = dir.path("qv.safetensors")
        try writeTinyCheckpoint(blocks: 4, kinds: ["q_proj", "v_proj"], to: qv)
        let full = makeRanking(blocks: 2) { b, _ in Double(b) }
        let t = try RankingTransfer(ranking: full, rankingPath: "full.json",
                                    targetLayers: LinearLayer.layers(in: try ModelCheckpoint(path: qv)), targetPath: qv)
        XCTAssertEqual(Set(t.layers.map(\.kind)), [.q_proj, .v_proj])
        XCTAssertEqual(t.layers.count, 8)
    }

    /// A source without a (block, kind) that the interpolation needs is an error naming both.
    func testSourceMissingANeededBlock() throws {
        let r = makeRanking(blocks: 4, has: { b, k in !(b == 2 && k == "up_proj") }) { b, _ in Double(b) }
        let targetLayers = (0..<4).flatMap { b in allKinds.map { LinearLayer(name: layerName(b, $0))! } }
        assertTransferError(contains: ["r.json", "up_proj", "source block 2", "model.layers.2.mlp.up_proj", "target.safetensors"]) {
            _ = try RankingTransfer(ranking: r, rankingPath: "r.json", targetLayers: targetLayers, targetPath: "target.safetensors")
        }
        // a one-block target reads p = 1.5, i.e. blocks 1 and 2, so it fails too …
        let one = allKinds.map { LinearLayer(name: layerName(0, $0))! }
        XCTAssertThrowsError(try RankingTransfer(ranking: r, rankingPath: "r.json", targetLayers: one, targetPath: "t"))
        // … whereas 4 → 4 needs exactly block 2 only for block 2
        let noBlock2 = targetLayers.filter { $0.block != 2 }
        XCTAssertNoThrow(try RankingTransfer(ranking: r, rankingPath: "r.json", targetLayers: noBlock2, targetPath: "t", targetBlocks: 4))
    }

    func testTargetWithoutLinearLayers() throws {
        let dir = TempDir()
        let target = dir.path("none.safetensors")
        try writeTinyCheckpoint(blocks: 2, kinds: [], to: target)
        let r = makeRanking(blocks: 2) { b, _ in Double(b) }
        let path = dir.path("r.json")
        try r.write(path: path)
        assertTransferError(contains: [target, "no linear layers"]) {
            _ = try RankingTransfer.load(rankingPath: path, targetPath: target)
        }
    }

    /// Rankings of the wrong format or version are refused by the loader.
    func testWrongFormatOrVersion() throws {
        let dir = TempDir()
        let target = try TransferPaths.tiny("base-B").path
        let r = makeRanking(blocks: 2) { b, _ in Double(b) }
        var obj = try JSONSerialization.jsonObject(with: try r.jsonData()) as! [String: Any]
        obj["format"] = "ila-selection"
        let wrongFormat = dir.path("wrong-format.json")
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: wrongFormat))
        assertTransferError(contains: [wrongFormat, "ila-selection", "ila-ranking"]) {
            _ = try RankingTransfer.load(rankingPath: wrongFormat, targetPath: target)
        }
        obj["format"] = "ila-ranking"
        obj["version"] = 2
        let wrongVersion = dir.path("wrong-version.json")
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: wrongVersion))
        assertTransferError(contains: [wrongVersion, "version 2"]) {
            _ = try RankingTransfer.load(rankingPath: wrongVersion, targetPath: target)
        }
    }
}
