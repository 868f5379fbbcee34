import Foundation
import ILADiff

/// Llama 1/2/3/3.1/3.2/3.3 (`LlamaForCausalLM`): RMSNorm, rotate-half RoPE (any rope type),
/// GQA, SwiGLU. `attention_bias` puts biases on q, k, v and o; `mlp_bias` on gate, up and down.
struct LlamaFamily: ArchitectureFamily {
    static let architectures = ["LlamaForCausalLM"]
    static let modelTypes = ["llama"]
    var core: DecoderConfig
    var attentionBias: Bool
    var mlpBias: Bool

    enum CodingKeys: String, CodingKey { case attentionBias = "attention_bias", mlpBias = "mlp_bias" }

    init(from decoder: Decoder) throws {
        core = try DecoderConfig(from: decoder, defaults: .init(rmsNormEps: 1e-6, tieWordEmbeddings: false))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
    }

    func spec(file: String) throws -> TransformerSpec {
        let c = core
        let rope = try c.rotary(file: file)
        return c.base(norm: .rms, activation: try c.activation(c.hiddenAct, key: "hidden_act", file: file),
                      layers: Array(repeating: .init(slidingWindow: nil, rope: rope), count: c.numHiddenLayers),
                      linears: TransformerSpec.llamaLinears(hidden: c.hiddenSize, qDim: c.qDim, kvDim: c.kvDim,
                                                            intermediate: c.intermediateSize, qkvBias: attentionBias,
                                                            oBias: attentionBias, mlpBias: mlpBias))
    }
}

/// Mistral (`MistralForCausalLM`): Llama without biases, explicit `head_dim`, and a sliding
/// window on every layer when `sliding_window` is set (transformers' default 4096 when absent).
struct MistralFamily: ArchitectureFamily {
    static let architectures = ["MistralForCausalLM"]
    static let modelTypes = ["mistral"]
    var core: DecoderConfig

    init(from decoder: Decoder) throws {
        core = try DecoderConfig(from: decoder, defaults: .init(rmsNormEps: 1e-6, tieWordEmbeddings: false, slidingWindow: 4096))
    }

    func spec(file: String) throws -> TransformerSpec {
        let c = core
        let rope = try c.rotary(file: file)
        return c.base(norm: .rms, activation: try c.activation(c.hiddenAct, key: "hidden_act", file: file),
                      layers: Array(repeating: .init(slidingWindow: c.slidingWindow, rope: rope), count: c.numHiddenLayers),
                      linears: TransformerSpec.llamaLinears(hidden: c.hiddenSize, qDim: c.qDim, kvDim: c.kvDim,
                                                            intermediate: c.intermediateSize))
    }
}

/// Sliding layers of Qwen2 and Qwen3: `use_sliding_window` turns on `sliding_window` for the
/// layers from `max_window_layers` on, unless `layer_types` says otherwise.
struct QwenSlidingWindow: Decodable {
    var useSlidingWindow: Bool
    var maxWindowLayers: Int
    enum CodingKeys: String, CodingKey { case useSlidingWindow = "use_sliding_window", maxWindowLayers = "max_window_layers" }
    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        useSlidingWindow = try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) ?? false
        maxWindowLayers = try c.decodeIfPresent(Int.self, forKey: .maxWindowLayers) ?? 28
    }

    func layers(_ c: DecoderConfig, rope: RotaryEmbedding) -> [TransformerSpec.AttentionLayer] {
        let window = useSlidingWindow ? c.slidingWindow : nil
        let sliding = c.layerTypes(default: { window != nil && $0 >= maxWindowLayers })
        return sliding.map { .init(slidingWindow: $0 ? window : nil, rope: rope) }
    }
}

/// Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): Llama with q/k/v biases (o_proj has none).
struct Qwen2Family: ArchitectureFamily {
    static let architectures = ["Qwen2ForCausalLM"]
    static let modelTypes = ["qwen2"]
    var core: DecoderConfig
    var window: QwenSlidingWindow

    init(from decoder: Decoder) throws {
        core = try DecoderConfig(from: decoder, defaults: .init(rmsNormEps: 1e-6, tieWordEmbeddings: false, slidingWindow: 4096))
        window = try QwenSlidingWindow(from: decoder)
    }

    func spec(file: String) throws -> TransformerSpec {
        let c = core
        return c.base(norm: .rms, activation: try c.activation(c.hiddenAct, key: "hidden_act", file: file),
                      layers: window.layers(c, rope: try c.rotary(file: file)),
                      linears: TransformerSpec.llamaLinears(hidden: c.hiddenSize, qDim: c.qDim, kvDim: c.kvDim,
                                                            intermediate: c.intermediateSize, qkvBias: true))
    }
}

/// Qwen3 dense (`Qwen3ForCausalLM`): RMSNorm over each head of q and k (`q_norm`, `k_norm`,
/// weight [head_dim]) before RoPE; `head_dim` (default 128) independent of hidden/heads.
struct Qwen3Family: ArchitectureFamily {
    static let architectures = ["Qwen3ForCausalLM"]
    static let modelTypes = ["qwen3"]
    var core: DecoderConfig
    var window: QwenSlidingWindow
    var attentionBias: Bool

    enum CodingKeys: String, CodingKey { case attentionBias = "attention_bias" }

    init(from decoder: Decoder) throws {
        core = try DecoderConfig(from: decoder, defaults: .init(rmsNormEps: 1e-6, tieWordEmbeddings: false, headDim: 128, slidingWindow: 4096))
        window = try QwenSlidingWindow(from: decoder)
        attentionBias = try decoder.container(keyedBy: CodingKeys.self).decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
    }

    func spec(file: String) throws -> TransformerSpec {
        let c = core
        var names = TensorNames()
        names.qNorm = "self_attn.q_norm.weight"
        names.kNorm = "self_attn.k_norm.weight"
        var s = c.base(norm: .rms, activation: try c.activation(c.hiddenAct, key: "hidden_act", file: file),
                       layers: window.layers(c, rope: try c.rotary(file: file)),
                       linears: TransformerSpec.llamaLinears(hidden: c.hiddenSize, qDim: c.qDim, kvDim: c.kvDim,
                                                             intermediate: c.intermediateSize, qkvBias: attentionBias,
                                                             oBias: attentionBias),
                       names: names)
        s.qkNorm = true
        return s
    }
}
