import Foundation
import ILADiff

/// One transformer block's weights, by the spec's tensor names.
public final class BlockWeights: @unchecked Sendable {
    /// Norm weights [hidden] as the engine multiplies them (Gemma's 1 + w already added).
    public let inputNorm: FloatBuffer
    public let mlpNorm: FloatBuffer
    public let attentionOutNorm: FloatBuffer?
    public let mlpOutNorm: FloatBuffer?
    /// q/k norms [head_dim] (Qwen3, Gemma 3).
    public let qNorm: FloatBuffer?
    public let kNorm: FloatBuffer?
    /// Linear weights by kind, row-major [out, in], in the checkpoint's dtype.
    public let linear: [LayerKind: WeightMatrix]
    /// Biases [out] of the kinds that have them.
    public let bias: [LayerKind: FloatBuffer]

    init(inputNorm: FloatBuffer, mlpNorm: FloatBuffer, attentionOutNorm: FloatBuffer?, mlpOutNorm: FloatBuffer?,
         qNorm: FloatBuffer?, kNorm: FloatBuffer?, linear: [LayerKind: WeightMatrix], bias: [LayerKind: FloatBuffer]) {
        self.inputNorm = inputNorm
        self.mlpNorm = mlpNorm
        self.attentionOutNorm = attentionOutNorm
        self.mlpOutNorm = mlpOutNorm
        self.qNorm = qNorm
        self.kNorm = kNorm
        self.linear = linear
        self.bias = bias
    }

    /// A block another pipeline stage holds (nothing is loaded; the engine never runs it).
    static var elsewhere: BlockWeights {
        BlockWeights(inputNorm: FloatBuffer(0), mlpNorm: FloatBuffer(0), attentionOutNorm: nil, mlpOutNorm: nil,
                     qNorm: nil, kNorm: nil, linear: [:], bias: [:])
    }
}

/// All weights of a model, loaded by its TransformerSpec: matrices in the checkpoint's dtype
/// (bf16 stays bf16), norms and biases in float32.
public final class ModelWeights: @unchecked Sendable {
    public let spec: TransformerSpec
    /// [vocab, hidden]
    public let embed: WeightMatrix
    public let blocks: [BlockWeights]
    /// [hidden], as multiplied (Gemma: 1 + w)
    public let finalNorm: FloatBuffer
    /// [vocab, hidden]; the embedding itself when tied.
    public let lmHead: WeightMatrix
    /// What was loaded: the whole model, or one pipeline stage's blocks (the others are empty).
    public let part: ModelPart

    /// Bytes the weights hold.
    public var bytes: Int {
        var n = embed.bytes + (lmHead === embed ? 0 : lmHead.bytes) + 4 * finalNorm.count
        for b in blocks {
            n += b.linear.values.map(\.bytes).reduce(0, +) + 4 * b.bias.values.map(\.count).reduce(0, +)
            n += 4 * ([b.inputNorm, b.mlpNorm, b.attentionOutNorm, b.mlpOutNorm, b.qNorm, b.kNorm].compactMap { $0?.count }.reduce(0, +))
        }
        return n
    }

    init(spec: TransformerSpec, embed: WeightMatrix, blocks: [BlockWeights], finalNorm: FloatBuffer, lmHead: WeightMatrix,
         part: ModelPart) {
        self.spec = spec
        self.part = part
        self.embed = embed
        self.blocks = blocks
        self.finalNorm = finalNorm
        self.lmHead = lmHead
    }

    /// Loads every tensor the architecture needs, checking names and shapes; a missing or
    /// unexpected tensor is an error naming it. With `widen`, bf16/f16 matrices become float32.
    /// With `part`, only that part's tensors are read (a pipeline stage); the others are only named.
    public static func load(spec: TransformerSpec, checkpoint: ModelCheckpoint, widen: Bool = false,
                            part: ModelPart? = nil) throws -> ModelWeights {
        let part = part ?? .whole(spec)
        var used = Set<String>()
        func values(_ name: String, _ shape: [Int]) throws -> [Float] {
            guard let info = checkpoint.info(name) else {
                throw ILAError(file: checkpoint.path, "missing tensor \(name)")
            }
            guard info.shape == shape else {
                throw ILAError(file: checkpoint.file(of: name) ?? checkpoint.path, "tensor \(name) has shape \(info.shape), config.json implies \(shape)")
            }
            used.insert(name)
            let v = try checkpoint.floats(name)
            for x in v where !x.isFinite {
                throw ILAError(file: checkpoint.file(of: name) ?? checkpoint.path, "tensor \(name) contains NaN or Inf")
            }
            return v
        }
        func tensor(_ name: String, _ shape: [Int]) throws -> FloatBuffer { FloatBuffer(try values(name, shape)) }
        func matrix(_ name: String, _ rows: Int, _ cols: Int) throws -> WeightMatrix {
            guard let info = checkpoint.info(name) else { throw ILAError(file: checkpoint.path, "missing tensor \(name)") }
            guard info.shape == [rows, cols] else {
                throw ILAError(file: checkpoint.file(of: name) ?? checkpoint.path, "tensor \(name) has shape \(info.shape), config.json implies \([rows, cols])")
            }
            used.insert(name)
            return try WeightMatrix.load(name, rows: rows, cols: cols, from: checkpoint, widen: widen)
        }
        func norm(_ name: String, _ n: Int) throws -> FloatBuffer {
            let w = try values(name, [n])
            switch spec.norm {
            case .rms: return FloatBuffer(w)
            case .rmsOnePlusWeight: return FloatBuffer(w.map { 1 + $0 })
            }
        }
        let s = spec, h = s.hiddenSize, n = s.names
        let nothing = WeightMatrix(float32: [], rows: 0, cols: h)
        let embed: WeightMatrix
        if part.holds(tensor: n.embed, spec: s) { embed = try matrix(n.embed, s.vocabSize, h) } else { embed = nothing; used.insert(n.embed) }
        var blocks: [BlockWeights] = []
        for b in 0..<s.blocks {
            let p = "\(n.blockPrefix)\(b)."
            guard part.blocks.contains(b) else {
                // Another stage's: its tensors are that stage's to read and check.
                for name in checkpoint.names where name.hasPrefix(p) { used.insert(name) }
                blocks.append(.elsewhere)
                continue
            }
            var linear: [LayerKind: WeightMatrix] = [:]
            var bias: [LayerKind: FloatBuffer] = [:]
            for l in s.linears {
                linear[l.kind] = try matrix(p + l.path + ".weight", l.outFeatures, l.inFeatures)
                if l.bias { bias[l.kind] = try tensor(p + l.path + ".bias", [l.outFeatures]) }
            }
            blocks.append(BlockWeights(
                inputNorm: try norm(p + n.inputNorm, h), mlpNorm: try norm(p + n.mlpNorm, h),
                attentionOutNorm: try n.attentionOutNorm.map { try norm(p + $0, h) },
                mlpOutNorm: try n.mlpOutNorm.map { try norm(p + $0, h) },
                qNorm: s.qkNorm ? try n.qNorm.map { try norm(p + $0, s.headDim) } : nil,
                kNorm: s.qkNorm ? try n.kNorm.map { try norm(p + $0, s.headDim) } : nil,
                linear: linear, bias: bias))
        }
        let finalNorm = part.head ? try norm(n.finalNorm, h) : FloatBuffer(0)
        let lmHead: WeightMatrix
        if !part.head {
            lmHead = nothing
            for name in [n.finalNorm, n.lmHead] { used.insert(name) }
        } else if s.tieWordEmbeddings {
            lmHead = embed
            if checkpoint.contains(n.lmHead) { used.insert(n.lmHead) }
        } else {
            lmHead = try matrix(n.lmHead, s.vocabSize, h)
        }
        for name in checkpoint.names where !used.contains(name) && !name.hasSuffix("rotary_emb.inv_freq") {
            throw ILAError(file: checkpoint.file(of: name) ?? checkpoint.path, "unexpected tensor \(name) for \(s.architecture) with \(s.blocks) blocks")
        }
        return ModelWeights(spec: s, embed: embed, blocks: blocks, finalNorm: finalNorm, lmHead: lmHead, part: part)
    }
}
