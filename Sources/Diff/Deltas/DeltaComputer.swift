import Foundation
import ILABLAS

/// What ALIGNED is: a full model checkpoint or a LoRA adapter.
public enum AlignedCheckpoint: Sendable {
    case full(ModelCheckpoint)
    case lora(LoRAAdapter)

    /// Opens a path as an adapter directory if it has adapter_config.json, else as a model.
    public static func open(_ path: String) throws -> AlignedCheckpoint {
        LoRAAdapter.isAdapterDirectory(path) ? .lora(try LoRAAdapter(path: path)) : .full(try ModelCheckpoint(path: path))
    }

    public var kind: String {
        if case .lora = self { return "lora" }
        return "full"
    }
}

/// Options of `ila-diff`.
public struct DiffOptions: Sendable {
    /// Compress full deltas to rank-R factors by truncated SVD.
    public var rank: Int?
    /// Restrict to layers whose name matches (search semantics, like Python's `re.search`).
    public var include: String?
    public init(rank: Int? = nil, include: String? = nil) {
        self.rank = rank
        self.include = include
    }
}

/// Computes per-layer deltas between a base checkpoint and its aligned version, one layer at a
/// time, so memory stays near the size of the largest tensor.
public struct DeltaComputer {
    public let base: ModelCheckpoint
    public let aligned: AlignedCheckpoint
    public let layers: [LinearLayer]
    public let options: DiffOptions

    public init(base: ModelCheckpoint, aligned: AlignedCheckpoint, options: DiffOptions = DiffOptions()) throws {
        self.base = base
        self.aligned = aligned
        self.options = options
        let baseLayers = LinearLayer.layers(in: base)
        guard !baseLayers.isEmpty else {
            throw ILAError(file: base.path, "has no linear layers named model.layers.<n>.(self_attn|mlp).<q|k|v|o|gate|up|down>_proj.weight")
        }
        var selected: [LinearLayer]
        switch aligned {
        case .full(let a):
            let alignedLayers = LinearLayer.layers(in: a)
            let baseSet = Set(baseLayers)
            for l in alignedLayers where !baseSet.contains(l) {
                throw ILAError(file: a.file(of: l.weightName) ?? a.path, "tensor \(l.weightName) has no counterpart in base \(base.path)")
            }
            selected = baseLayers
        case .lora(let adapter):
            let baseSet = Set(baseLayers)
            for l in adapter.layers where !baseSet.contains(l) {
                throw ILAError(file: adapter.weights.path, "adapter targets \(l.name), which base \(base.path) does not have")
            }
            selected = adapter.layers
        }
        if let pattern = options.include {
            let re: NSRegularExpression
            do { re = try NSRegularExpression(pattern: pattern) } catch {
                throw ILAError("--include: \(pattern) is not a valid regular expression")
            }
            selected = selected.filter { re.firstMatch(in: $0.name, range: NSRange($0.name.startIndex..., in: $0.name)) != nil }
            guard !selected.isEmpty else { throw ILAError("--include: \(pattern) matches no linear layer") }
        }
        if let r = options.rank, r < 1 { throw ILAError("--rank must be at least 1, got \(r)") }
        // Check every selected layer's presence, shape and dtype from the headers alone, so a
        // mismatch is reported before any tensor is decoded or any output is written.
        for l in selected {
            let w = l.weightName
            guard let bi = base.info(w) else { throw ILAError(file: base.path, "missing tensor \(w)") }
            guard bi.dtype.isWidenableFloat else {
                throw ILAError(file: base.file(of: w) ?? base.path, "tensor \(w) has dtype \(bi.dtype.rawValue); only F32, F16 and BF16 are supported for weights")
            }
            guard case .full(let a) = aligned else { continue }
            guard let ai = a.info(w) else {
                throw ILAError(file: a.path, "missing tensor \(w) (present in base)")
            }
            guard ai.shape == bi.shape else {
                throw ILAError(file: a.file(of: w) ?? a.path, "tensor \(w) has shape \(ai.shape) but base has \(bi.shape)")
            }
            guard ai.dtype.isWidenableFloat else {
                throw ILAError(file: a.file(of: w) ?? a.path, "tensor \(w) has dtype \(ai.dtype.rawValue); only F32, F16 and BF16 are supported for weights")
            }
        }
        layers = selected
    }

    /// Computes one layer's delta.
    public func delta(for layer: LinearLayer) throws -> LayerDelta {
        let w = layer.weightName
        guard let bi = base.info(w) else { throw ILAError(file: base.path, "missing tensor \(w)") }
        let (outF, inF) = (bi.shape[0], bi.shape[1])
        if case .full(let a) = aligned, let ai = a.info(w), ai.shape == bi.shape {
            return try fullDelta(layer, a: a, outF: outF, inF: inF)
        }
        let w0 = try base.floats(w)
        let normBase = frobenius(w0)
        guard normBase.isFinite else {
            throw ILAError(file: base.file(of: w) ?? base.path, "tensor \(w) contains NaN or Inf")
        }
        switch aligned {
        case .full(let a):
            guard let ai = a.info(w) else {
                throw ILAError(file: a.path, "missing tensor \(w) (present in base)")
            }
            guard ai.shape == bi.shape else {
                throw ILAError(file: a.file(of: w) ?? a.path, "tensor \(w) has shape \(ai.shape) but base has \(bi.shape)")
            }
            var d = try a.floats(w)
            for i in 0..<d.count { d[i] -= w0[i] }
            let nd = frobenius(d)
            guard nd.isFinite else {
                throw ILAError(file: a.file(of: w) ?? a.path, "layer \(layer.name): delta contains NaN or Inf")
            }
            var delta = LayerDelta(layer: layer, outFeatures: outF, inFeatures: inF, payload: .full(d),
                                   normDelta: nd, normBase: normBase)
            if let r = options.rank { try compress(&delta, rank: r) }
            return delta
        case .lora(let adapter):
            let f = try adapter.factors(layer)
            guard f.outFeatures == outF, f.inFeatures == inF else {
                throw ILAError(file: adapter.weights.path, "\(layer.name): LoRA factors give shape [\(f.outFeatures), \(f.inFeatures)] but base has [\(outF), \(inF)]")
            }
            let nd = loraNorm(a: f.a, b: f.b, rank: f.rank, inF: inF, outF: outF) * Double(abs(f.scale))
            guard nd.isFinite else {
                throw ILAError(file: adapter.weights.path, "layer \(layer.name): delta contains NaN or Inf")
            }
            return LayerDelta(layer: layer, outFeatures: outF, inFeatures: inF,
                              payload: .factors(a: f.a, b: f.b, rank: f.rank, scale: f.scale),
                              normDelta: nd, normBase: normBase)
        }
    }

    /// A full fine-tune's Δ = W_aligned − W0 in one pass over both mapped tensors: widening,
    /// subtraction and both norms fused (the same values and norms as widening each tensor with
    /// `floats` and subtracting, up to the order of the norms' Double sums).
    private func fullDelta(_ layer: LinearLayer, a: ModelCheckpoint, outF: Int, inF: Int) throws -> LayerDelta {
        let w = layer.weightName
        let n = outF * inF
        var normBase = 0.0, normDelta = 0.0
        let d = try base.withTensorBytes(w) { bi, bb in
            try a.withTensorBytes(w) { ai, ab in
                try [Float](unsafeUninitializedCapacity: n) { buf, initialized in
                    guard n > 0 else { initialized = 0; return }
                    guard let bp = bb.baseAddress, let ap = ab.baseAddress, bb.count == n * bi.dtype.size,
                          ab.count == n * ai.dtype.size else {
                        throw ILAError(file: a.file(of: w) ?? a.path, "tensor \(w): stored size does not match its shape")
                    }
                    adviseHugePages(buf.baseAddress!, byteCount: n * 4)
                    (normBase, normDelta) = try subtract(bp, bi.dtype, ap, ai.dtype, n, buf.baseAddress!)
                    initialized = n
                }
            }
        }
        guard normBase.isFinite else {
            throw ILAError(file: base.file(of: w) ?? base.path, "tensor \(w) contains NaN or Inf")
        }
        guard normDelta.isFinite else {
            throw ILAError(file: a.file(of: w) ?? a.path, "layer \(layer.name): delta contains NaN or Inf")
        }
        var delta = LayerDelta(layer: layer, outFeatures: outF, inFeatures: inF, payload: .full(d),
                               normDelta: normDelta, normBase: normBase)
        if let r = options.rank { try compress(&delta, rank: r) }
        return delta
    }

    /// Truncated SVD: Δ ≈ B·A with B = U_R·diag(S_R) [out, R], A = V_Rᵀ [R, in], scale 1.
    func compress(_ delta: inout LayerDelta, rank: Int) throws {
        guard case .full(let d) = delta.payload else { return }
        let (m, n) = (delta.outFeatures, delta.inFeatures)
        let p = min(m, n)
        let r = min(rank, p)
        let (u, s, vt): ([Float], [Float], [Float])
        do { (u, s, vt) = try BLAS.svd(d, m: m, n: n) } catch {
            throw ILAError("\(delta.layer.name): truncated SVD: \(error)")
        }
        var b = [Float](repeating: 0, count: m * r)
        for i in 0..<m { for j in 0..<r { b[i * r + j] = u[i * p + j] * s[j] } }
        let a = Array(vt[0..<(r * n)])
        // Relative error from the exact residual, not from the discarded singular values, so that
        // the number reflects what is stored (float32 rounding included).
        let approx = LayerDelta(layer: delta.layer, outFeatures: m, inFeatures: n,
                                payload: .factors(a: a, b: b, rank: r, scale: 1), normDelta: 0, normBase: 0).dense()
        var err = 0.0
        for i in 0..<d.count { let e = Double(d[i] - approx[i]); err += e * e }
        delta.payload = .factors(a: a, b: b, rank: r, scale: 1)
        delta.reconstructionError = delta.normDelta > 0 ? err.squareRoot() / delta.normDelta : 0
    }
}

/// ‖x‖F accumulated in Double.
public func frobenius(_ x: [Float]) -> Double {
    var s = 0.0
    for v in x { s += Double(v) * Double(v) }
    return s.squareRoot()
}

/// ‖B·A‖F from the r×r Gram matrices: ‖BA‖² = trace((BᵀB)(AAᵀ)).
func loraNorm(a: [Float], b: [Float], rank r: Int, inF: Int, outF: Int) -> Double {
    var ga = [Double](repeating: 0, count: r * r), gb = [Double](repeating: 0, count: r * r)
    for i in 0..<r { for j in 0..<r {
        var s = 0.0
        for k in 0..<inF { s += Double(a[i * inF + k]) * Double(a[j * inF + k]) }
        ga[i * r + j] = s
        var t = 0.0
        for k in 0..<outF { t += Double(b[k * r + i]) * Double(b[k * r + j]) }
        gb[i * r + j] = t
    } }
    var tr = 0.0
    for i in 0..<r { for j in 0..<r { tr += gb[i * r + j] * ga[j * r + i] } }
    return max(tr, 0).squareRoot()
}

// MARK: - Fused widening and subtraction

/// Widens one stored element to Float.
private protocol WeightElement {
    static func load(_ p: UnsafeRawPointer, _ i: Int) -> Float
}
private enum BF16Element: WeightElement {
    @inline(__always) static func load(_ p: UnsafeRawPointer, _ i: Int) -> Float {
        Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16)
    }
}
private enum F16Element: WeightElement {
    @inline(__always) static func load(_ p: UnsafeRawPointer, _ i: Int) -> Float {
        Float(halfBits: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian)
    }
}
private enum F32Element: WeightElement {
    @inline(__always) static func load(_ p: UnsafeRawPointer, _ i: Int) -> Float {
        Float(bitPattern: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian)
    }
}

/// out[i] = aligned[i] − base[i] for `n` elements; returns (‖base‖F, ‖out‖F), summed in Double
/// over four interleaved partial sums.
private func subtract(_ b: UnsafeRawPointer, _ bt: SafetensorsDType, _ a: UnsafeRawPointer, _ at: SafetensorsDType,
                      _ n: Int, _ out: UnsafeMutablePointer<Float>) throws -> (Double, Double) {
    func typed<B: WeightElement>(_: B.Type) throws -> (Double, Double) {
        switch at {
        case .BF16: return kernel(B.self, BF16Element.self)
        case .F16: return kernel(B.self, F16Element.self)
        case .F32: return kernel(B.self, F32Element.self)
        default: throw ILAError("dtype \(at.rawValue) cannot be widened")
        }
    }
    func kernel<B: WeightElement, A: WeightElement>(_: B.Type, _: A.Type) -> (Double, Double) {
        var sb = SIMD4<Double>(), sd = SIMD4<Double>()
        var i = 0
        while i + 4 <= n {
            let w0 = SIMD4<Float>(B.load(b, i), B.load(b, i + 1), B.load(b, i + 2), B.load(b, i + 3))
            let w1 = SIMD4<Float>(A.load(a, i), A.load(a, i + 1), A.load(a, i + 2), A.load(a, i + 3))
            let d = w1 - w0
            out[i] = d[0]; out[i + 1] = d[1]; out[i + 2] = d[2]; out[i + 3] = d[3]
            let w0d = SIMD4<Double>(Double(w0[0]), Double(w0[1]), Double(w0[2]), Double(w0[3]))
            let dd = SIMD4<Double>(Double(d[0]), Double(d[1]), Double(d[2]), Double(d[3]))
            sb += w0d * w0d
            sd += dd * dd
            i += 4
        }
        var tb = sb.sum(), td = sd.sum()
        while i < n {
            let w0 = B.load(b, i), d = A.load(a, i) - w0
            out[i] = d
            tb += Double(w0) * Double(w0)
            td += Double(d) * Double(d)
            i += 1
        }
        return (tb.squareRoot(), td.squareRoot())
    }
    switch bt {
    case .BF16: return try typed(BF16Element.self)
    case .F16: return try typed(F16Element.self)
    case .F32: return try typed(F32Element.self)
    default: throw ILAError("dtype \(bt.rawValue) cannot be widened")
    }
}

/// Asks for transparent huge pages on the 2 MiB-aligned interior of a fresh, untouched buffer
/// (a 64 MiB delta otherwise costs 16k page faults and as many page clears and unmaps, 8% of a
/// full diff's CPU). A hint: ignored where THP is off or unsupported.
private func adviseHugePages(_ p: UnsafeMutableRawPointer, byteCount: Int) {
    #if os(Linux)
    let huge = 2 << 20
    guard byteCount >= 2 * huge else { return }
    let start = (Int(bitPattern: p) + huge - 1) / huge * huge
    let end = (Int(bitPattern: p) + byteCount) / huge * huge
    guard end > start, let aligned = UnsafeMutableRawPointer(bitPattern: start) else { return }
    _ = madvise(aligned, end - start, 14)  // MADV_HUGEPAGE
    #endif
}
