import Foundation
import ILADiff

/// A chosen set of layers (DESIGN.md section 8): every layer of a model with its score and
/// whether it is among the top fraction. What `ila-mask export` and `ila-transfer` render.
public struct Selection: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var block: Int
        public var kind: String
        public var score: Double
        public var gamma: Double?
        /// 1 = most important.
        public var rank: Int
        public var selected: Bool
        public init(name: String, block: Int, kind: String, score: Double, gamma: Double?, rank: Int, selected: Bool) {
            self.name = name
            self.block = block
            self.kind = kind
            self.score = score
            self.gamma = gamma
            self.rank = rank
            self.selected = selected
        }
    }

    public var top: Double
    /// The ranking file this came from.
    public var source: String
    /// The target model (transfer), or nil.
    public var target: String?
    /// Blocks of the model the layers belong to.
    public var blocks: Int
    /// Canonical order.
    public var layers: [Entry]

    public init(top: Double, source: String, target: String?, blocks: Int, layers: [Entry]) {
        self.top = top
        self.source = source
        self.target = target
        self.blocks = blocks
        self.layers = layers
    }

    /// The top-F layers of a ranking.
    public init(ranking: Ranking, top: Double, source: String) {
        let selected = ranking.top(top)
        self.init(top: top, source: source, target: nil, blocks: ranking.model.blocks,
                  layers: ranking.layers.map {
                      Entry(name: $0.name, block: $0.block, kind: $0.kind, score: $0.score, gamma: $0.gamma,
                            rank: $0.rank, selected: selected.contains($0.name))
                  })
    }

    public var selectedNames: [String] { layers.filter(\.selected).map(\.name) }
}
