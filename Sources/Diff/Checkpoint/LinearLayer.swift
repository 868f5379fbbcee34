import Foundation

/// The seven linear kinds of a Llama-family block, in canonical order (DESIGN.md section 3).
public enum LayerKind: String, CaseIterable, Codable, Sendable, Comparable {
    case q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj

    public var order: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (a: Self, b: Self) -> Bool { a.order < b.order }
    /// The parent module of this kind in Llama naming.
    public var parent: String { order < 4 ? "self_attn" : "mlp" }
}

/// A linear layer named by its module path without `.weight`, e.g. `model.layers.12.mlp.up_proj`.
public struct LinearLayer: Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    public let name: String
    public let block: Int
    public let kind: LayerKind

    /// Parses a module path; nil unless it contains `layers.<n>.` and ends in one of the 7 kinds.
    public init?(name: String) {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard let last = parts.last, let kind = LayerKind(rawValue: String(last)) else { return nil }
        var block: Int?
        for i in 0..<(parts.count - 1) where parts[i] == "layers" {
            if let b = Int(parts[i + 1]), b >= 0, parts[i + 1].allSatisfy(\.isASCII) { block = b }
        }
        guard let block else { return nil }
        self.name = name
        self.block = block
        self.kind = kind
    }

    /// Canonical order: block ascending, then kind q k v o gate up down (then name, for safety).
    public static func < (a: Self, b: Self) -> Bool {
        (a.block, a.kind.order, a.name) < (b.block, b.kind.order, b.name)
    }

    public var weightName: String { name + ".weight" }
    public var description: String { name }

    /// The linear layers of a checkpoint: every 2-D `<layer>.weight` tensor whose layer parses.
    public static func layers(in checkpoint: ModelCheckpoint) -> [LinearLayer] {
        checkpoint.names.compactMap { n -> LinearLayer? in
            guard n.hasSuffix(".weight"), checkpoint.info(n)?.shape.count == 2 else { return nil }
            return LinearLayer(name: String(n.dropLast(7)))
        }.sorted()
    }
}
