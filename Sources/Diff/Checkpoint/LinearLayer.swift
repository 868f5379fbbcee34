import Foundation

/// A linear module kind: the last component of its module path (`q_proj`, `qkv_proj`, ...).
/// The kinds of a model are its architecture's own linear modules (DESIGN.md section 3); they
/// travel with the model in deltas.h5 and ranking.json, so any architecture's kinds are valid here.
public struct LayerKind: RawRepresentable, Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }

    public static let q_proj = LayerKind("q_proj"), k_proj = LayerKind("k_proj"), v_proj = LayerKind("v_proj")
    public static let qkv_proj = LayerKind("qkv_proj"), o_proj = LayerKind("o_proj")
    public static let gate_proj = LayerKind("gate_proj"), up_proj = LayerKind("up_proj")
    public static let gate_up_proj = LayerKind("gate_up_proj"), down_proj = LayerKind("down_proj")

    /// The Llama family's kinds in block order.
    public static let llama: [LayerKind] = [.q_proj, .k_proj, .v_proj, .o_proj, .gate_proj, .up_proj, .down_proj]
    /// Every supported architecture's kinds merged into one block order (Llama's and Phi-3's
    /// orders are both subsequences of it), so canonical order needs no architecture at hand.
    public static let known: [LayerKind] = [.q_proj, .k_proj, .v_proj, .qkv_proj, .o_proj,
                                            .gate_proj, .up_proj, .gate_up_proj, .down_proj]

    /// Position in the block order; kinds of other architectures come after, by name.
    public var order: Int { Self.known.firstIndex(of: self) ?? Self.known.count }
    public static func < (a: Self, b: Self) -> Bool { (a.order, a.rawValue) < (b.order, b.rawValue) }
    public var description: String { rawValue }

    /// Whether a module path's last component names a linear kind: a known kind or any `*_proj`.
    public var isLinearKind: Bool { Self.known.contains(self) || (rawValue.hasSuffix("_proj") && rawValue.count > 5) }

    /// The kinds present, in block order.
    public static func ordered<S: Sequence>(_ kinds: S) -> [LayerKind] where S.Element == LayerKind {
        Array(Set(kinds)).sorted()
    }
}

/// A linear layer named by its module path without `.weight`, e.g. `model.layers.12.mlp.up_proj`.
public struct LinearLayer: Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    public let name: String
    public let block: Int
    public let kind: LayerKind

    /// Parses a module path; nil unless it contains `layers.<n>.` and ends in a linear kind.
    public init?(name: String) {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard let last = parts.last else { return nil }
        let kind = LayerKind(String(last))
        guard kind.isLinearKind, last.allSatisfy({ $0.isASCII }) else { return nil }
        var block: Int?
        for i in 0..<(parts.count - 1) where parts[i] == "layers" {
            if let b = Int(parts[i + 1]), b >= 0, parts[i + 1].allSatisfy(\.isASCII) { block = b }
        }
        guard let block else { return nil }
        self.name = name
        self.block = block
        self.kind = kind
    }

    /// Canonical order: block ascending, then kind in block order (then name, for safety).
    public static func < (a: Self, b: Self) -> Bool {
        (a.block, a.kind.order, a.kind.rawValue, a.name) < (b.block, b.kind.order, b.kind.rawValue, b.name)
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
