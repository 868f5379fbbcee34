import Foundation
import ILADiff
@testable import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking
import XCTest

final class RankingComparisonTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ila-compare-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    /// A ranking over block 0's q k v o (in that order) with the given scores.
    private func ranking(_ scores: [Double], kinds: [String] = ["q_proj", "k_proj", "v_proj", "o_proj"], block: Int = 0) -> Ranking {
        let layers = kinds.map { LinearLayer(name: "model.layers.\(block).self_attn.\($0)")! }
        return Ranking.from(scores: Array(zip(layers, scores)), architecture: "LlamaForCausalLM", blocks: block + 1,
                            source: nil, objective: nil, history: nil)
    }

    private func write(_ r: Ranking, _ name: String) throws -> String {
        let p = dir.appendingPathComponent(name).path
        try r.write(path: p)
        return p
    }

    // MARK: statistics against hand-computed values

    func testJaccard() {
        XCTAssertEqual(RankingComparison.jaccard(Set(["a", "b"]), Set(["a", "c"])), 1.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(RankingComparison.jaccard(Set(["a", "b", "c"]), Set(["a", "c", "d"])), 0.5, accuracy: 1e-12)
        XCTAssertEqual(RankingComparison.jaccard(Set(["a"]), Set(["a"])), 1)
        XCTAssertEqual(RankingComparison.jaccard(Set(["a"]), Set(["b"])), 0)
        XCTAssertEqual(RankingComparison.jaccard(Set<String>(), Set<String>()), 1)
    }

    func testAverageRanks() {
        XCTAssertEqual(RankingComparison.averageRanks([10, 30, 20]), [1, 3, 2])
        XCTAssertEqual(RankingComparison.averageRanks([5, 6, 7, 8, 7]), [1, 2, 3.5, 5, 3.5])
        XCTAssertEqual(RankingComparison.averageRanks([2, 2, 2]), [2, 2, 2])
        XCTAssertEqual(RankingComparison.averageRanks([1, 2, 2, 3]), [1, 2.5, 2.5, 4])
    }

    func testSpearmanWithoutTies() {
        // d = [0, 1, -1, 0]: ρ = 1 − 6·2 / (4·15) = 0.8
        XCTAssertEqual(RankingComparison.spearman([1, 2, 3, 4], [1, 3, 2, 4]), 0.8, accuracy: 1e-12)
        XCTAssertEqual(RankingComparison.spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1, accuracy: 1e-12)
        XCTAssertEqual(RankingComparison.spearman([1, 2, 3], [10, 200, 3000]), 1, accuracy: 1e-12)
    }

    func testSpearmanWithTies() {
        // ranks y = [1, 2, 3.5, 5, 3.5]; Pearson with [1..5] = 8 / √(10 · 9.5)  (scipy: 0.8207826816681233)
        XCTAssertEqual(RankingComparison.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), 8 / (95.0).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(RankingComparison.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), 0.8207826816681233, accuracy: 1e-12)
        // ties on both sides: rx = [1, 2.5, 2.5, 4], ry = [1, 2, 3.5, 3.5] → 3.75 / 4.5
        XCTAssertEqual(RankingComparison.spearman([1, 2, 2, 3], [1, 2, 3, 3]), 3.75 / 4.5, accuracy: 1e-12)
        XCTAssertTrue(RankingComparison.spearman([1, 1, 1], [1, 2, 3]).isNaN, "constant scores have no rank correlation")
    }

    func testKendallTauB() {
        // C = 5, D = 1 of 6 pairs
        XCTAssertEqual(RankingComparison.kendallTauB([1, 2, 3, 4], [1, 3, 2, 4]), 4.0 / 6, accuracy: 1e-12)
        XCTAssertEqual(RankingComparison.kendallTauB([1, 2, 3, 4], [4, 3, 2, 1]), -1, accuracy: 1e-12)
        // one tie in y: C = 8, D = 1, n0 = 10, n2 = 1 → 7 / √90  (scipy: 0.7378647873726218)
        XCTAssertEqual(RankingComparison.kendallTauB([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), 7 / (90.0).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(RankingComparison.kendallTauB([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), 0.7378647873726218, accuracy: 1e-12)
        // a tie on each side: C = 4, D = 0, n1 = n2 = 1 → 4 / √(5 · 5)
        XCTAssertEqual(RankingComparison.kendallTauB([1, 2, 2, 3], [1, 2, 3, 3]), 0.8, accuracy: 1e-12)
        XCTAssertEqual(RankingComparison.kendallTauB([1, 1, 2, 2], [1, 2, 1, 2]), 0, accuracy: 1e-12)
        XCTAssertTrue(RankingComparison.kendallTauB([3, 3, 3], [1, 2, 3]).isNaN)
    }

    // MARK: matrices over ranking files

    func testMatricesOfThreeRankings() throws {
        // A: q k v o = 4 3 2 1; B: 4 1 3 2; C = A.
        let a = try write(ranking([4, 3, 2, 1]), "a.json")
        let b = try write(ranking([4, 1, 3, 2]), "b.json")
        let c = try write(ranking([40, 30, 20, 10]), "c.json")
        let cmp = try RankingComparison(paths: [a, b, c], top: 0.5)
        XCTAssertEqual(cmp.paths, [a, b, c])
        // top 50% of 4 = 2: {q, k} vs {q, v}
        XCTAssertEqual(cmp.jaccard[0][1], 1.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(cmp.jaccard[1][0], 1.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(cmp.jaccard[0][2], 1)
        // d = [0, 2, -1, -1] → 1 − 36/60
        XCTAssertEqual(cmp.spearman[0][1], 0.4, accuracy: 1e-12)
        // C = 4, D = 2
        XCTAssertEqual(cmp.kendall[0][1], 1.0 / 3, accuracy: 1e-12)
        for i in 0..<3 {
            XCTAssertEqual(cmp.jaccard[i][i], 1)
            XCTAssertEqual(cmp.spearman[i][i], 1, accuracy: 1e-12)
            XCTAssertEqual(cmp.kendall[i][i], 1, accuracy: 1e-12)
        }
        XCTAssertEqual(cmp.spearman[0][2], 1, accuracy: 1e-12)
        XCTAssertEqual(cmp.kendall[2][1], cmp.kendall[0][1], accuracy: 1e-12)

        // default top 75% of 4 = 3: {q, k, v} vs {q, v, o}
        let def = try RankingComparison(paths: [a, b])
        XCTAssertEqual(def.top, 0.75)
        XCTAssertEqual(def.jaccard[0][1], 0.5, accuracy: 1e-12)

        let obj = def.jsonObject
        XCTAssertEqual(obj["top"] as? Double, 0.75)
        XCTAssertEqual(obj["rankings"] as? [String], [a, b])
        let text = try jsonText(obj)
        let back = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        XCTAssertEqual((back["jaccard"] as? [[Double]])?[0][1] ?? -1, 0.5, accuracy: 1e-12)
    }

    func testMatchesLayersByNameNotPosition() throws {
        // Same scores per layer, stored in different orders: perfect agreement.
        var r2 = ranking([4, 3, 2, 1])
        r2.layers.reverse()
        let a = try write(ranking([4, 3, 2, 1]), "a.json")
        let b = try write(r2, "b.json")
        let cmp = try RankingComparison(paths: [a, b])
        XCTAssertEqual(cmp.spearman[0][1], 1, accuracy: 1e-12)
        XCTAssertEqual(cmp.kendall[0][1], 1, accuracy: 1e-12)
    }

    func testUndefinedCorrelationIsNullInJSON() throws {
        let cmp = try RankingComparison([(path: "a.json", ranking: ranking([1, 1, 1, 1])), (path: "b.json", ranking: ranking([4, 3, 2, 1]))])
        XCTAssertTrue(cmp.spearman[0][1].isNaN)
        let text = try jsonText(cmp.jsonObject)
        XCTAssertTrue(text.contains("null"))
        XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(text.utf8)))
    }

    func testRefusesDifferentLayerSets() throws {
        let a = try write(ranking([4, 3, 2, 1]), "a.json")
        let b = try write(ranking([4, 3, 2], kinds: ["q_proj", "k_proj", "v_proj"]), "b.json")
        let c = try write(ranking([4, 3, 2, 1], block: 1), "c.json")
        XCTAssertThrowsError(try RankingComparison(paths: [a, b])) { e in
            let m = (e as? ILAError)?.message ?? ""
            XCTAssertTrue(m.contains(a) && m.contains(b), m)
            XCTAssertTrue(m.contains("model.layers.0.self_attn.o_proj"), m)
        }
        // b ⊂ a: the extra layer of the second file is named too
        XCTAssertThrowsError(try RankingComparison(paths: [b, a])) { e in
            let m = (e as? ILAError)?.message ?? ""
            XCTAssertTrue(m.contains(a) && m.contains(b) && m.contains("model.layers.0.self_attn.o_proj"), m)
        }
        XCTAssertThrowsError(try RankingComparison(paths: [a, c])) { e in
            let m = (e as? ILAError)?.message ?? ""
            XCTAssertTrue(m.contains(a) && m.contains(c) && m.contains("model.layers."), m)
        }
    }

    func testBadTopAndMissingFile() throws {
        let a = try write(ranking([4, 3, 2, 1]), "a.json")
        XCTAssertThrowsError(try RankingComparison(paths: [a, a], top: 0))
        XCTAssertThrowsError(try RankingComparison(paths: [a, a], top: 1.5))
        XCTAssertThrowsError(try RankingComparison(paths: [a, dir.appendingPathComponent("none.json").path])) { e in
            XCTAssertTrue(((e as? ILAError)?.message ?? "").contains("none.json"))
        }
    }
}
