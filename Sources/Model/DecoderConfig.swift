import Foundation
import ILADiff

/// The keys every decoder family's config.json shares (CodingKeys = config.json keys). Each
/// family decodes this beside its own keys, with its own transformers defaults.
public struct DecoderConfig: Sendable {
    public var architectures: [String]
    public var modelType: String
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var intermediateSize: Int
    public var rmsNormEps: Double
    public var vocabSize: Int
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    public var maxPositionEmbeddings: Int?
    /// Top-level `rope_theta` (older layout), else inside `rope_parameters`.
    public var ropeTheta: Double?
    /// `rope_parameters` (or `rope_scaling`) as one dict, or nested by layer type (Gemma 3).
    public var rope: RopeParameters?
    public var ropeByLayerType: [String: RopeParameters]?
    public var layerTypes: [String]?
    public var slidingWindow: Int?
    public var hiddenAct: String?
    public var hiddenActivation: String?
    /// Top-level `original_max_position_embeddings`: wins over the rope dict's for llama3, yarn
    /// and longrope (transformers' standardize_rope_params).
    public var originalMaxPositionEmbeddings: Int?

    enum CodingKeys: String, CodingKey {
        case architectures, modelType = "model_type", hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads", headDim = "head_dim"
        case intermediateSize = "intermediate_size", rmsNormEps = "rms_norm_eps", vocabSize = "vocab_size"
        case tieWordEmbeddings = "tie_word_embeddings", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case maxPositionEmbeddings = "max_position_embeddings", ropeTheta = "rope_theta"
        case ropeParameters = "rope_parameters", ropeScaling = "rope_scaling", layerTypes = "layer_types"
        case slidingWindow = "sliding_window", hiddenAct = "hidden_act", hiddenActivation = "hidden_activation"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
    }

    /// Family defaults where config.json leaves a key out (transformers' config class defaults).
    public struct Defaults {
        var rmsNormEps = 1e-6
        var tieWordEmbeddings = false
        var headDim: Int? = nil
        var slidingWindow: Int? = nil
    }

    init(from decoder: Decoder, defaults: Defaults) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        architectures = try c.decodeIfPresent([String].self, forKey: .architectures) ?? []
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? ""
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? defaults.headDim
            ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? defaults.rmsNormEps
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? defaults.tieWordEmbeddings
        bosTokenId = Self.firstId(c, .bosTokenId)
        eosTokenId = Self.firstId(c, .eosTokenId)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings)
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
        // transformers' alias: "attention" means full attention.
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)?.map { $0 == "attention" ? "full_attention" : $0 }
        originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
        slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : defaults.slidingWindow
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct)
        hiddenActivation = try c.decodeIfPresent(String.self, forKey: .hiddenActivation)
        // rope_scaling (older) wins over rope_parameters, as transformers' convert_rope_params_to_dict.
        let key: CodingKeys = (try? c.decodeNil(forKey: .ropeScaling)) == false ? .ropeScaling : .ropeParameters
        if (try? c.decodeNil(forKey: key)) == false {
            if let nested = try? c.decode([String: RopeParameters].self, forKey: key),
               !nested.isEmpty, nested.keys.allSatisfy({ $0.hasSuffix("_attention") }) {
                ropeByLayerType = nested
            } else {
                rope = try c.decode(RopeParameters.self, forKey: key)
            }
        }
    }

    static func firstId(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) -> Int? {
        if let v = try? c.decodeIfPresent(Int.self, forKey: key) { return v }
        if let v = try? c.decodeIfPresent([Int].self, forKey: key) { return v.first }
        return nil
    }

    /// Checks sizes before anything is allocated from them.
    func validate(file: String) throws {
        let limits: [(String, Int, Int)] = [
            ("hidden_size", hiddenSize, 1 << 20), ("num_hidden_layers", numHiddenLayers, 4096),
            ("num_attention_heads", numAttentionHeads, 4096), ("num_key_value_heads", numKeyValueHeads, 4096),
            ("head_dim", headDim, 1 << 16), ("intermediate_size", intermediateSize, 1 << 22), ("vocab_size", vocabSize, 1 << 24)]
        for (name, v, limit) in limits where v < 1 || v > limit {
            throw ILAError(file: file, "\(name) \(v) is out of range")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw ILAError(file: file, "num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
        guard headDim % 2 == 0 else { throw ILAError(file: file, "head_dim \(headDim) must be even for rotary embeddings") }
        guard rmsNormEps > 0, rmsNormEps.isFinite else { throw ILAError(file: file, "rms_norm_eps must be positive") }
        if let w = slidingWindow, w < 1 { throw ILAError(file: file, "sliding_window \(w) must be at least 1") }
        if let t = layerTypes {
            guard t.count == numHiddenLayers else {
                throw ILAError(file: file, "layer_types has \(t.count) entries for \(numHiddenLayers) layers")
            }
            for x in t where x != "full_attention" && x != "sliding_attention" {
                throw ILAError(file: file, "layer type \(x) is not supported (full_attention, sliding_attention)")
            }
        }
    }

    /// The activation named by `hidden_act` (or `hidden_activation` where the family reads that).
    func activation(_ name: String?, key: String, file: String) throws -> Activation {
        let n = name ?? "silu"
        guard let a = Activation(configName: n) else {
            throw ILAError(file: file, "\(key) \(n) is not supported (silu, gelu, gelu_pytorch_tanh)")
        }
        return a
    }

    /// The single rotary embedding of a family without per-layer-type rope.
    func rotary(file: String, defaultTheta: Double = 10000, partialRotaryFactor: Double? = nil,
                renameTypes: [String: String] = [:]) throws -> RotaryEmbedding {
        if ropeByLayerType != nil { throw ILAError(file: file, "rope_parameters nested by layer type is not supported for \(modelType)") }
        var p = rope ?? RopeParameters()
        if let to = renameTypes[p.resolvedType] { p.ropeType = to }
        if let f = partialRotaryFactor, p.partialRotaryFactor == nil { p.partialRotaryFactor = f }
        // A top-level rope_theta fills in a dict without one (transformers' standardize_rope_params).
        return try RotaryEmbedding(p, theta: p.ropeTheta ?? ropeTheta ?? defaultTheta, headDim: headDim,
                                   maxPositionEmbeddings: maxPositionEmbeddings, originalMax: originalMaxPositionEmbeddings, file: file)
    }

    /// Layer types given, or derived by the family's rule.
    func layerTypes(default rule: (Int) -> Bool) -> [Bool] {
        if let t = layerTypes { return t.map { $0 == "sliding_attention" } }
        return (0..<numHiddenLayers).map(rule)
    }

    func base(norm: NormVariant, activation: Activation, layers: [TransformerSpec.AttentionLayer], linears: [LinearSpec],
              names: TensorNames = TensorNames()) -> TransformerSpec {
        TransformerSpec(architecture: architectures.first ?? modelType, modelType: modelType, hiddenSize: hiddenSize,
                        blocks: numHiddenLayers, heads: numAttentionHeads, kvHeads: numKeyValueHeads, headDim: headDim,
                        intermediateSize: intermediateSize, vocabSize: vocabSize, normEps: Float(rmsNormEps), norm: norm,
                        activation: activation, embeddingScale: nil, tieWordEmbeddings: tieWordEmbeddings,
                        attentionScale: Float(Foundation.pow(Double(headDim), -0.5)), attentionSoftcap: nil, finalSoftcap: nil,
                        qkNorm: false, sandwichNorms: false, layers: layers, linears: linears, names: names,
                        bosTokenId: bosTokenId, eosTokenId: eosTokenId)
    }

    var qDim: Int { numAttentionHeads * headDim }
    var kvDim: Int { numKeyValueHeads * headDim }
}
