import Foundation
import ILADiff
import ILARanking

/// One layer of the target model with the score it receives from the source ranking.
public struct TransferredLayer: Sendable, Equatable {
    /// The target layer (name exactly as in the target checkpoint).
    public let layer: LinearLayer
    /// Where its block reads from in the source model.
    public let position: RelativeDepthMap.Position
    /// The source layers at ⌊p⌋ and ⌈p⌉ (the same layer when p is whole) and their scores.
    public let sourceLo: Ranking.Layer
    public let sourceHi: Ranking.Layer
    /// (1 − w) · s(⌊p⌋) + w · s(⌈p⌉).
    public let score: Double

    public var name: String { layer.name }
    public var block: Int { layer.block }
    public var kind: LayerKind { layer.kind }
}

/// A source model's ranking carried over to a target model's layers (DESIGN.md section 7):
/// every target layer gets the relative-depth interpolation of the source scores of its kind,
/// and the target layers are ranked by those scores (ties by canonical order) exactly as a
/// ranking of the target itself would be.
public struct RankingTransfer: Sendable {
    public let ranking: Ranking
    /// The ranking file (for messages and the selection's `source`).
    public let rankingPath: String
    /// The target model as the user named it.
    public let targetPath: String
    public let map: RelativeDepthMap
    /// Every target layer, canonical order.
    public let layers: [TransferredLayer]
    /// The transferred scores as a ranking of the target's layers (gamma nil).
    public let targetRanking: Ranking

    /// Transfers `ranking` onto `targetLayers`. The target's block count is `targetBlocks`, or
    /// one more than its highest block index.
    public init(ranking: Ranking, rankingPath: String, targetLayers: [LinearLayer], targetPath: String,
                targetBlocks: Int? = nil, targetArchitecture: String? = nil) throws {
        let targets = Array(Set(targetLayers)).sorted()
        guard let last = targets.last else {
            throw ILAError(file: targetPath, "has no linear layers (q/k/v/o/gate/up/down_proj weights of `layers.<n>` blocks) among its tensors")
        }
        let highest = targets.map(\.block).max() ?? last.block
        let nt = targetBlocks ?? (highest + 1)
        guard nt > highest else {
            throw ILAError(file: targetPath, "has layers in block \(highest) but only \(nt) blocks")
        }
        let ns = ranking.model.blocks
        guard ns >= 1 else { throw ILAError(file: rankingPath, "model.blocks is \(ns); at least 1 is needed") }

        // Source scores by (block, kind); two layers for one slot would make the transfer ambiguous.
        var source: [Int: [LayerKind: Ranking.Layer]] = [:]
        for l in ranking.layers {
            let kind = LayerKind(l.kind)
            if let other = source[l.block]?[kind] {
                throw ILAError(file: rankingPath, "layers \(other.name) and \(l.name) both are \(l.kind) of block \(l.block); cannot tell which to transfer")
            }
            source[l.block, default: [:]][kind] = l
        }

        // Every kind of the target must be scored in the source.
        let sourceKinds = Set(source.values.flatMap(\.keys))
        let targetKinds = Set(targets.map(\.kind))
        let missing = LayerKind.ordered(targetKinds.subtracting(sourceKinds))
        if !missing.isEmpty {
            let example = targets.first { $0.kind == missing[0] }?.name ?? missing[0].rawValue
            let covered = LayerKind.ordered(sourceKinds).map(\.rawValue).joined(separator: ", ")
            throw ILAError(file: rankingPath,
                           "has no \(missing.map(\.rawValue).joined(separator: ", ")) scores, but the target \(targetPath) has "
                           + "\(missing.count == 1 ? "that kind" : "those kinds") (e.g. \(example)); the ranking covers only \(covered)")
        }

        let map = try RelativeDepthMap(sourceBlocks: ns, targetBlocks: nt)
        var out: [TransferredLayer] = []
        out.reserveCapacity(targets.count)
        for t in targets {
            let pos = map[targetBlock: t.block]
            func sourceLayer(_ b: Int) throws -> Ranking.Layer {
                guard let l = source[b]?[t.kind] else {
                    throw ILAError(file: rankingPath,
                                   "has no \(t.kind.rawValue) score for source block \(b), which target layer \(t.name) of \(targetPath) needs "
                                   + "(block \(t.block) of \(nt) maps to source position \(pos.p) of \(ns) blocks)")
                }
                return l
            }
            let lo = try sourceLayer(pos.lo)
            let hi = try sourceLayer(pos.hi)
            out.append(TransferredLayer(layer: t, position: pos, sourceLo: lo, sourceHi: hi,
                                        score: pos.interpolate(lo.score, hi.score)))
        }

        self.ranking = ranking
        self.rankingPath = rankingPath
        self.targetPath = targetPath
        self.map = map
        self.layers = out
        self.targetRanking = Ranking.from(
            scores: out.map { ($0.layer, $0.score) }, gammas: nil,
            architecture: targetArchitecture ?? ranking.model.architecture, blocks: nt,
            source: Ranking.Source(base: targetPath, deltas: ranking.source?.deltas ?? "",
                                   data: ranking.source?.data ?? "", tool: "ila-transfer \(ilaVersion)"),
            objective: ranking.objective, history: nil)
    }

    /// Loads the ranking (format and version checked) and the target's layers from its
    /// safetensors headers only; no weights are read.
    public static func load(rankingPath: String, targetPath: String) throws -> RankingTransfer {
        let ranking = try Ranking.load(path: rankingPath)
        let checkpoint = try ModelCheckpoint(path: targetPath)
        let layers = LinearLayer.layers(in: checkpoint)
        var architecture: String?
        if let config = checkpoint.sidecar("config.json"),
           let obj = try? readJSONObject(config), let archs = obj["architectures"] as? [String] {
            architecture = archs.first
        }
        return try RankingTransfer(ranking: ranking, rankingPath: rankingPath, targetLayers: layers,
                                   targetPath: targetPath, targetArchitecture: architecture)
    }

    /// Whether source and target have the same depth (the transfer is then the identity).
    public var isIdentity: Bool { map.isIdentity }

    /// The target layers with rank and selection for the top fraction `top` (gamma nil), ready
    /// for `SelectionExporter`.
    public func selection(top: Double) -> Selection {
        var s = Selection(ranking: targetRanking, top: top, source: rankingPath)
        s.target = targetPath
        return s
    }

    /// The transferred layer named `name`.
    public func layer(named name: String) -> TransferredLayer? { layers.first { $0.name == name } }
}
