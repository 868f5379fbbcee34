import Foundation
import ILADiff

/// Pairwise agreement of rankings over the same layers (what `ila-mask compare` prints):
/// Jaccard of the top-F sets, Spearman's ρ (Pearson correlation of average ranks) and Kendall's
/// τ-b of the scores. Undefined correlations (a ranking with all scores equal) are NaN.
public struct RankingComparison: Sendable {
    public var top: Double
    public var paths: [String]
    /// `[i][j]` = |top_i ∩ top_j| / |top_i ∪ top_j|.
    public var jaccard: [[Double]]
    public var spearman: [[Double]]
    public var kendall: [[Double]]

    /// Compares rankings (path, ranking), which must cover the same layers.
    public init(_ rankings: [(path: String, ranking: Ranking)], top: Double = 0.75) throws {
        guard top > 0, top <= 1 else { throw ILAError("top fraction \(top) is not in (0, 1]") }
        self.top = top
        paths = rankings.map(\.path)
        guard let first = rankings.first else {
            jaccard = []; spearman = []; kendall = []
            return
        }
        let names = first.ranking.layers.map(\.name)
        let nameSet = Set(names)
        var vectors: [[Double]] = []
        for (path, r) in rankings {
            let other = Dictionary(r.layers.map { ($0.name, $0.score) }, uniquingKeysWith: { a, _ in a })
            if let missing = names.first(where: { other[$0] == nil }) {
                throw ILAError("\(first.path) and \(path) rank different layers: \(missing) is in \(first.path) but not in \(path)")
            }
            if let extra = r.layers.first(where: { !nameSet.contains($0.name) }) {
                throw ILAError("\(first.path) and \(path) rank different layers: \(extra.name) is in \(path) but not in \(first.path)")
            }
            vectors.append(names.map { other[$0]! })
        }
        let tops = rankings.map { $0.ranking.top(top) }
        let n = rankings.count
        var j = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        var s = j, k = j
        for a in 0..<n {
            for b in a..<n {
                j[a][b] = Self.jaccard(tops[a], tops[b])
                s[a][b] = Self.spearman(vectors[a], vectors[b])
                k[a][b] = Self.kendallTauB(vectors[a], vectors[b])
                j[b][a] = j[a][b]; s[b][a] = s[a][b]; k[b][a] = k[a][b]
            }
        }
        jaccard = j; spearman = s; kendall = k
    }

    /// Loads and compares ranking files.
    public init(paths: [String], top: Double = 0.75) throws {
        try self.init(try paths.map { (path: $0, ranking: try Ranking.load(path: $0)) }, top: top)
    }

    /// `{"top", "rankings", "jaccard", "spearman", "kendall"}`, NaN as null.
    public var jsonObject: [String: Any] {
        func m(_ x: [[Double]]) -> [[Any]] { x.map { $0.map { $0.isFinite ? $0 as Any : NSNull() } } }
        return ["top": top, "rankings": paths, "jaccard": m(jaccard), "spearman": m(spearman), "kendall": m(kendall)]
    }

    // MARK: statistics

    /// |a ∩ b| / |a ∪ b|; 1 for two empty sets.
    public static func jaccard<T: Hashable>(_ a: Set<T>, _ b: Set<T>) -> Double {
        let u = a.union(b).count
        return u == 0 ? 1 : Double(a.intersection(b).count) / Double(u)
    }

    /// 1-based ranks of the values ascending, ties sharing their average rank.
    public static func averageRanks(_ x: [Double]) -> [Double] {
        let order = x.indices.sorted { x[$0] < x[$1] }
        var ranks = [Double](repeating: 0, count: x.count)
        var i = 0
        while i < order.count {
            var e = i
            while e + 1 < order.count && x[order[e + 1]] == x[order[i]] { e += 1 }
            let avg = Double(i + e) / 2 + 1
            for p in i...e { ranks[order[p]] = avg }
            i = e + 1
        }
        return ranks
    }

    /// Pearson correlation; NaN when either side is constant or the lengths differ.
    public static func pearson(_ x: [Double], _ y: [Double]) -> Double {
        guard x.count == y.count, x.count >= 2 else { return .nan }
        let n = Double(x.count)
        let mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for i in x.indices {
            let dx = x[i] - mx, dy = y[i] - my
            sxy += dx * dy; sxx += dx * dx; syy += dy * dy
        }
        guard sxx > 0, syy > 0 else { return .nan }
        return max(-1, min(1, sxy / (sxx * syy).squareRoot()))
    }

    /// Spearman's ρ: Pearson correlation of average ranks.
    public static func spearman(_ x: [Double], _ y: [Double]) -> Double {
        pearson(averageRanks(x), averageRanks(y))
    }

    /// Kendall's τ-b = (C − D) / √((n0 − n1)(n0 − n2)), n1/n2 the pairs tied in x/y.
    public static func kendallTauB(_ x: [Double], _ y: [Double]) -> Double {
        guard x.count == y.count, x.count >= 2 else { return .nan }
        var concordant = 0, discordant = 0, tiedX = 0, tiedY = 0
        let n = x.count
        for i in 0..<n {
            for j in (i + 1)..<n {
                let dx = x[i] < x[j] ? 1 : (x[i] > x[j] ? -1 : 0)
                let dy = y[i] < y[j] ? 1 : (y[i] > y[j] ? -1 : 0)
                if dx == 0 { tiedX += 1 }
                if dy == 0 { tiedY += 1 }
                if dx != 0 && dy != 0 { if dx == dy { concordant += 1 } else { discordant += 1 } }
            }
        }
        let n0 = n * (n - 1) / 2
        let denom = (Double(n0 - tiedX) * Double(n0 - tiedY)).squareRoot()
        guard denom > 0 else { return .nan }
        return max(-1, min(1, Double(concordant - discordant) / denom))
    }
}
