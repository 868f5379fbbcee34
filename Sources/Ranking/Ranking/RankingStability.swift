import Foundation

/// When a learn run's ranking has settled (the paper's observation that rankings stabilise early):
/// at step t the top set and the order of the scores are those of step t − K, and the top set has
/// not changed at any step in between.
public enum RankingStability {
    /// Indices of the top `fraction` of scores: descending, ties to the lower index (canonical order).
    public static func topSet(_ scores: [Double], fraction: Double) -> Set<Int> {
        let order = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        return Set(order.prefix(Ranking.topCount(fraction: fraction, of: scores.count)))
    }

    /// Whether trajectory entry `i` (the scores after step i + 1) is stable over `window` steps:
    /// entries i − window … i share one top set, and Spearman(entry i, entry i − window) ≥
    /// `minSpearman`. Entry i − window must exist (the initial, all-equal scores do not count).
    public static func isStable(_ trajectory: [[Double]], at i: Int, window: Int, fraction: Double = 0.75,
                                minSpearman: Double = 0.99) -> Bool {
        guard window >= 1, i - window >= 0, i < trajectory.count else { return false }
        let top = topSet(trajectory[i], fraction: fraction)
        for j in (i - window)..<i where topSet(trajectory[j], fraction: fraction) != top { return false }
        return RankingComparison.spearman(trajectory[i], trajectory[i - window]) >= minSpearman
    }

    /// The first step (1-based) at which the trajectory is stable, or nil.
    public static func firstStableStep(_ trajectory: [[Double]], window: Int, fraction: Double = 0.75,
                                       minSpearman: Double = 0.99) -> Int? {
        trajectory.indices.first { isStable(trajectory, at: $0, window: window, fraction: fraction, minSpearman: minSpearman) }.map { $0 + 1 }
    }
}
