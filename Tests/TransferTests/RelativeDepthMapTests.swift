import Foundation
import XCTest
import ILADiff
@testable import ILATransfer

/// The pure mapping of DESIGN.md section 7.
final class RelativeDepthMapTests: XCTestCase {
    func testEqualDepthIsExactlyTheIdentity() throws {
        for n in [1, 2, 3, 7, 8, 32, 40, 80, 126, 1000] {
            let m = try RelativeDepthMap(sourceBlocks: n, targetBlocks: n)
            XCTAssertTrue(m.isIdentity, "\(n) → \(n)")
            for j in 0..<n {
                let p = m[targetBlock: j]
                XCTAssertEqual(p.lo, j)
                XCTAssertEqual(p.hi, j)
                XCTAssertEqual(p.w, 0)            // exactly, not approximately
                XCTAssertEqual(p.p, Double(j))
                // s·1 + s'·0 gives s bit for bit
                let s = 0.1 + Double(j) * 1.0e-3
                XCTAssertEqual(p.interpolate(s, 12345.678).bitPattern, s.bitPattern)
            }
        }
    }

    func testTwoToThreeByHand() throws {
        // j=0: p = 0.5·2/3 − 0.5 = −1/6 → 0; j=1: 1.5·2/3 − 0.5 = 0.5; j=2: 2.5·2/3 − 0.5 = 7/6 → 1
        let m = try RelativeDepthMap(sourceBlocks: 2, targetBlocks: 3)
        XCTAssertEqual(m.positions.map(\.lo), [0, 0, 1])
        XCTAssertEqual(m.positions.map(\.hi), [0, 1, 1])
        XCTAssertEqual(m.positions.map(\.w), [0, 0.5, 0])
        XCTAssertFalse(m.isIdentity)
    }

    func testEightToThreeByHand() throws {
        // j=0: p = 0.5·8/3 − 0.5 = 5/6; j=1: 1.5·8/3 − 0.5 = 3.5; j=2: 2.5·8/3 − 0.5 = 37/6 = 6 + 1/6
        let m = try RelativeDepthMap(sourceBlocks: 8, targetBlocks: 3)
        XCTAssertEqual(m.positions.map(\.lo), [0, 3, 6])
        XCTAssertEqual(m.positions.map(\.hi), [1, 4, 7])
        XCTAssertEqual(m[targetBlock: 0].w, 5.0 / 6.0, accuracy: 1e-15)
        XCTAssertEqual(m[targetBlock: 1].w, 0.5)
        XCTAssertEqual(m[targetBlock: 2].w, 1.0 / 6.0, accuracy: 1e-15)
        XCTAssertEqual(m[targetBlock: 0].p, 5.0 / 6.0, accuracy: 1e-15)
        XCTAssertEqual(m[targetBlock: 2].p, 37.0 / 6.0, accuracy: 1e-14)
    }

    func testThreeToEightByHand() throws {
        // p_j = (j + 0.5)·3/8 − 0.5 = (6j − 1)/16, clamped to [0, 2]
        let m = try RelativeDepthMap(sourceBlocks: 3, targetBlocks: 8)
        XCTAssertEqual(m.positions.map(\.lo), [0, 0, 0, 0, 1, 1, 1, 2])
        XCTAssertEqual(m.positions.map(\.hi), [0, 1, 1, 1, 2, 2, 2, 2])
        XCTAssertEqual(m.positions.map(\.w), [0, 0.0625, 0.4375, 0.8125, 0.1875, 0.5625, 0.9375, 0])
        XCTAssertEqual(m.positions.map(\.p), [0, 0.0625, 0.4375, 0.8125, 1.1875, 1.5625, 1.9375, 2])
    }

    func testOneSourceBlockFeedsEveryTargetBlock() throws {
        for n in 1...12 {
            let m = try RelativeDepthMap(sourceBlocks: 1, targetBlocks: n)
            for p in m.positions {
                XCTAssertEqual(p.lo, 0); XCTAssertEqual(p.hi, 0); XCTAssertEqual(p.w, 0)
            }
        }
    }

    func testOneTargetBlockReadsTheMiddle() throws {
        for n in 1...12 {
            let p = try RelativeDepthMap(sourceBlocks: n, targetBlocks: 1)[targetBlock: 0]
            // p = 0.5·n − 0.5 = (n − 1)/2
            XCTAssertEqual(p.lo, (n - 1) / 2)
            XCTAssertEqual(p.hi, n / 2)
            XCTAssertEqual(p.w, n % 2 == 0 ? 0.5 : 0)
        }
    }

    func testZeroBlocksIsAnError() {
        XCTAssertThrowsError(try RelativeDepthMap(sourceBlocks: 0, targetBlocks: 3))
        XCTAssertThrowsError(try RelativeDepthMap(sourceBlocks: 3, targetBlocks: 0))
    }

    /// Every pair of depths up to 40 (and some real model depths) against the formula computed
    /// independently in floating point straight from the text.
    func testAgreesWithTheFormulaForManyDepthPairs() throws {
        var pairs: [(Int, Int)] = []
        for a in 1...40 { for b in 1...40 { pairs.append((a, b)) } }
        pairs += [(22, 80), (80, 22), (32, 80), (80, 32), (28, 126), (126, 28), (24, 61), (61, 24)]
        for (ns, nt) in pairs {
            let m = try RelativeDepthMap(sourceBlocks: ns, targetBlocks: nt)
            let s: (Int) -> Double = { b in sin(Double(b) * 1.7 + Double(ns)) * 3 + 0.25 * Double(b) }
            for j in 0..<nt {
                let p = m[targetBlock: j]
                XCTAssert(p.lo >= 0 && p.hi < ns && p.hi - p.lo <= 1 && p.w >= 0 && p.w < 1, "\(ns)→\(nt) j=\(j): \(p)")
                XCTAssertEqual(p.lo == p.hi, p.w == 0)
                let ours = p.interpolate(s(p.lo), s(p.hi))
                let theirs = formulaScore(targetBlock: j, sourceBlocks: ns, targetBlocks: nt, s: s)
                XCTAssertEqual(ours.bitPattern, theirs.bitPattern, "\(ns) → \(nt), block \(j): \(ours) vs \(theirs)")
                XCTAssertEqual(p.p, min(max((Double(j) + 0.5) * Double(ns) / Double(nt) - 0.5, 0), Double(ns - 1)), accuracy: 1e-12)
            }
        }
    }

    /// ⌊p⌋ and ⌈p⌉ against exact integer arithmetic, p = ((2j + 1)·N_S − N_T) / (2·N_T), and w
    /// within a few ulps of the exact fraction, for every pair of depths up to 160.
    func testFloorAndCeilAreExact() throws {
        for ns in 1...160 {
            for nt in 1...160 {
                let m = try RelativeDepthMap(sourceBlocks: ns, targetBlocks: nt)
                for j in 0..<nt {
                    let num = (2 * j + 1) * ns - nt, den = 2 * nt
                    let (lo, hi, w): (Int, Int, Double)
                    if num <= 0 { (lo, hi, w) = (0, 0, 0) }
                    else if num >= den * (ns - 1) { (lo, hi, w) = (ns - 1, ns - 1, 0) }
                    else {
                        let q = num / den, r = num % den
                        (lo, hi, w) = (q, r == 0 ? q : q + 1, Double(r) / Double(den))
                    }
                    let p = m[targetBlock: j]
                    guard p.lo == lo, p.hi == hi, abs(p.w - w) <= 4 * Double(ns).ulp else {
                        return XCTFail("\(ns) → \(nt) block \(j): \(p) vs exact lo \(lo) hi \(hi) w \(w)")
                    }
                    if lo == hi { XCTAssertEqual(p.w, 0) }
                }
            }
        }
    }

    /// The map is monotone: deeper target blocks never read shallower source positions.
    func testMonotone() throws {
        for ns in 1...20 {
            for nt in 1...20 {
                let ps = try RelativeDepthMap(sourceBlocks: ns, targetBlocks: nt).positions.map(\.p)
                XCTAssertEqual(ps, ps.sorted(), "\(ns) → \(nt)")
            }
        }
    }
}
