import Foundation
import ILADiff

/// Phi-3 / Phi-3.5 (`Phi3ForCausalLM`): fused `qkv_proj` [q | k | v] and `gate_up_proj`
/// [gate | up] (one layer and one γ each), `partial_rotary_factor`, longrope with the top-level
/// `original_max_position_embeddings`, and an optional sliding window on every layer.
struct Phi3Family: ArchitectureFamily {
    static let architectures = ["Phi3ForCausalLM"]
    static let modelTypes = ["phi3"]
    var core: DecoderConfig
    var partialRotaryFactor: Double?

    enum CodingKeys: String, CodingKey { case partialRotaryFactor = "partial_rotary_factor" }

    init(from decoder: Decoder) throws {
        core = try DecoderConfig(from: decoder, defaults: .init(rmsNormEps: 1e-5, tieWordEmbeddings: false))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        partialRotaryFactor = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)
    }

    func spec(file: String) throws -> TransformerSpec {
        let c = core
        // Phi3Config: the older "su" and "yarn" names mean longrope; only default and longrope exist.
        let rope = try c.rotary(file: file, partialRotaryFactor: partialRotaryFactor, renameTypes: ["su": "longrope", "yarn": "longrope"])
        guard ["default", "longrope"].contains(rope.typeName) else {
            throw ILAError(file: file, "rope type \(rope.typeName) is not supported for Phi-3 (default, longrope)")
        }
        let H = c.hiddenSize, I = c.intermediateSize
        let linears = [
            LinearSpec(.qkv_proj, path: "self_attn.qkv_proj", stage: .qkv, out: c.qDim + 2 * c.kvDim, in: H),
            LinearSpec(.o_proj, path: "self_attn.o_proj", stage: .attentionOut, out: H, in: c.qDim),
            LinearSpec(.gate_up_proj, path: "mlp.gate_up_proj", stage: .gateUp, out: 2 * I, in: H),
            LinearSpec(.down_proj, path: "mlp.down_proj", stage: .mlpOut, out: H, in: I)]
        return c.base(norm: .rms, activation: try c.activation(c.hiddenAct, key: "hidden_act", file: file),
                      layers: Array(repeating: .init(slidingWindow: c.slidingWindow, rope: rope), count: c.numHiddenLayers),
                      linears: linears)
    }
}
