import Foundation
import ILADiff

/// One architecture family: its config.json (Decodable, CodingKeys = config.json keys) and how
/// it describes itself to the engine.
protocol ArchitectureFamily: Decodable {
    /// `architectures[0]` values and `model_type` values this family reads.
    static var architectures: [String] { get }
    static var modelTypes: [String] { get }
    /// The keys every family shares.
    var core: DecoderConfig { get }
    func spec(file: String) throws -> TransformerSpec
}

/// The registry from `architectures` / `model_type` to a family.
public enum Architectures {
    static let families: [any ArchitectureFamily.Type] = [
        LlamaFamily.self, MistralFamily.self, Qwen2Family.self, Qwen3Family.self,
        GemmaFamily.self, Gemma2Family.self, Gemma3TextFamily.self, Phi3Family.self,
    ]

    /// Every architecture name the engine runs.
    public static var supported: [String] { families.flatMap { $0.architectures } }

    /// Keys that change the math in ways the engine does not implement, refused when set to
    /// anything but their no-op value (a config of a known family may still carry them).
    static let refusedKeys: [(key: String, isNoOp: @Sendable (Any) -> Bool, what: String)] = [
        ("num_experts", { isZeroOrNull($0) }, "mixture of experts"),
        ("num_local_experts", { isZeroOrNull($0) }, "mixture of experts"),
        ("n_routed_experts", { isZeroOrNull($0) }, "mixture of experts"),
        ("moe_intermediate_size", { isZeroOrNull($0) }, "mixture of experts"),
        ("num_experts_per_tok", { isZeroOrNull($0) }, "mixture of experts"),
        ("attention_sinks", { isZeroOrNull($0) }, "attention sinks"),
        ("use_sinks", { isZeroOrNull($0) }, "attention sinks"),
        ("quantization_config", { $0 is NSNull }, "quantized weights"),
        ("attention_chunk_size", { $0 is NSNull }, "chunked attention"),
        ("no_rope_layers", { $0 is NSNull }, "layers without RoPE"),
        ("use_qk_norm", { isZeroOrNull($0) }, "q/k norms in this family"),
        ("qk_layernorm", { isZeroOrNull($0) }, "q/k layer norms"),
        ("logits_scaling", { ($0 as? NSNumber)?.doubleValue == 1 || $0 is NSNull }, "logit scaling"),
        ("embedding_multiplier", { ($0 as? NSNumber)?.doubleValue == 1 || $0 is NSNull }, "embedding multiplier"),
        ("residual_multiplier", { ($0 as? NSNumber)?.doubleValue == 1 || $0 is NSNull }, "residual multiplier"),
        ("attention_multiplier", { $0 is NSNull }, "attention multiplier"),
        ("pretraining_tp", { ($0 as? NSNumber)?.intValue ?? 1 <= 1 || $0 is NSNull }, "tensor-parallel pretraining slices"),
    ]

    static func isZeroOrNull(_ v: Any) -> Bool {
        if v is NSNull { return true }
        if let n = v as? NSNumber { return n.doubleValue == 0 }
        if let a = v as? [Any] { return a.isEmpty }
        return false
    }

    /// Reads config.json and describes the model, or refuses with one line naming what is not
    /// supported (an architecture, a key, a value).
    public static func load(configAt path: String) throws -> TransformerSpec {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ILAError(file: path, FileManager.default.fileExists(atPath: path) ? "cannot read" : "no such file")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else {
            throw ILAError(file: path, "not valid JSON")
        }
        guard let dict = object as? [String: Any] else { throw ILAError(file: path, "is not a JSON object") }
        let arch = ((dict["architectures"] as? [Any])?.first as? String) ?? ""
        let modelType = dict["model_type"] as? String ?? ""
        let family = families.first { $0.architectures.contains(arch) }
            ?? (arch.isEmpty ? families.first { $0.modelTypes.contains(modelType) } : nil)
        guard let family else {
            let name = arch.isEmpty ? (modelType.isEmpty ? "(no architectures or model_type)" : modelType) : arch
            throw ILAError(file: path, "architecture \(name) is not supported (supported: \(supported.joined(separator: ", ")))")
        }
        for r in refusedKeys {
            if let v = dict[r.key], !r.isNoOp(v) {
                throw ILAError(file: path, "\(r.key) is set: \(r.what) is not supported")
            }
        }
        let spec: TransformerSpec
        do {
            let config = try JSONDecoder().decode(family, from: data)
            try config.core.validate(file: path)
            spec = try config.spec(file: path)
        } catch let e as ILAError {
            throw e.message.hasPrefix(path + ": ") ? e : ILAError(file: path, e.message)
        } catch DecodingError.keyNotFound(let key, _) {
            throw ILAError(file: path, "missing key \(key.stringValue)")
        } catch DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx) {
            throw ILAError(file: path, "key \(ctx.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type")
        } catch DecodingError.dataCorrupted(let ctx) where !ctx.codingPath.isEmpty {
            throw ILAError(file: path, "key \(ctx.codingPath.map(\.stringValue).joined(separator: ".")) has an invalid or out-of-range value")
        } catch {
            // Foundation's decoder reports an integer key holding 1e300 or 2^70 as invalid JSON.
            let intKeys = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                           "head_dim", "intermediate_size", "vocab_size", "sliding_window", "max_position_embeddings"]
            if let k = intKeys.first(where: { dict[$0].map { ($0 as? NSNumber).map { Int(exactly: $0.doubleValue) == nil } ?? false } ?? false }) {
                throw ILAError(file: path, "\(k) \(dict[k]!) is not an integer in range")
            }
            throw ILAError(file: path, "a value is out of range or of the wrong kind")
        }
        return spec
    }
}
