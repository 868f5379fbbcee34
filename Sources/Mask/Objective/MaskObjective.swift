import Foundation
import ILAEngine
import ILAModel

/// The ILA objective over mask logits s (DESIGN.md section 1):
///
///     J(s) = NLL(θ0 + Σ σ(s_i)·Δ_i; batch) + λ · (1/N) Σ σ(s_i)
///
/// NLL is the token-weighted mean over every response token of the batch.
public struct MaskObjective: Sendable {
    public var lambda: Double

    public init(lambda: Double) { self.lambda = lambda }

    public struct Value: Sendable {
        /// J(s)
        public var j: Double
        /// Mean response-token NLL of the batch.
        public var nll: Double
        /// dJ/ds, one per layer.
        public var gradient: [Double]
        public var tokens: Int
    }

    @inline(__always) public static func sigmoid(_ s: Double) -> Double { 1 / (1 + exp(-s)) }

    /// γ = σ(s) as the engine's Float32 mask.
    public static func gamma(_ s: [Double]) -> [Float] { s.map { Float(sigmoid($0)) } }

    /// J and dJ/ds at s on `rows`.
    public func evaluate(engine: TransformerEngine, rows: [TokenizedRow], scores s: [Double]) throws -> Value {
        let r = try engine.gradient(rows: rows, gamma: Self.gamma(s))
        return combine(result: r, scores: s)
    }

    /// Builds J and dJ/ds from an engine result (Σ NLL and d Σ NLL / dγ).
    public func combine(result r: EngineResult, scores s: [Double]) -> Value {
        let n = Double(s.count)
        let tokens = max(r.tokens, 1)
        let nll = r.tokens > 0 ? r.nllSum / Double(tokens) : 0
        var sumGamma = 0.0
        var grad = [Double](repeating: 0, count: s.count)
        for i in 0..<s.count {
            let g = Self.sigmoid(s[i])
            sumGamma += g
            let dNll = r.tokens > 0 ? r.dNllSumDGamma[i] / Double(tokens) : 0
            grad[i] = (dNll + lambda / n) * g * (1 - g)
        }
        return Value(j: nll + lambda * sumGamma / n, nll: nll, gradient: grad, tokens: r.tokens)
    }
}

/// Adam (Kingma & Ba, as torch.optim.Adam without weight decay or amsgrad).
public struct AdamOptimizer: Codable, Sendable, Equatable {
    public var lr: Double
    public var beta1: Double
    public var beta2: Double
    public var eps: Double
    public var step: Int = 0
    public var m: [Double]
    public var v: [Double]

    public init(count: Int, lr: Double, beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8) {
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        m = [Double](repeating: 0, count: count)
        v = [Double](repeating: 0, count: count)
    }

    /// One update of `params` along `grad`, exactly torch's formula:
    /// m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ), p −= lr·m̂/(√v̂ + ε).
    public mutating func update(_ params: inout [Double], grad: [Double]) {
        step += 1
        let bc1 = 1 - pow(beta1, Double(step))
        let bc2 = 1 - pow(beta2, Double(step))
        for i in 0..<params.count {
            m[i] = beta1 * m[i] + (1 - beta1) * grad[i]
            v[i] = beta2 * v[i] + (1 - beta2) * grad[i] * grad[i]
            let denom = (v[i] / bc2).squareRoot() + eps
            params[i] -= lr * (m[i] / bc1) / denom
        }
    }
}
