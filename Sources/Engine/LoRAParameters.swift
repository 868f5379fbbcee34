import Foundation
import ILADiff
import ILAModel

/// The trainable tensors of a LoRA run and their gradients (llm.c's ParameterTensors): for each
/// adapted linear layer i, A_i [r, in] and B_i [out, r], row-major as PEFT stores
/// `lora_A.weight` / `lora_B.weight`; the layer computes y = x·W0ᵀ (+ bias) + scale·(x·Aᵀ)·Bᵀ.
///
/// One table for values, one for gradients, both sized by `sizes`; the engine reads the values
/// in place (an optimizer step is seen by the next forward) and, with `accumulateGradients`,
/// adds d(Σ NLL)/dA and d(Σ NLL)/dB into `gradients`.
public final class LoRAParameters: @unchecked Sendable {
    public struct Layer: Sendable, Equatable {
        public var layer: LinearLayer
        public var rank: Int
        public var inFeatures: Int
        public var outFeatures: Int
        /// alpha/r, or alpha/√r with rsLoRA.
        public var scale: Float
        public init(layer: LinearLayer, rank: Int, inFeatures: Int, outFeatures: Int, scale: Float) {
            self.layer = layer
            self.rank = rank
            self.inFeatures = inFeatures
            self.outFeatures = outFeatures
            self.scale = scale
        }
    }

    public let layers: [Layer]
    /// Per layer: A then B. `values[2i]` is A_i [r, in], `values[2i + 1]` is B_i [out, r].
    public let values: [FloatBuffer]
    /// Gradients of Σ NLL, laid out as `values`.
    public let gradients: [FloatBuffer]

    /// Element counts of the tensors, in table order (A_0, B_0, A_1, B_1, ...).
    public static func sizes(_ layers: [Layer]) -> [Int] {
        layers.flatMap { [$0.rank * $0.inFeatures, $0.outFeatures * $0.rank] }
    }

    public init(layers: [Layer]) {
        self.layers = layers
        let sizes = Self.sizes(layers)
        values = sizes.map { FloatBuffer($0) }
        gradients = sizes.map { FloatBuffer($0) }
    }

    public var parameterCount: Int { Self.sizes(layers).reduce(0, +) }
    public func a(_ i: Int) -> FloatBuffer { values[2 * i] }
    public func b(_ i: Int) -> FloatBuffer { values[2 * i + 1] }
    public func gradA(_ i: Int) -> FloatBuffer { gradients[2 * i] }
    public func gradB(_ i: Int) -> FloatBuffer { gradients[2 * i + 1] }

    /// PEFT's tensor name of table entry `t` (without the adapter name, as save_pretrained writes it).
    public func tensorName(_ t: Int) -> String {
        "base_model.model.\(layers[t / 2].layer.name).\(t % 2 == 0 ? "lora_A" : "lora_B").weight"
    }

    /// The shape of table entry `t`.
    public func shape(_ t: Int) -> [Int] {
        let l = layers[t / 2]
        return t % 2 == 0 ? [l.rank, l.inFeatures] : [l.outFeatures, l.rank]
    }

    public func zeroGradients() { for g in gradients { g.zero() } }

    /// Σ over every gradient element of g² (for gradient-norm clipping), in Double.
    public func gradientSquaredNorm() -> Double {
        var s = 0.0
        for g in gradients { for i in 0..<g.count { s += Double(g[i]) * Double(g[i]) } }
        return s
    }
}
