import Foundation
import ILADiff

/// A fixed-size, zero-initialised Float32 buffer owning its memory. The engine's tensors are
/// these, addressed row-major by the code that uses them; raw pointers stay inside the engine.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let p: UnsafeMutablePointer<Float>

    public init(_ count: Int) {
        self.count = count
        p = .allocate(capacity: max(count, 1))
        p.initialize(repeating: 0, count: max(count, 1))
    }

    public convenience init(_ values: [Float]) {
        self.init(values.count)
        values.withUnsafeBufferPointer { src in
            if let b = src.baseAddress { p.update(from: b, count: values.count) }
        }
    }

    deinit { p.deallocate() }

    public func zero() { p.update(repeating: 0, count: count) }
    public var array: [Float] { Array(UnsafeBufferPointer(start: p, count: count)) }
    @inlinable public subscript(i: Int) -> Float {
        get { p[i] }
        set { p[i] = newValue }
    }
}
