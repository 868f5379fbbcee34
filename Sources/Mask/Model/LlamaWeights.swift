import Foundation
import ILADiff

/// One transformer block's weights, checkpoint names kept verbatim in `LlamaWeights.load`.
public final class BlockWeights: @unchecked Sendable {
    /// [hidden]
    public let inputNorm: FloatBuffer
    public let postAttentionNorm: FloatBuffer
    /// Linear weights by kind, row-major [out, in].
    public let linear: [LayerKind: FloatBuffer]
    /// q/k/v biases (Qwen2), [out] each, when attention_bias.
    public let bias: [LayerKind: FloatBuffer]

    init(inputNorm: FloatBuffer, postAttentionNorm: FloatBuffer, linear: [LayerKind: FloatBuffer], bias: [LayerKind: FloatBuffer]) {
        self.inputNorm = inputNorm
        self.postAttentionNorm = postAttentionNorm
        self.linear = linear
        self.bias = bias
    }
}

/// All weights of a Llama-family model, Float32.
public final class LlamaWeights: @unchecked Sendable {
    public let config: LlamaConfig
    /// [vocab, hidden]
    public let embed: FloatBuffer
    public let blocks: [BlockWeights]
    /// [hidden]
    public let finalNorm: FloatBuffer
    /// [vocab, hidden]; the embedding itself when tied.
    public let lmHead: FloatBuffer

    init(config: LlamaConfig, embed: FloatBuffer, blocks: [BlockWeights], finalNorm: FloatBuffer, lmHead: FloatBuffer) {
        self.config = config
        self.embed = embed
        self.blocks = blocks
        self.finalNorm = finalNorm
        self.lmHead = lmHead
    }

    /// Loads every tensor the architecture needs, checking names and shapes; a missing or
    /// unexpected tensor is an error naming it.
    public static func load(config: LlamaConfig, checkpoint: ModelCheckpoint) throws -> LlamaWeights {
        var used = Set<String>()
        func tensor(_ name: String, _ shape: [Int]) throws -> FloatBuffer {
            guard let info = checkpoint.info(name) else {
                throw ILAError(file: checkpoint.path, "missing tensor \(name)")
            }
            guard info.shape == shape else {
                throw ILAError(file: checkpoint.file(of: name) ?? checkpoint.path, "tensor \(name) has shape \(info.shape), config.json implies \(shape)")
            }
            used.insert(name)
            let values = try checkpoint.floats(name)
            for v in values where !v.isFinite {
                throw ILAError(file: checkpoint.file(of: name) ?? checkpoint.path, "tensor \(name) contains NaN or Inf")
            }
            return FloatBuffer(values)
        }
        let c = config
        let h = c.hiddenSize
        let embed = try tensor("model.embed_tokens.weight", [c.vocabSize, h])
        var blocks: [BlockWeights] = []
        for b in 0..<c.numHiddenLayers {
            let p = "model.layers.\(b)."
            var linear: [LayerKind: FloatBuffer] = [:]
            var bias: [LayerKind: FloatBuffer] = [:]
            for kind in LayerKind.allCases {
                let s = c.shape(of: kind)
                let name = "\(p)\(kind.parent).\(kind.rawValue)"
                linear[kind] = try tensor(name + ".weight", [s.out, s.in])
                if c.attentionBias && kind.order < 3 { bias[kind] = try tensor(name + ".bias", [s.out]) }
            }
            blocks.append(BlockWeights(inputNorm: try tensor(p + "input_layernorm.weight", [h]),
                                       postAttentionNorm: try tensor(p + "post_attention_layernorm.weight", [h]),
                                       linear: linear, bias: bias))
        }
        let norm = try tensor("model.norm.weight", [h])
        let lmHead: FloatBuffer
        if c.tieWordEmbeddings {
            lmHead = embed
            if checkpoint.contains("lm_head.weight") { used.insert("lm_head.weight") }
        } else {
            lmHead = try tensor("lm_head.weight", [c.vocabSize, h])
        }
        for name in checkpoint.names where !used.contains(name) && !name.hasSuffix("rotary_emb.inv_freq") {
            throw ILAError(file: checkpoint.file(of: name) ?? checkpoint.path, "unexpected tensor \(name) for \(c.architectures.first ?? c.modelType) with \(c.numHiddenLayers) blocks")
        }
        return LlamaWeights(config: c, embed: embed, blocks: blocks, finalNorm: norm, lmHead: lmHead)
    }
}
