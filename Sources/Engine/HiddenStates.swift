import Foundation
import ILAModel

/// A point of the residual stream that the forward pass shows to a hidden-state observer.
public enum HiddenPoint: Hashable, Sendable {
    /// The residual stream entering block b [T, H]; `blockInput(blocks)` is the last block's raw
    /// output (before the final norm). blockInput(0) is the embedding output (× √hidden for Gemma),
    /// transformers' hidden_states[0].
    case blockInput(Int)
    /// The residual stream of block b after its attention (and its residual add), before the MLP [T, H].
    case afterAttention(Int)
    /// The final norm's output [T, H]: transformers' last hidden_states entry.
    case finalNorm
}

/// (point, the micro-batch's rows, values [T, H] row-major with the rows' tokens consecutive).
/// The pointer is valid only during the call.
typealias HiddenStateHook = (HiddenPoint, [TokenizedRow], UnsafePointer<Float>) -> Void

extension TransformerEngine {
    /// Runs the forward pass over `rows` under mask `gamma` (as `evaluate`) and calls `visit` for
    /// every hidden state of every micro-batch, in forward order: blockInput(0), afterAttention(0),
    /// blockInput(1), …, afterAttention(blocks − 1), blockInput(blocks), finalNorm. `visit` gets the
    /// micro-batch's rows (their tokens are consecutive in `values`, [Σ row lengths, hidden],
    /// valid only during the call). An error `visit` throws stops the pass and is rethrown.
    public func forEachHiddenState(rows: [TokenizedRow], gamma: [Float],
                                   _ visit: (HiddenPoint, [TokenizedRow], UnsafePointer<Float>) throws -> Void) throws -> EngineResult {
        var failure: Error?
        var result = EngineResult(nllSum: 0, tokens: 0, rows: 0, dNllSumDGamma: [])
        try withoutActuallyEscaping(visit) { visit in
            hiddenStateHook = { point, rows, values in
                guard failure == nil else { return }
                do { try visit(point, rows, values) } catch { failure = error }
            }
            defer { hiddenStateHook = nil }
            result = try evaluate(rows: rows, gamma: gamma)
        }
        if let failure { throw failure }
        return result
    }
}
