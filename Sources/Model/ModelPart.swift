import Foundation

/// The part of a model one process holds: all of it, or one pipeline stage's consecutive blocks
/// (DESIGN.md section 12), with the token embedding on the first stage and the final norm and
/// lm_head on the last (a tied lm_head is the embedding, so the last stage holds it too).
public struct ModelPart: Sendable, Equatable, CustomStringConvertible {
    public var blocks: Range<Int>
    /// Holds the token embedding (runs it).
    public var embedding: Bool
    /// Holds the final norm and lm_head (runs the loss).
    public var head: Bool

    public init(blocks: Range<Int>, embedding: Bool, head: Bool) {
        self.blocks = blocks
        self.embedding = embedding
        self.head = head
    }

    public static func whole(_ spec: TransformerSpec) -> ModelPart {
        ModelPart(blocks: 0..<spec.blocks, embedding: true, head: true)
    }

    /// Stage s of P: consecutive blocks, at least one a stage, with the stages' weights as even as
    /// block boundaries allow (the first stage's embedding and the last stage's lm_head count as
    /// the parameters they hold: several blocks' worth at a 128 k vocabulary).
    public static func stage(_ s: Int, of stages: Int, spec: TransformerSpec) -> ModelPart {
        let counts = stageBlockCounts(stages: stages, blocks: spec.blocks, block: spec.blockParameters,
                                      first: spec.vocabSize * spec.hiddenSize, last: spec.vocabSize * spec.hiddenSize)
        let start = counts.prefix(s).reduce(0, +)
        return ModelPart(blocks: start..<(start + counts[s]), embedding: s == 0, head: s == stages - 1)
    }

    /// Blocks per stage minimising the largest stage's parameters, where every block holds `block`,
    /// the first stage `first` more and the last `last` more (one stage: both). Ties go to the
    /// most even split; the middle stages differ by at most one block.
    public static func stageBlockCounts(stages P: Int, blocks B: Int, block w: Int, first: Int, last: Int) -> [Int] {
        guard P > 1 else { return [B] }
        // More stages than blocks (refused by the commands): as even as can be, some empty.
        guard B >= P else { return (0..<P).map { ($0 + 1) * B / P - $0 * B / P } }
        var best: [Int] = []
        var bestCost = Int.max, bestSpread = Int.max
        for n0 in 1...(B - P + 1) {
            for nl in 1...(B - n0 - (P - 2)) {
                let middle = B - n0 - nl
                let m = P - 2
                if m == 0 && middle != 0 { continue }
                if m > 0 && middle < m { continue }
                var counts = [n0]
                if m > 0 { for i in 0..<m { counts.append(middle / m + (i < middle % m ? 1 : 0)) } }
                counts.append(nl)
                let costs = counts.enumerated().map { i, n in n * w + (i == 0 ? first : 0) + (i == P - 1 ? last : 0) }
                let cost = costs.max()!, spread = counts.max()! - counts.min()!
                if cost < bestCost || (cost == bestCost && spread < bestSpread) {
                    best = counts; bestCost = cost; bestSpread = spread
                }
            }
        }
        return best
    }

    /// Whether this part loads the checkpoint tensor `name`.
    public func holds(tensor name: String, spec: TransformerSpec) -> Bool {
        let n = spec.names
        if name.hasPrefix(n.blockPrefix) {
            let rest = name.dropFirst(n.blockPrefix.count)
            if let b = Int(rest.prefix(while: \.isNumber)) { return blocks.contains(b) }
        }
        if name == n.embed { return embedding || (head && spec.tieWordEmbeddings) }
        if name == n.lmHead || name == n.finalNorm { return head }
        return true
    }

    public var description: String {
        var parts = ["blocks \(blocks.lowerBound)–\(blocks.upperBound - 1)"]
        if embedding { parts.insert("embedding", at: 0) }
        if head { parts.append("final norm and lm_head") }
        return parts.joined(separator: ", ")
    }
}

extension TransformerSpec {
    /// Parameters of one block's linear layers (the norms are a rounding error beside them).
    public var blockParameters: Int { linears.map { $0.outFeatures * $0.inFeatures }.reduce(0, +) }
}
