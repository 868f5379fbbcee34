import Foundation
import ILADiff

/// One rope dictionary of config.json (`rope_parameters`, or the older `rope_scaling` whose type
/// key is `type`). CodingKeys are transformers' keys; every key transformers reads is here.
public struct RopeParameters: Codable, Sendable, Equatable {
    public var ropeType: String?
    public var type: String?
    public var ropeTheta: Double?
    public var factor: Double?
    public var originalMaxPositionEmbeddings: Int?
    public var lowFreqFactor: Double?
    public var highFreqFactor: Double?
    public var attentionFactor: Double?
    public var betaFast: Double?
    public var betaSlow: Double?
    public var mscale: Double?
    public var mscaleAllDim: Double?
    public var truncate: Bool?
    public var shortFactor: [Double]?
    public var longFactor: [Double]?
    public var partialRotaryFactor: Double?

    enum CodingKeys: String, CodingKey {
        case ropeType = "rope_type", type, ropeTheta = "rope_theta", factor
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
        case attentionFactor = "attention_factor", betaFast = "beta_fast", betaSlow = "beta_slow"
        case mscale, mscaleAllDim = "mscale_all_dim", truncate
        case shortFactor = "short_factor", longFactor = "long_factor"
        case partialRotaryFactor = "partial_rotary_factor"
    }

    public init() {}

    /// `rope_type`, else the older `type`, else default.
    public var resolvedType: String { ropeType ?? type ?? "default" }
}

/// The rotary embedding of one layer type, computed exactly as transformers'
/// `modeling_rope_utils.py`: inverse frequencies (float32) and the attention scaling that
/// multiplies cos and sin. `dynamic` and `longrope` depend on the row's length.
public struct RotaryEmbedding: Sendable, Hashable {
    public enum Variant: Sendable, Hashable {
        case fixed(invFreq: [Float], attentionScaling: Float)
        /// Dynamic NTK: base grows with the row's length beyond `maxPositions`.
        case dynamic(base: Double, factor: Double, maxPositions: Int)
        /// Short factors up to `originalMax` tokens, long factors beyond.
        case longrope(short: [Float], long: [Float], originalMax: Int, attentionScaling: Float)
    }
    public let variant: Variant
    /// Rotated dimensions per head (head_dim · partial_rotary_factor), even.
    public let rotaryDim: Int
    public let headDim: Int
    public let typeName: String

    /// - Parameters: `maxPositionEmbeddings`: config.json's `max_position_embeddings`;
    ///   `originalMax`: a top-level `original_max_position_embeddings` (Phi-3 keeps it there).
    public init(_ p: RopeParameters, theta defaultTheta: Double, headDim: Int, maxPositionEmbeddings: Int?,
                originalMax topOriginal: Int?, file: String) throws {
        let type = p.resolvedType
        typeName = type
        self.headDim = headDim
        let base = p.ropeTheta ?? defaultTheta
        guard base > 0, base.isFinite else { throw ILAError(file: file, "rope_theta \(base) must be positive") }
        let partial = p.partialRotaryFactor ?? 1
        guard partial > 0, partial <= 1 else { throw ILAError(file: file, "partial_rotary_factor \(partial) is out of (0, 1]") }
        let dim = Int(Double(headDim) * partial)
        guard dim >= 2, dim % 2 == 0 else {
            throw ILAError(file: file, "rotary dimension \(dim) (head_dim × partial_rotary_factor) must be even and at least 2")
        }
        rotaryDim = dim
        func need<T>(_ v: T?, _ key: String) throws -> T {
            guard let v else { throw ILAError(file: file, "rope type \(type) needs \(key)") }
            return v
        }
        func positiveFactor() throws -> Double {
            let f = try need(p.factor, "factor")
            guard f > 0, f.isFinite else { throw ILAError(file: file, "rope factor \(f) must be positive") }
            return f
        }
        let plain = Self.defaultInvFreq(base: base, dim: dim)
        // llama3, yarn and longrope take original_max_position_embeddings from the top level
        // (Phi-3), else the rope dict, else max_position_embeddings (transformers' standardize_rope_params).
        func originalMax() throws -> Int {
            let v = try need(topOriginal ?? p.originalMaxPositionEmbeddings ?? maxPositionEmbeddings, "original_max_position_embeddings")
            guard v > 0 else { throw ILAError(file: file, "original_max_position_embeddings \(v) must be positive") }
            return v
        }
        switch type {
        case "default":
            variant = .fixed(invFreq: plain, attentionScaling: 1)
        case "linear":
            let f = Float(try positiveFactor())
            variant = .fixed(invFreq: plain.map { $0 / f }, attentionScaling: 1)
        case "dynamic":
            let mp = try need(maxPositionEmbeddings, "max_position_embeddings")
            variant = .dynamic(base: base, factor: try positiveFactor(), maxPositions: mp)
        case "llama3":
            let factor = Float(try positiveFactor())
            let low = Float(try need(p.lowFreqFactor, "low_freq_factor")), high = Float(try need(p.highFreqFactor, "high_freq_factor"))
            guard high != low else { throw ILAError(file: file, "rope llama3: low_freq_factor equals high_freq_factor") }
            let old = Float(try originalMax())
            let lowWavelen = old / low, highWavelen = old / high
            variant = .fixed(invFreq: plain.map { f in
                let wavelen = 2 * Float.pi / f
                var g = wavelen > lowWavelen ? f / factor : f
                if !(wavelen < highWavelen) && !(wavelen > lowWavelen) {
                    let smooth = (old / wavelen - low) / (high - low)
                    g = (1 - smooth) * g / factor + smooth * g
                }
                return g
            }, attentionScaling: 1)
        case "yarn":
            let omax = try originalMax()
            let factor = try p.factor ?? Double(need(maxPositionEmbeddings, "max_position_embeddings")) / Double(omax)
            func mscale(_ scale: Double, _ m: Double = 1) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
            var attention = p.attentionFactor
            if attention == nil {
                if let m = p.mscale, let all = p.mscaleAllDim, m != 0, all != 0 {
                    attention = mscale(factor, m) / mscale(factor, all)
                } else {
                    attention = mscale(factor)
                }
            }
            let betaFast = (p.betaFast.flatMap { $0 == 0 ? nil : $0 }) ?? 32
            let betaSlow = (p.betaSlow.flatMap { $0 == 0 ? nil : $0 }) ?? 1
            func correctionDim(_ rotations: Double) -> Double {
                Double(dim) * log(Double(omax) / (rotations * 2 * Double.pi)) / (2 * log(base))
            }
            var lo = correctionDim(betaFast), hi = correctionDim(betaSlow)
            if p.truncate ?? true { lo = lo.rounded(.down); hi = hi.rounded(.up) }
            lo = max(lo, 0); hi = min(hi, Double(dim - 1))
            if lo == hi { hi += 0.001 }
            let fFactor = Float(factor)
            variant = .fixed(invFreq: (0..<(dim / 2)).map { i in
                // pos_freqs = base ** (2i / dim) in float32, as transformers computes it.
                let posFreq = Self.powFloat(base, Float(2 * i) / Float(dim))
                let extrapolation = 1 / posFreq, interpolation = 1 / (fFactor * posFreq)
                let ramp = min(max((Float(i) - Float(lo)) / Float(hi - lo), 0), 1)
                let extrapolationFactor = 1 - ramp
                return interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor
            }, attentionScaling: Float(attention!))
        case "longrope":
            let omax = try originalMax()
            let short = try need(p.shortFactor, "short_factor"), long = try need(p.longFactor, "long_factor")
            guard short.count == dim / 2, long.count == dim / 2 else {
                throw ILAError(file: file, "rope longrope: short_factor and long_factor need \(dim / 2) entries (rotary dim / 2), got \(short.count) and \(long.count)")
            }
            let factor = try p.factor ?? Double(need(maxPositionEmbeddings, "max_position_embeddings")) / Double(omax)
            var attention = p.attentionFactor
            if attention == nil {
                attention = factor <= 1 ? 1 : (1 + log(factor) / log(Double(omax))).squareRoot()
            }
            func inv(_ ext: [Double]) -> [Float] {
                (0..<(dim / 2)).map { i in 1 / (Float(ext[i]) * Self.powFloat(base, Float(2 * i) / Float(dim))) }
            }
            variant = .longrope(short: inv(short), long: inv(long), originalMax: omax, attentionScaling: Float(attention!))
        default:
            throw ILAError(file: file, "rope type \(type) is not supported (default, linear, dynamic, llama3, yarn, longrope)")
        }
    }

    /// base ** e with a float32 exponent, rounded to float32 (torch's float32 `pow`).
    static func powFloat(_ base: Double, _ e: Float) -> Float { Float(Foundation.pow(Double(Float(base)), Double(e))) }

    /// 1 / base ** (2i / dim), i < dim/2, in float32 as transformers computes it.
    static func defaultInvFreq(base: Double, dim: Int) -> [Float] {
        (0..<(dim / 2)).map { i in 1 / powFloat(base, Float(2 * i) / Float(dim)) }
    }

    /// Inverse frequencies and attention scaling for a row of `length` tokens (a row is its own
    /// sequence: dynamic and longrope choose by its length as transformers does for that row alone).
    public func frequencies(length: Int) -> (invFreq: [Float], scaling: Float) {
        switch variant {
        case .fixed(let f, let s): return (f, s)
        case .longrope(let short, let long, let omax, let s): return (length > omax ? long : short, s)
        case .dynamic(let base, let factor, let mp):
            let seq = Double(max(length, mp))
            let b = base * Foundation.pow(factor * seq / Double(mp) - (factor - 1), Double(rotaryDim) / Double(rotaryDim - 2))
            return (Self.defaultInvFreq(base: b, dim: rotaryDim), 1)
        }
    }

    /// Whether the tables depend on the row's length.
    public var dependsOnLength: Bool {
        if case .fixed = variant { return false }
        return true
    }

    /// cos/sin tables for positions 0..<positions.
    public func tables(positions: Int, length: Int? = nil) -> RopeTables {
        let (f, s) = frequencies(length: length ?? positions)
        return RopeTables(positions: positions, invFreq: f, scaling: s, headDim: headDim)
    }
}

/// cos/sin tables [positions, rotaryDim/2], as transformers computes them in float32
/// (angle = position · inv_freq in float32, then cos/sin times the attention scaling).
public struct RopeTables: Sendable {
    public let cos: [Float]
    public let sin: [Float]
    /// rotaryDim / 2: pairs (i, i + half) of the first rotaryDim features of each head rotate.
    public let half: Int
    public let headDim: Int
    public var positions: Int { half == 0 ? 0 : cos.count / half }

    init(positions: Int, invFreq: [Float], scaling: Float, headDim: Int) {
        half = invFreq.count
        self.headDim = headDim
        var c = [Float](repeating: 0, count: positions * half), s = c
        for i in 0..<half {
            for p in 0..<positions {
                let a = Float(p) * invFreq[i]
                c[p * half + i] = Float(Foundation.cos(Double(a))) * scaling
                s[p * half + i] = Float(Foundation.sin(Double(a))) * scaling
            }
        }
        cos = c
        sin = s
    }
}
