import Foundation
import ILADiff

/// Refuses Gemma's bidirectional variant (embedding models), which is not a causal LM.
private func refuseBidirectional(_ decoder: Decoder) throws {
    enum K: String, CodingKey { case useBidirectionalAttention = "use_bidirectional_attention" }
    if try decoder.container(keyedBy: K.self).decodeIfPresent(Bool.self, forKey: .useBidirectionalAttention) == true {
        throw ILAError("use_bidirectional_attention true is not supported (causal attention only)")
    }
}

/// Gemma's shared keys: attention biases on q, k, v, o and the embedding scale √hidden.
private func gemmaSpec(_ c: DecoderConfig, activation: Activation, attentionBias: Bool,
                       layers: [TransformerSpec.AttentionLayer], names: TensorNames = TensorNames()) -> TransformerSpec {
    var s = c.base(norm: .rmsOnePlusWeight, activation: activation, layers: layers,
                   linears: TransformerSpec.llamaLinears(hidden: c.hiddenSize, qDim: c.qDim, kvDim: c.kvDim,
                                                         intermediate: c.intermediateSize, qkvBias: attentionBias,
                                                         oBias: attentionBias),
                   names: names)
    // torch.tensor(hidden_size ** 0.5) in float32.
    s.embeddingScale = Float(Double(c.hiddenSize).squareRoot())
    return s
}

/// Gemma (`GemmaForCausalLM`): RMSNorm ·(1+w), embeddings ·√hidden, down(gelu_tanh(gate)·up),
/// tied lm_head, head_dim 256 by default. The legacy `hidden_act: gelu` means the tanh form.
struct GemmaFamily: ArchitectureFamily {
    static let architectures = ["GemmaForCausalLM"]
    static let modelTypes = ["gemma"]
    var core: DecoderConfig
    var attentionBias: Bool

    enum CodingKeys: String, CodingKey { case attentionBias = "attention_bias" }

    init(from decoder: Decoder) throws {
        try refuseBidirectional(decoder)
        core = try DecoderConfig(from: decoder, defaults: .init(rmsNormEps: 1e-6, tieWordEmbeddings: true, headDim: 256))
        attentionBias = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
    }

    func spec(file: String) throws -> TransformerSpec {
        let c = core
        // transformers' GemmaConfig maps the released configs' "gelu" to gelu_pytorch_tanh.
        let act = c.hiddenAct == "gelu" ? "gelu_pytorch_tanh" : (c.hiddenAct ?? "gelu_pytorch_tanh")
        let rope = try c.rotary(file: file)
        return gemmaSpec(c, activation: try c.activation(act, key: "hidden_act", file: file), attentionBias: attentionBias,
                         layers: Array(repeating: .init(slidingWindow: nil, rope: rope), count: c.numHiddenLayers))
    }
}

/// Gemma 2 (`Gemma2ForCausalLM`): Gemma plus soft-capping of attention logits and final logits,
/// attention scale `query_pre_attn_scalar`^-½, sandwich norms (post-attention, pre/post-feedforward),
/// and sliding-window layers alternating with global ones (even layers slide).
struct Gemma2Family: ArchitectureFamily {
    static let architectures = ["Gemma2ForCausalLM"]
    static let modelTypes = ["gemma2"]
    var core: DecoderConfig
    var attentionBias: Bool
    var queryPreAttnScalar: Double
    var attnLogitSoftcapping: Double?
    var finalLogitSoftcapping: Double?

    enum CodingKeys: String, CodingKey {
        case attentionBias = "attention_bias", queryPreAttnScalar = "query_pre_attn_scalar"
        case attnLogitSoftcapping = "attn_logit_softcapping", finalLogitSoftcapping = "final_logit_softcapping"
    }

    init(from decoder: Decoder) throws {
        try refuseBidirectional(decoder)
        core = try DecoderConfig(from: decoder, defaults: .init(rmsNormEps: 1e-6, tieWordEmbeddings: true, headDim: 256, slidingWindow: 4096))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        queryPreAttnScalar = try c.decodeIfPresent(Double.self, forKey: .queryPreAttnScalar) ?? 256
        attnLogitSoftcapping = c.contains(.attnLogitSoftcapping) ? try c.decodeIfPresent(Double.self, forKey: .attnLogitSoftcapping) : 50
        finalLogitSoftcapping = c.contains(.finalLogitSoftcapping) ? try c.decodeIfPresent(Double.self, forKey: .finalLogitSoftcapping) : 30
    }

    func spec(file: String) throws -> TransformerSpec {
        let c = core
        let rope = try c.rotary(file: file)
        let sliding = c.layerTypes(default: { ($0 + 1) % 2 != 0 })
        var s = gemmaSpec(c, activation: try c.activation(c.hiddenActivation ?? "gelu_pytorch_tanh", key: "hidden_activation", file: file),
                          attentionBias: attentionBias,
                          layers: sliding.map { .init(slidingWindow: $0 ? c.slidingWindow : nil, rope: rope) },
                          names: gemmaSandwichNames())
        try applyGemmaAttention(&s, queryPreAttnScalar: queryPreAttnScalar, attnCap: attnLogitSoftcapping,
                                finalCap: finalLogitSoftcapping, file: file)
        return s
    }
}

/// Gemma 3 text (`Gemma3ForCausalLM`, model_type gemma3_text): Gemma 2's block with q/k norms
/// ·(1+w) and no attention soft-capping (final logits may still be capped), local (sliding) layers with their own rope
/// base `rope_local_base_freq`, global layers with `rope_theta` and any rope scaling, and layer
/// types from `layer_types` or every `sliding_window_pattern`-th (6th) layer global.
struct Gemma3TextFamily: ArchitectureFamily {
    static let architectures = ["Gemma3ForCausalLM"]
    static let modelTypes = ["gemma3_text"]
    var core: DecoderConfig
    var attentionBias: Bool
    var queryPreAttnScalar: Double
    var attnLogitSoftcapping: Double?
    var finalLogitSoftcapping: Double?
    var ropeLocalBaseFreq: Double?
    var slidingWindowPattern: Int

    enum CodingKeys: String, CodingKey {
        case attentionBias = "attention_bias", queryPreAttnScalar = "query_pre_attn_scalar"
        case attnLogitSoftcapping = "attn_logit_softcapping", finalLogitSoftcapping = "final_logit_softcapping"
        case ropeLocalBaseFreq = "rope_local_base_freq", slidingWindowPattern = "sliding_window_pattern"
    }

    init(from decoder: Decoder) throws {
        try refuseBidirectional(decoder)
        core = try DecoderConfig(from: decoder, defaults: .init(rmsNormEps: 1e-6, tieWordEmbeddings: true, headDim: 256, slidingWindow: 4096))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        queryPreAttnScalar = try c.decodeIfPresent(Double.self, forKey: .queryPreAttnScalar) ?? 256
        attnLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .attnLogitSoftcapping)
        finalLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .finalLogitSoftcapping)
        ropeLocalBaseFreq = try c.decodeIfPresent(Double.self, forKey: .ropeLocalBaseFreq)
        slidingWindowPattern = try c.decodeIfPresent(Int.self, forKey: .slidingWindowPattern) ?? 6
    }

    func spec(file: String) throws -> TransformerSpec {
        let c = core
        guard slidingWindowPattern >= 1 else { throw ILAError(file: file, "sliding_window_pattern \(slidingWindowPattern) must be at least 1") }
        // Rope per layer type: nested rope_parameters (transformers 5), else rope_theta (1e6) and
        // rope_scaling for global layers and rope_local_base_freq (1e4) default rope for local ones.
        func rope(_ type: String, theta: Double, fallback: RopeParameters?) throws -> RotaryEmbedding {
            let p = c.ropeByLayerType?[type] ?? fallback ?? RopeParameters()
            return try RotaryEmbedding(p, theta: p.ropeTheta ?? theta, headDim: c.headDim,
                                       maxPositionEmbeddings: c.maxPositionEmbeddings, originalMax: nil, file: file)
        }
        let global = try rope("full_attention", theta: c.ropeTheta ?? 1_000_000, fallback: c.rope)
        let local = try rope("sliding_attention", theta: ropeLocalBaseFreq ?? 10_000, fallback: nil)
        let pattern = slidingWindowPattern
        let sliding = c.layerTypes(default: { ($0 + 1) % pattern != 0 })
        var names = gemmaSandwichNames()
        names.qNorm = "self_attn.q_norm.weight"
        names.kNorm = "self_attn.k_norm.weight"
        var s = gemmaSpec(c, activation: try c.activation(c.hiddenActivation ?? "gelu_pytorch_tanh", key: "hidden_activation", file: file),
                          attentionBias: attentionBias,
                          layers: sliding.map { .init(slidingWindow: $0 ? c.slidingWindow : nil, rope: $0 ? local : global) },
                          names: names)
        s.qkNorm = true
        try applyGemmaAttention(&s, queryPreAttnScalar: queryPreAttnScalar, attnCap: attnLogitSoftcapping,
                                finalCap: finalLogitSoftcapping, appliesAttentionCap: false, file: file)
        return s
    }
}

private func gemmaSandwichNames() -> TensorNames {
    var n = TensorNames()
    n.mlpNorm = "pre_feedforward_layernorm.weight"
    n.attentionOutNorm = "post_attention_layernorm.weight"
    n.mlpOutNorm = "post_feedforward_layernorm.weight"
    return n
}

/// Gemma 3 stores `attn_logit_softcapping` but its attention never applies it (transformers'
/// Gemma3Attention passes no softcap), so `appliesAttentionCap` is false there.
private func applyGemmaAttention(_ s: inout TransformerSpec, queryPreAttnScalar: Double, attnCap: Double?, finalCap: Double?,
                                 appliesAttentionCap: Bool = true, file: String) throws {
    guard queryPreAttnScalar > 0, queryPreAttnScalar.isFinite else {
        throw ILAError(file: file, "query_pre_attn_scalar \(queryPreAttnScalar) must be positive")
    }
    for (key, v) in [("attn_logit_softcapping", attnCap), ("final_logit_softcapping", finalCap)] {
        if let v, !(v > 0 && v.isFinite) { throw ILAError(file: file, "\(key) \(v) must be positive") }
    }
    s.sandwichNorms = true
    s.attentionScale = Float(Foundation.pow(queryPreAttnScalar, -0.5))
    s.attentionSoftcap = appliesAttentionCap ? attnCap.map(Float.init) : nil
    s.finalSoftcap = finalCap.map(Float.init)
}
