import ILAModel
import ILATestSupport
import XCTest

/// Pipeline stages: consecutive blocks, each stage at least one, the largest stage as small as the
/// block boundaries allow when the ends also hold the embedding and lm_head.
final class ModelPartTests: XCTestCase {
    /// The optimum by dynamic programming over every split into consecutive non-empty stages:
    /// best[s][k] = the smallest largest stage of stages 0...s holding the first k blocks.
    func optimalLargest(stages P: Int, blocks B: Int, block w: Int, first: Int, last: Int) -> Int {
        func cost(_ s: Int, _ n: Int) -> Int { n * w + (s == 0 ? first : 0) + (s == P - 1 ? last : 0) }
        var best = [[Int]](repeating: [Int](repeating: Int.max, count: B + 1), count: P)
        for k in 1...B { best[0][k] = cost(0, k) }
        for s in 1..<max(P, 1) {
            for k in (s + 1)...B {
                for n in 1...(k - s) where best[s - 1][k - n] != Int.max {
                    best[s][k] = min(best[s][k], max(best[s - 1][k - n], cost(s, n)))
                }
            }
        }
        return best[P - 1][B]
    }

    func testSplitsAreOptimalConsecutiveAndCoverEveryBlock() {
        for (P, B, w, e) in [(2, 32, 218, 525), (4, 32, 218, 525), (4, 16, 60, 262), (3, 3, 9, 16), (8, 80, 100, 300),
                             (2, 7, 10, 0), (5, 12, 7, 30)] {
            let counts = ModelPart.stageBlockCounts(stages: P, blocks: B, block: w, first: e, last: e)
            XCTAssertEqual(counts.count, P)
            XCTAssertEqual(counts.reduce(0, +), B, "\(counts)")
            XCTAssertTrue(counts.allSatisfy { $0 >= 1 }, "\(counts)")
            let costs = counts.enumerated().map { i, n in n * w + (i == 0 ? e : 0) + (i == P - 1 ? e : 0) }
            XCTAssertEqual(costs.max(), optimalLargest(stages: P, blocks: B, block: w, first: e, last: e), "P \(P) B \(B): \(counts)")
        }
        // Llama 3 8B's shape over 4 stages: the ends, which hold the 128 k × 4096 embedding or
        // lm_head (2.4 blocks' worth), get fewer blocks than the middle.
        let c = ModelPart.stageBlockCounts(stages: 4, blocks: 32, block: 218_103_808, first: 525_336_576, last: 525_336_576)
        XCTAssertLessThan(c[0], c[1], "\(c)")
        XCTAssertLessThan(c[3], c[2], "\(c)")
        // Nothing at the ends: an even split.
        XCTAssertEqual(ModelPart.stageBlockCounts(stages: 4, blocks: 16, block: 5, first: 0, last: 0), [4, 4, 4, 4])
    }

    func testStagesOfASpecAreConsecutive() throws {
        let spec = try Architectures.load(configAt: RepoPaths.fixtures.appendingPathComponent("arch/gemma3/base/config.json").path)
        for P in 1...spec.blocks {
            let parts = (0..<P).map { ModelPart.stage($0, of: P, spec: spec) }
            XCTAssertEqual(parts.first?.blocks.lowerBound, 0)
            XCTAssertEqual(parts.last?.blocks.upperBound, spec.blocks)
            for (a, b) in zip(parts, parts.dropFirst()) { XCTAssertEqual(a.blocks.upperBound, b.blocks.lowerBound) }
            XCTAssertTrue(parts.allSatisfy { !$0.blocks.isEmpty })
            XCTAssertEqual(parts.map(\.embedding), (0..<P).map { $0 == 0 })
            XCTAssertEqual(parts.map(\.head), (0..<P).map { $0 == P - 1 })
        }
    }
}
