import Foundation
import ILAMask

/// Learning-rate schedules of transformers' `get_*_schedule_with_warmup`.
public enum LearningRateSchedule: String, Codable, Sendable, CaseIterable {
    case cosine, linear, constant

    /// The factor of the base learning rate at optimizer step `step` (0-based: the first step
    /// uses step 0), as transformers' lr_lambda computes it in Python floats.
    public func factor(step: Int, total: Int, warmup: Int) -> Double {
        if step < warmup { return Double(step) / Double(max(1, warmup)) }
        switch self {
        case .constant:
            return 1
        case .linear:
            return max(0, Double(total - step) / Double(max(1, total - warmup)))
        case .cosine:
            // num_cycles = 0.5
            let progress = Double(step - warmup) / Double(max(1, total - warmup))
            return max(0, 0.5 * (1 + cos(Double.pi * 0.5 * 2 * progress)))
        }
    }

    /// Warmup steps of `--warmup W`: a fraction of the steps when W < 1 (rounded up, as the
    /// Trainer's get_warmup_steps), a step count otherwise.
    public static func warmupSteps(_ w: Double, total: Int) -> Int {
        w < 1 ? Int((w * Double(total)).rounded(.up)) : Int(w)
    }
}

/// How rows are taken for the steps.
public enum RowOrder: String, Codable, Sendable, CaseIterable {
    /// Consecutive rows in file order (the file repeated for further epochs).
    case file
    /// Each epoch a permutation of the rows drawn from SplitMix64(seed).
    case shuffle
}

/// The hyper-parameters of an `ila-tune` run (DESIGN.md section 10).
public struct TuneOptions: Codable, Sendable, Equatable {
    public var r = 8
    public var alpha = 16.0
    public var rsLoRA = false
    public var lr = 2e-4
    public var schedule = LearningRateSchedule.cosine
    /// A fraction of the steps (< 1) or a step count.
    public var warmup = 0.03
    public var weightDecay = 0.0
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var eps = 1e-8
    /// Rows per micro-batch; a step takes batch × gradAccum rows.
    public var batch = 16
    public var gradAccum = 1
    /// Optimizer steps (the schedule's length).
    public var steps = 0
    public var seqLen = 256
    public var seed: UInt64 = 0
    public var order = RowOrder.shuffle
    /// Clip the global gradient norm to this (0: no clipping; transformers' Trainer uses 1).
    public var maxGradNorm = 0.0
    public init() {}

    public var rowsPerStep: Int { batch * gradAccum }
    public var warmupSteps: Int { LearningRateSchedule.warmupSteps(warmup, total: steps) }
    /// The LoRA scale of rank r: alpha/r, or alpha/√r with rsLoRA (PEFT's).
    public func scale(rank: Int, alpha: Double) -> Double {
        rsLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank)
    }
}

/// The rows of each step: the data stream is the epochs' orders concatenated, and step k takes
/// the k-th run of `rowsPerStep` rows of it (a step may straddle two epochs).
public struct BatchPlan: Sendable {
    public let rows: Int
    public let rowsPerStep: Int
    public let order: RowOrder
    public let seed: UInt64

    public init(rows: Int, rowsPerStep: Int, order: RowOrder, seed: UInt64) {
        self.rows = rows
        self.rowsPerStep = rowsPerStep
        self.order = order
        self.seed = seed
    }

    /// Steps in `epochs` passes over the data (rounded up).
    public func steps(epochs: Double) -> Int { max(1, Int((epochs * Double(rows) / Double(rowsPerStep)).rounded(.up))) }

    /// Row indices of steps `range` (the permutations depend on the seed alone, so a resumed run
    /// draws the same ones).
    public func indices(steps range: Range<Int>) -> [[Int]] {
        let first = range.lowerBound * rowsPerStep, last = range.upperBound * rowsPerStep
        var perms: [Int: [Int]] = [:]
        if order == .shuffle {
            // One generator for all epochs: epoch e's permutation follows epoch e-1's draws.
            var rng = SplitMix64(seed: seed)
            let lastEpoch = max(0, (last - 1) / rows)
            for e in 0...lastEpoch {
                var p = Array(0..<rows)
                // Fisher–Yates, from the back.
                for i in stride(from: rows - 1, to: 0, by: -1) { p.swapAt(i, rng.index(below: i + 1)) }
                if e >= first / rows { perms[e] = p }
            }
        }
        return range.map { k in
            (k * rowsPerStep..<(k + 1) * rowsPerStep).map { s in
                let e = s / rows, i = s % rows
                return order == .file ? i : perms[e]![i]
            }
        }
    }
}

/// The ε-stable point (DESIGN.md section 10): the first step T (1-based) at which the mean loss
/// of steps T−W+1…T and of the W steps before them differ by less than ε.
public enum LossStability {
    public static func isStable(_ losses: [Double], window w: Int, eps: Double) -> Bool {
        let n = losses.count
        guard w >= 1, n >= 2 * w else { return false }
        let recent = losses[(n - w)..<n].reduce(0, +) / Double(w)
        let before = losses[(n - 2 * w)..<(n - w)].reduce(0, +) / Double(w)
        return abs(recent - before) < eps
    }

    /// The first stable step of a recorded curve, or nil.
    public static func firstStableStep(_ losses: [Double], window w: Int, eps: Double) -> Int? {
        guard w >= 1 else { return nil }
        for t in stride(from: 2 * w, through: losses.count, by: 1) where isStable(Array(losses[0..<t]), window: w, eps: eps) {
            return t
        }
        return nil
    }
}
