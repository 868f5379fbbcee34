import Foundation
import ILADiff

/// A weight matrix [rows, cols] row-major, kept in the checkpoint's dtype (float32, bfloat16 or
/// float16) and widened to float32 row range by row range as the engine's GEMMs consume it, so a
/// bf16 checkpoint needs 2 bytes per parameter in memory, not 4. Widening is exact.
public final class WeightMatrix: @unchecked Sendable {
    public enum Precision: String, Sendable { case float32, bfloat16, float16 }
    public let rows: Int
    public let cols: Int
    public let precision: Precision
    /// float32 storage, or nil.
    private let single: FloatBuffer?
    /// bf16 / f16 bits, or nil.
    private let half: UnsafeMutablePointer<UInt16>?

    public var count: Int { rows * cols }
    /// Bytes held.
    public var bytes: Int { count * (precision == .float32 ? 4 : 2) }

    public init(float32 values: [Float], rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        precision = .float32
        single = FloatBuffer(values)
        half = nil
    }

    public init(halfBits bits: [UInt16], precision: Precision, rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        self.precision = precision
        single = nil
        let p = UnsafeMutablePointer<UInt16>.allocate(capacity: max(bits.count, 1))
        bits.withUnsafeBufferPointer { src in if let b = src.baseAddress { p.initialize(from: b, count: bits.count) } }
        half = p
    }

    deinit { half?.deallocate() }

    /// The float32 values in place, when stored as float32.
    public var float32: UnsafePointer<Float>? { single.map { UnsafePointer($0.p) } }

    /// The bfloat16 bit patterns in place, when stored as bfloat16.
    public var bfloat16: UnsafePointer<UInt16>? { precision == .bfloat16 ? half.map { UnsafePointer($0) } : nil }

    /// Writes rows `range` widened to float32 into dst [range.count, cols].
    public func widen(rows range: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        let n = range.count * cols, off = range.lowerBound * cols
        if let single { dst.update(from: single.p + off, count: n); return }
        guard let half else { return }
        let src = half + off
        switch precision {
        case .bfloat16:
            for i in 0..<n { dst[i] = Float(bitPattern: UInt32(src[i]) << 16) }
        case .float16:
            for i in 0..<n { dst[i] = Float(halfBits: src[i]) }
        case .float32:
            break
        }
    }

    /// All values widened (tests and small tensors).
    public var array: [Float] {
        [Float](unsafeUninitializedCapacity: count) { buf, n in
            if let b = buf.baseAddress { widen(rows: 0..<rows, into: b) }
            n = count
        }
    }

    /// Whether a 16-bit pattern is NaN or ±Inf.
    static func nonFinite(_ bits: UInt16, _ p: Precision) -> Bool {
        p == .bfloat16 ? bits & 0x7F80 == 0x7F80 : bits & 0x7C00 == 0x7C00
    }

    /// Loads a 2-D tensor, keeping BF16/F16 as stored unless `widen`; refuses NaN/Inf.
    static func load(_ name: String, rows: Int, cols: Int, from checkpoint: ModelCheckpoint, widen: Bool) throws -> WeightMatrix {
        let file = checkpoint.file(of: name) ?? checkpoint.path
        if !widen, let info = checkpoint.info(name), info.dtype == .BF16 || info.dtype == .F16,
           let bits = try checkpoint.halfBits(name) {
            let p: Precision = info.dtype == .BF16 ? .bfloat16 : .float16
            if bits.contains(where: { nonFinite($0, p) }) { throw ILAError(file: file, "tensor \(name) contains NaN or Inf") }
            return WeightMatrix(halfBits: bits, precision: p, rows: rows, cols: cols)
        }
        let v = try checkpoint.floats(name)
        if v.contains(where: { !$0.isFinite }) { throw ILAError(file: file, "tensor \(name) contains NaN or Inf") }
        return WeightMatrix(float32: v, rows: rows, cols: cols)
    }
}
