import Foundation
import ILADiff

/// A decoder-only transformer as data: everything the engine needs to run one architecture
/// family exactly as transformers does. Each family file (`Architectures/*.swift`) decodes its
/// config.json and describes itself as one of these; the engine has no family-specific code.
public struct TransformerSpec: Sendable {
    /// `architectures[0]` (or model_type) and `model_type` of config.json.
    public var architecture: String
    public var modelType: String
    public var hiddenSize: Int
    public var blocks: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var intermediateSize: Int
    public var vocabSize: Int
    public var normEps: Float
    public var norm: NormVariant
    public var activation: Activation
    /// Embeddings are multiplied by this (Gemma: √hidden, rounded to float32); nil = 1.
    public var embeddingScale: Float?
    public var tieWordEmbeddings: Bool
    /// Attention logits = scale · q·kᵀ (1/√head_dim, or Gemma 2/3's query_pre_attn_scalar^-½).
    public var attentionScale: Float
    /// cap · tanh(x / cap) of attention logits (Gemma 2).
    public var attentionSoftcap: Float?
    /// cap · tanh(x / cap) of the final logits (Gemma 2).
    public var finalSoftcap: Float?
    /// RMSNorm over each head of q and k before RoPE (Qwen3, Gemma 3).
    public var qkNorm: Bool
    /// Norms of the attention and MLP outputs before the residual adds (Gemma 2/3).
    public var sandwichNorms: Bool
    /// Per block: sliding window (nil = full causal) and its rotary embedding.
    public var layers: [AttentionLayer]
    /// The block's linear modules in the order the block applies them.
    public var linears: [LinearSpec]
    public var names: TensorNames
    public var bosTokenId: Int?
    public var eosTokenId: Int?

    public struct AttentionLayer: Sendable {
        /// A query at i sees keys j with i − window < j ≤ i (transformers' sliding_window_overlay).
        public var slidingWindow: Int?
        public var rope: RotaryEmbedding
        public init(slidingWindow: Int?, rope: RotaryEmbedding) {
            self.slidingWindow = slidingWindow
            self.rope = rope
        }
    }

    public var qDim: Int { heads * headDim }
    public var kvDim: Int { kvHeads * headDim }
    /// Width of the packed [q | k | v] projection output.
    public var qkvDim: Int { qDim + 2 * kvDim }
    public var kinds: [LayerKind] { linears.map(\.kind) }

    public func linear(_ kind: LayerKind) -> LinearSpec? { linears.first { $0.kind == kind } }

    /// [out, in] of a linear kind of this architecture.
    public func shape(of kind: LayerKind) -> (out: Int, in: Int)? {
        linear(kind).map { ($0.outFeatures, $0.inFeatures) }
    }

    /// Module path of a block's linear layer, e.g. `model.layers.3.self_attn.q_proj`.
    public func layerName(block: Int, kind: LayerKind) -> String? {
        linear(kind).map { "\(names.blockPrefix)\(block).\($0.path)" }
    }

    /// The linear layers of the model in canonical order.
    public var allLayers: [LinearLayer] {
        (0..<blocks).flatMap { b in linears.compactMap { LinearLayer(name: "\(names.blockPrefix)\(b).\($0.path)") } }
    }
}

/// RMSNorm variants: y = x·rsqrt(mean(x²)+eps)·w, or Gemma's ·(1+w). Both in float32.
public enum NormVariant: String, Sendable {
    case rms
    /// Gemma's RMSNorm: output · (1 + w).
    case rmsOnePlusWeight
}

/// MLP activations (transformers' ACT2FN names they cover).
public enum Activation: String, Sendable {
    /// silu(gate) · up
    case silu
    /// gelu with the tanh approximation (gelu_pytorch_tanh, gelu_new)
    case geluTanh
    /// exact gelu (erf)
    case gelu

    /// Reads a `hidden_act` / `hidden_activation` value; nil if not implemented.
    public init?(configName: String) {
        switch configName {
        case "silu", "swish": self = .silu
        case "gelu_pytorch_tanh", "gelu_new", "gelu_fast": self = .geluTanh
        case "gelu": self = .gelu
        default: return nil
        }
    }
}

/// Where a linear module sits in the block: what it reads and which packed output it writes.
public enum LinearStage: Sendable {
    /// reads the attention norm's output, writes columns of the packed [q | k | v]
    case qkv
    /// reads the attention output, writes the attention projection [hidden]
    case attentionOut
    /// reads the MLP norm's output, writes columns of the packed [gate | up]
    case gateUp
    /// reads the MLP hidden state, writes the MLP output [hidden]
    case mlpOut
}

/// One linear module of a block. Weight [outFeatures, inFeatures] row-major, as in the checkpoint.
public struct LinearSpec: Sendable {
    public var kind: LayerKind
    /// Path inside a block, e.g. `self_attn.q_proj`.
    public var path: String
    public var stage: LinearStage
    /// First output column inside the stage's packed output (k_proj: qDim; up_proj: intermediate).
    public var outputOffset: Int
    public var outFeatures: Int
    public var inFeatures: Int
    public var bias: Bool

    public init(_ kind: LayerKind, path: String, stage: LinearStage, offset: Int = 0, out: Int, in inFeatures: Int, bias: Bool = false) {
        self.kind = kind
        self.path = path
        self.stage = stage
        self.outputOffset = offset
        self.outFeatures = out
        self.inFeatures = inFeatures
        self.bias = bias
    }
}

/// Checkpoint tensor names, verbatim (with `.weight`).
public struct TensorNames: Sendable {
    public var embed = "model.embed_tokens.weight"
    public var finalNorm = "model.norm.weight"
    public var lmHead = "lm_head.weight"
    /// Blocks are `<blockPrefix><n>.`
    public var blockPrefix = "model.layers."
    /// Inside a block.
    public var inputNorm = "input_layernorm.weight"
    /// Before the MLP (Llama: post_attention_layernorm; Gemma 2/3: pre_feedforward_layernorm).
    public var mlpNorm = "post_attention_layernorm.weight"
    /// Gemma 2/3 sandwich norms on the attention and MLP outputs.
    public var attentionOutNorm: String? = nil
    public var mlpOutNorm: String? = nil
    public var qNorm: String? = nil
    public var kNorm: String? = nil
    public init() {}
}

extension TransformerSpec {
    /// The Llama block's seven linear modules (biases by the caller's rule).
    static func llamaLinears(hidden H: Int, qDim: Int, kvDim: Int, intermediate I: Int,
                             qkvBias: Bool = false, oBias: Bool = false, mlpBias: Bool = false) -> [LinearSpec] {
        [LinearSpec(.q_proj, path: "self_attn.q_proj", stage: .qkv, offset: 0, out: qDim, in: H, bias: qkvBias),
         LinearSpec(.k_proj, path: "self_attn.k_proj", stage: .qkv, offset: qDim, out: kvDim, in: H, bias: qkvBias),
         LinearSpec(.v_proj, path: "self_attn.v_proj", stage: .qkv, offset: qDim + kvDim, out: kvDim, in: H, bias: qkvBias),
         LinearSpec(.o_proj, path: "self_attn.o_proj", stage: .attentionOut, out: H, in: qDim, bias: oBias),
         LinearSpec(.gate_proj, path: "mlp.gate_proj", stage: .gateUp, offset: 0, out: I, in: H, bias: mlpBias),
         LinearSpec(.up_proj, path: "mlp.up_proj", stage: .gateUp, offset: I, out: I, in: H, bias: mlpBias),
         LinearSpec(.down_proj, path: "mlp.down_proj", stage: .mlpOut, out: H, in: I, bias: mlpBias)]
    }
}
