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

    /// Stage s of P: blocks [s·B/P, (s+1)·B/P).
    public static func stage(_ s: Int, of stages: Int, blocks: Int) -> ModelPart {
        ModelPart(blocks: (s * blocks / stages)..<((s + 1) * blocks / stages), embedding: s == 0, head: s == stages - 1)
    }

    public func isWhole(_ spec: TransformerSpec) -> Bool { self == .whole(spec) }

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
