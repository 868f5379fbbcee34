@testable import ILACollective
import XCTest

/// The row-split rule and the single-process communicator (no MPI involved).
final class ShareTests: XCTestCase {
    func testSharesAreContiguousDisjointAndCoverEveryRow() {
        for count in 0...40 {
            for size in 1...7 {
                let shares = (0..<size).map { Collective.share(of: count, rank: $0, size: size) }
                XCTAssertEqual(shares.first?.lowerBound, 0)
                XCTAssertEqual(shares.last?.upperBound, count)
                for (a, b) in zip(shares, shares.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
                let lengths = shares.map(\.count)
                XCTAssertLessThanOrEqual(lengths.max()! - lengths.min()!, 1, "unbalanced split of \(count) over \(size)")
            }
        }
        XCTAssertEqual(Collective.share(of: 5, rank: 1, size: 2), 2..<5)
    }

    func testSingleProcessIsTheIdentity() throws {
        let c = SingleProcess()
        XCTAssertEqual(c.rank, 0)
        XCTAssertEqual(c.size, 1)
        var d = [1.5, -2.0]
        try c.allreduceSum(&d)
        XCTAssertEqual(d, [1.5, -2.0])
        var f: [Float] = [3]
        try c.allreduceSum(&f)
        XCTAssertEqual(f, [3])
        var b: [UInt8] = [1, 2, 3]
        try c.broadcast(&b, root: 0)
        XCTAssertEqual(b, [1, 2, 3])
        XCTAssertTrue(try c.any(true))
        XCTAssertFalse(try c.any(false))
        XCTAssertEqual(try Collective.fromRoot(c) { [7, 8] }, [7, 8])
    }
}
