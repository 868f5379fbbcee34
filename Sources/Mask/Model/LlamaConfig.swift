import Foundation
import ILADiff

/// The Llama-family configuration (Llama, Mistral, Qwen2) read from config.json.
/// CodingKeys mirror config.json; optional keys fall back to transformers' defaults.
public struct LlamaConfig: Codable, Sendable, Equatable {
    public var architectures: [String]
    public var modelType: String
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var intermediateSize: Int
    public var rmsNormEps: Double
    public var ropeTheta: Double
    public var attentionBias: Bool
    public var tieWordEmbeddings: Bool
    public var vocabSize: Int
    public var bosTokenId: Int?
    public var eosTokenId: Int?

    enum CodingKeys: String, CodingKey {
        case architectures
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case intermediateSize = "intermediate_size"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeParameters = "rope_parameters"
        case ropeScaling = "rope_scaling"
        case attentionBias = "attention_bias"
        case tieWordEmbeddings = "tie_word_embeddings"
        case vocabSize = "vocab_size"
        case bosTokenId = "bos_token_id"
        case eosTokenId = "eos_token_id"
        case hiddenAct = "hidden_act"
        case mlpBias = "mlp_bias"
    }

    struct RopeParameters: Codable {
        var ropeTheta: Double?
        var ropeType: String?
        enum CodingKeys: String, CodingKey {
            case ropeTheta = "rope_theta"
            case ropeType = "rope_type"
        }
    }

    /// Architectures whose tensors and math this engine implements.
    public static let supportedArchitectures = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        architectures = try c.decodeIfPresent([String].self, forKey: .architectures) ?? []
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? ""
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        let hd = try c.decodeIfPresent(Int.self, forKey: .headDim)
        headDim = hd ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        let rope = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters)
        let scaling = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeScaling)
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? rope?.ropeTheta ?? 10000
        // Qwen2 has q/k/v biases without saying attention_bias.
        let defaultBias = modelType == "qwen2" || architectures.contains("Qwen2ForCausalLM")
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? defaultBias
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        bosTokenId = try Self.firstId(c, .bosTokenId)
        eosTokenId = try Self.firstId(c, .eosTokenId)
        if let act = try c.decodeIfPresent(String.self, forKey: .hiddenAct), act != "silu" {
            throw ILAError("hidden_act \(act) is not supported (only silu)")
        }
        if try c.decodeIfPresent(Bool.self, forKey: .mlpBias) == true {
            throw ILAError("mlp_bias true is not supported")
        }
        for t in [rope?.ropeType, scaling?.ropeType] {
            if let t, t != "default" { throw ILAError("rope type \(t) is not supported (only default)") }
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(architectures, forKey: .architectures)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encodeIfPresent(eosTokenId, forKey: .eosTokenId)
    }

    static func firstId(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> Int? {
        if let v = try? c.decodeIfPresent(Int.self, forKey: key) { return v }
        if let v = try? c.decodeIfPresent([Int].self, forKey: key) { return v.first }
        return nil
    }

    /// Reads and checks config.json.
    public static func load(path: String) throws -> LlamaConfig {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ILAError(file: path, FileManager.default.fileExists(atPath: path) ? "cannot read" : "no such file")
        }
        let cfg: LlamaConfig
        do {
            cfg = try JSONDecoder().decode(LlamaConfig.self, from: data)
        } catch let e as ILAError {
            throw ILAError(file: path, e.message)
        } catch DecodingError.keyNotFound(let key, _) {
            throw ILAError(file: path, "missing key \(key.stringValue)")
        } catch DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx) {
            throw ILAError(file: path, "key \(ctx.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type")
        } catch DecodingError.dataCorrupted(let ctx) where !ctx.codingPath.isEmpty {
            // e.g. 1e300 or 2^70 where an integer is expected
            throw ILAError(file: path, "key \(ctx.codingPath.map(\.stringValue).joined(separator: ".")) has an invalid or out-of-range value")
        } catch {
            // Foundation's decoder reports an integer key holding 1e300 or 2^70 as invalid JSON.
            if let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
                let intKeys: [CodingKeys] = [.hiddenSize, .numHiddenLayers, .numAttentionHeads, .numKeyValueHeads,
                                             .headDim, .intermediateSize, .vocabSize]
                if let k = intKeys.first(where: { object[$0.rawValue].map { $0 is NSNumber && jsonInt($0) == nil } ?? false }) {
                    throw ILAError(file: path, "\(k.rawValue) \(object[k.rawValue]!) is not an integer in range")
                }
                throw ILAError(file: path, "a value is out of range or of the wrong kind")
            }
            throw ILAError(file: path, "not valid JSON")
        }
        try cfg.validate(path: path)
        return cfg
    }

    func validate(path: String) throws {
        let arch = architectures.first ?? ""
        let knownType = ["llama", "mistral", "qwen2"].contains(modelType)
        guard Self.supportedArchitectures.contains(arch) || (arch.isEmpty && knownType) else {
            throw ILAError(file: path, "architecture \(arch.isEmpty ? modelType : arch) is not supported (Llama, Mistral and Qwen2 families only)")
        }
        let limits: [(String, Int, Int)] = [
            ("hidden_size", hiddenSize, 1 << 20), ("num_hidden_layers", numHiddenLayers, 4096),
            ("num_attention_heads", numAttentionHeads, 4096), ("num_key_value_heads", numKeyValueHeads, 4096),
            ("head_dim", headDim, 1 << 16), ("intermediate_size", intermediateSize, 1 << 22), ("vocab_size", vocabSize, 1 << 24)]
        for (name, v, limit) in limits where v < 1 || v > limit {
            throw ILAError(file: path, "\(name) \(v) is out of range")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw ILAError(file: path, "num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
        guard headDim % 2 == 0 else { throw ILAError(file: path, "head_dim \(headDim) must be even for rotary embeddings") }
        guard rmsNormEps > 0, rmsNormEps.isFinite, ropeTheta > 0, ropeTheta.isFinite else {
            throw ILAError(file: path, "rms_norm_eps and rope_theta must be positive")
        }
    }

    public var qDim: Int { numAttentionHeads * headDim }
    public var kvDim: Int { numKeyValueHeads * headDim }

    /// [out, in] of each linear kind.
    public func shape(of kind: LayerKind) -> (out: Int, in: Int) {
        switch kind {
        case .q_proj: return (qDim, hiddenSize)
        case .k_proj, .v_proj: return (kvDim, hiddenSize)
        case .o_proj: return (hiddenSize, qDim)
        case .gate_proj, .up_proj: return (intermediateSize, hiddenSize)
        case .down_proj: return (hiddenSize, intermediateSize)
        }
    }
}
