import Foundation
import ILAEngine
import ILAMask
import ILAModel

/// torch.optim.AdamW (its single-tensor CPU path) over a LoRA parameter table: float32 tensors,
/// the step's scalars (bias corrections, step size) in double as Python computes them.
///
///     p ← p·(1 − lr·wd)
///     m ← m + (1 − β1)·(g − m)                  (lerp)
///     v ← v·β2 + (1 − β2)·g·g
///     p ← p − (lr / (1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + ε)
public final class AdamW: @unchecked Sendable {
    public let beta1: Double, beta2: Double, eps: Double, weightDecay: Double
    /// Steps taken.
    public var step: Int
    /// First and second moments, laid out as the parameter table.
    public let m: [FloatBuffer], v: [FloatBuffer]

    public init(sizes: [Int], beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8, weightDecay: Double = 0) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        step = 0
        m = sizes.map { FloatBuffer($0) }
        v = sizes.map { FloatBuffer($0) }
    }

    /// One step at learning rate `lr` with the gradients in `params.gradients`.
    public func update(_ params: LoRAParameters, lr: Double) {
        step += 1
        let t = Double(step)
        let decay = Float(1 - lr * weightDecay)
        let w1 = Float(1 - beta1), b2 = Float(beta2), w2 = Float(1 - beta2)
        let bc1 = 1 - pow(beta1, t), bc2 = 1 - pow(beta2, t)
        let stepSize = Float(-(lr / bc1))
        let bc2Sqrt = Float(bc2.squareRoot())
        let epsF = Float(eps)
        for k in 0..<params.values.count {
            let p = params.values[k].p, g = params.gradients[k].p, mk = m[k].p, vk = v[k].p
            for i in 0..<params.values[k].count {
                if weightDecay != 0 { p[i] = p[i] * decay }
                let gi = g[i]
                mk[i] = mk[i] + w1 * (gi - mk[i])
                vk[i] = vk[i] * b2 + (w2 * gi) * gi
                let denom = vk[i].squareRoot() / bc2Sqrt + epsF
                p[i] = p[i] + (stepSize * mk[i]) / denom
            }
        }
    }
}

/// PEFT's default LoRA initialisation: A Kaiming-uniform with a = √5, i.e. uniform in
/// ±1/√in (nn.Linear's default), drawn from SplitMix64(seed) in table order; B = 0.
public enum LoRAInitialisation {
    public static func peftDefault(_ params: LoRAParameters, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for (i, l) in params.layers.enumerated() {
            let bound = Float(1 / Double(l.inFeatures).squareRoot())
            let a = params.a(i)
            for j in 0..<a.count { a[j] = (2 * Float(rng.next() >> 40) * 0x1p-24 - 1) * bound }
            params.b(i).zero()
        }
    }
}
