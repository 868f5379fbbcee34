import Foundation
import FuzzSupport
import ILARanking

// ranking.json: Ranking.load and what readers do with a loaded ranking.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let path = Fuzz.write(data, size, to: "ranking.json")
    guard let r = try? Ranking.load(path: path) else { return 0 }
    _ = r.ordered
    _ = r.top(0.5)
    _ = try? r.jsonData()
    _ = try? RankingComparison([(path: path, ranking: r), (path: path, ranking: r)])
    return 0
}

Fuzz.run(fuzz)
