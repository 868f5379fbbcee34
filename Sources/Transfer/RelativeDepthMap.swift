import Foundation
import ILADiff

/// The relative-depth mapping of DESIGN.md section 7: target block j of N_T blocks sits at the
/// fractional source position
///
///     p = clamp((j + 0.5) · N_S / N_T − 0.5, 0, N_S − 1)
///
/// and takes the score (1 − w) · s(⌊p⌋) + w · s(⌈p⌉) with w = p − ⌊p⌋.
///
/// p is evaluated in Double literally as written, ((j + 0.5) · N_S) / N_T − 0.5, so an independent
/// implementation of the formula gets the same bits. That evaluation is exact whenever p is a
/// whole number: (j + 0.5) · N_S is a half-integer (exact), the division is correctly rounded and
/// its true value p + 0.5 is then representable, and subtracting 0.5 is exact. So ⌊p⌋ = ⌈p⌉ and
/// w = 0 exactly in that case — in particular for every block when N_S = N_T, which makes the
/// transfer the identity bit for bit. When p is not whole, its distance to the nearest integer is
/// at least 1/(2·N_T), far above rounding error (for any N_S · N_T below 2^50), so ⌊p⌋ and ⌈p⌉ are always the exact ones and only
/// w carries a rounding error of an ulp or so.
public struct RelativeDepthMap: Sendable, Equatable {
    /// Where one target block reads its scores from.
    public struct Position: Sendable, Equatable, CustomStringConvertible {
        /// The target block j.
        public let target: Int
        /// p, the clamped fractional source position.
        public let p: Double
        /// ⌊p⌋.
        public let lo: Int
        /// ⌈p⌉ (equal to `lo` when p is a whole number).
        public let hi: Int
        /// p − ⌊p⌋ ∈ [0, 1): the weight of `hi`; `lo` gets 1 − w.
        public let w: Double

        public init(target: Int, p: Double, lo: Int, hi: Int, w: Double) {
            self.target = target
            self.p = p
            self.lo = lo
            self.hi = hi
            self.w = w
        }

        /// The weight of `lo`.
        public var weightLo: Double { 1 - w }
        /// The weight of `hi`.
        public var weightHi: Double { w }

        /// The source blocks that contribute (one when p is whole).
        public var sourceBlocks: [Int] { lo == hi ? [lo] : [lo, hi] }

        /// (1 − w) · sLo + w · sHi, evaluated in exactly that order.
        public func interpolate(_ sLo: Double, _ sHi: Double) -> Double {
            (1 - w) * sLo + w * sHi
        }

        public var description: String {
            lo == hi ? "block \(target) ← \(lo)" : "block \(target) ← \(lo)·\(1 - w) + \(hi)·\(w)"
        }
    }

    public let sourceBlocks: Int
    public let targetBlocks: Int
    /// One entry per target block, in block order.
    public let positions: [Position]

    /// Both counts must be at least 1.
    public init(sourceBlocks: Int, targetBlocks: Int) throws {
        guard sourceBlocks >= 1 else { throw ILAError("the source model has \(sourceBlocks) blocks; at least 1 is needed") }
        guard targetBlocks >= 1 else { throw ILAError("the target model has \(targetBlocks) blocks; at least 1 is needed") }
        self.sourceBlocks = sourceBlocks
        self.targetBlocks = targetBlocks
        positions = (0..<targetBlocks).map { Self.position(target: $0, sourceBlocks: sourceBlocks, targetBlocks: targetBlocks) }
    }

    /// Whether every target block maps to exactly the same source block (N_S = N_T).
    public var isIdentity: Bool { positions.allSatisfy { $0.lo == $0.target && $0.hi == $0.target && $0.w == 0 } }

    public subscript(targetBlock j: Int) -> Position { positions[j] }

    /// The position of target block `j` (0 ≤ j < targetBlocks), exactly as described above.
    public static func position(target j: Int, sourceBlocks ns: Int, targetBlocks nt: Int) -> Position {
        let raw = (Double(j) + 0.5) * Double(ns) / Double(nt) - 0.5
        let p = min(max(raw, 0), Double(ns - 1))
        let lo = p.rounded(.down), hi = p.rounded(.up)
        return Position(target: j, p: p, lo: Int(lo), hi: Int(hi), w: p - lo)
    }
}
