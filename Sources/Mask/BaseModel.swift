import Foundation
import ILAModel
import ILADiff

/// A base model ready to run: its checkpoint, its architecture description, weights, and
/// (when present) tokenizer.
public final class BaseModel: @unchecked Sendable {
    public let checkpoint: ModelCheckpoint
    public let spec: TransformerSpec
    public let weights: ModelWeights

    /// - Parameters:
    ///   - widenWeights: hold bf16/f16 matrices as float32 (twice the memory, same results).
    ///   - part: which blocks to load (a pipeline stage's; default the whole model).
    ///   - beforeLoading: called with the headers and the description before any weight is read
    ///     (the memory plan refuses there).
    public init(path: String, widenWeights: Bool = false, part: ((TransformerSpec) throws -> ModelPart)? = nil,
                beforeLoading: (ModelCheckpoint, TransformerSpec) throws -> Void = { _, _ in }) throws {
        checkpoint = try ModelCheckpoint(path: path)
        guard let configPath = checkpoint.sidecar("config.json") else {
            throw ILAError(file: path, "no config.json (the engine needs a model directory, not a bare .safetensors file)")
        }
        spec = try Architectures.load(configAt: configPath)
        try beforeLoading(checkpoint, spec)
        weights = try ModelWeights.load(spec: spec, checkpoint: checkpoint, widen: widenWeights, part: try part?(spec))
    }

    /// tokenizer.json and the BOS/EOS ids of this model.
    public func tokenizer() throws -> (Tokenizer, SpecialTokens) {
        guard let dir = checkpoint.directory, let p = checkpoint.sidecar("tokenizer.json") else {
            throw ILAError(file: checkpoint.path, "no tokenizer.json beside the model")
        }
        let tok = try Tokenizer(path: p)
        return (tok, try SpecialTokens.resolve(directory: dir, tokenizer: tok))
    }

    /// Tokenized rows of a JSONL file for this model.
    public func rows(path: String, template: PromptTemplate, seqLen: Int, limit: Int? = nil) throws -> [TokenizedRow] {
        let (tok, special) = try tokenizer()
        let rows = try loadInstructionRows(path: path, template: template, tokenizer: tok, special: special,
                                           seqLen: seqLen, limit: limit)
        // Pre-tokenized rows and a tokenizer larger than the model can hold ids the model lacks.
        for (n, row) in rows.enumerated() {
            if let bad = (row.ids + row.labels.filter { $0 != -100 }).first(where: { $0 < 0 || $0 >= spec.vocabSize }) {
                throw ILAError(file: path, "row \(n + 1): token id \(bad) is outside the vocabulary of the model (\(spec.vocabSize) tokens)")
            }
        }
        return rows
    }
}
