import Foundation
import ILABLAS

/// One linear layer's update Δ = W_aligned − W_base, as stored in deltas.h5 (DESIGN.md section 4).
public struct LayerDelta: Sendable {
    public enum Payload: Sendable {
        /// Δ itself, row-major [out, in].
        case full([Float])
        /// Δ = scale · B·A with A row-major [r, in] and B row-major [out, r].
        case factors(a: [Float], b: [Float], rank: Int, scale: Float)
    }

    public let layer: LinearLayer
    /// [out, in]
    public let outFeatures: Int
    public let inFeatures: Int
    public var payload: Payload
    /// ‖Δ‖F
    public var normDelta: Double
    /// ‖W0‖F
    public var normBase: Double
    /// ‖Δ − Δ_r‖F / ‖Δ‖F after `--rank R` compression, else nil.
    public var reconstructionError: Double?

    public init(layer: LinearLayer, outFeatures: Int, inFeatures: Int, payload: Payload,
                normDelta: Double, normBase: Double, reconstructionError: Double? = nil) {
        self.layer = layer
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.payload = payload
        self.normDelta = normDelta
        self.normBase = normBase
        self.reconstructionError = reconstructionError
    }

    public var relChange: Double { normBase > 0 ? normDelta / normBase : (normDelta > 0 ? .infinity : 0) }
    public var shape: [Int] { [outFeatures, inFeatures] }

    /// Δ materialised, row-major [out, in].
    public func dense() -> [Float] {
        switch payload {
        case .full(let d): return d
        case .factors(let a, let b, let r, let scale):
            var out = [Float](repeating: 0, count: outFeatures * inFeatures)
            b.withUnsafeBufferPointer { bp in a.withUnsafeBufferPointer { ap in out.withUnsafeMutableBufferPointer { op in
                BLAS.gemm(m: outFeatures, n: inFeatures, k: r, alpha: scale, bp.baseAddress!, ap.baseAddress!, op.baseAddress!)
            } } }
            return out
        }
    }
}
