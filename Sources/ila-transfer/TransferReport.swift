import Foundation
import ILADiff
import ILARanking
import ILATransfer

/// The human and machine read-outs of a transfer: the headline, the layer table, the per-block
/// explanation and the --json document.
enum TransferReport {
    static func fixed(_ x: Double) -> String { String(format: "%.6f", x) }
    static func short(_ x: Double) -> String { String(format: "%.6g", x) }

    /// "b3" or "b3·0.5 + b4·0.5".
    static func sources(_ p: RelativeDepthMap.Position) -> String {
        p.lo == p.hi ? "b\(p.lo)" : "b\(p.lo)·\(short(p.weightLo)) + b\(p.hi)·\(short(p.weightHi))"
    }

    static func headline(_ t: RankingTransfer, _ s: Selection) -> String {
        let n = s.layers.count, k = s.layers.filter(\.selected).count
        let mapping = t.isIdentity ? "same depth, identity" : "relative depth"
        return "\(t.rankingPath) (\(t.map.sourceBlocks) blocks) → \(t.targetPath) (\(t.map.targetBlocks) blocks, \(mapping)): "
            + "top \(short(s.top)) = \(k) of \(n) layers"
    }

    static func table(_ t: RankingTransfer, _ s: Selection, all: Bool) -> String {
        let byName = Dictionary(uniqueKeysWithValues: t.layers.map { ($0.name, $0) })
        var entries = s.layers
        if !all { entries = entries.filter(\.selected).sorted { $0.rank < $1.rank } }
        var header = [" rank", "layer", " block", "kind", " score", "source blocks"]
        if all { header.append("selected") }
        let rows = entries.map { e -> [String] in
            var row = ["\(e.rank)", e.name, "\(e.block)", e.kind, fixed(e.score),
                       byName[e.name].map { sources($0.position) } ?? ""]
            if all { row.append(e.selected ? "yes" : "") }
            return row
        }
        return renderTable(header: header, rows: rows)
    }

    /// For each target block: its source position, the source blocks and weights, and per kind
    /// the two source scores and the result.
    static func explanation(_ t: RankingTransfer, _ s: Selection) -> String {
        let ns = t.map.sourceBlocks, nt = t.map.targetBlocks
        let entry = Dictionary(uniqueKeysWithValues: s.layers.map { ($0.name, $0) })
        var out = ["Relative depth \(ns) → \(nt) blocks"
                   + (t.isIdentity ? " (equal depth: every block is its own source, the identity)" : "") + ":",
                   "  p(j) = clamp((j + 0.5)·\(ns)/\(nt) − 0.5, 0, \(ns - 1)), w = p − ⌊p⌋",
                   "  score(j, kind) = (1 − w)·s(⌊p⌋, kind) + w·s(⌈p⌉, kind)"]
        let used = Set(t.map.positions.flatMap(\.sourceBlocks))
        let unused = (0..<ns).filter { !used.contains($0) }
        if !unused.isEmpty {
            out.append("  source blocks not read: " + unused.map(String.init).joined(separator: ", "))
        }
        let byBlock = Dictionary(grouping: t.layers, by: \.block)
        for j in 0..<nt {
            let p = t.map[targetBlock: j]
            let from = p.lo == p.hi
                ? "source block \(p.lo) (weight 1)"
                : "source block \(p.lo) (weight \(short(p.weightLo))) + source block \(p.hi) (weight \(short(p.weightHi)))"
            out.append("")
            out.append("target block \(j): p = \(short(p.p)) ← \(from)")
            guard let layers = byBlock[j], !layers.isEmpty else {
                out.append("  (no linear layers in this block)")
                continue
            }
            var header = ["kind", " s(\(p.lo))"]
            if p.lo != p.hi { header.append(" s(\(p.hi))") }
            header += [" score", " rank", "selected", "layer"]
            let rows = layers.map { l -> [String] in
                var row = [l.kind.rawValue, fixed(l.sourceLo.score)]
                if p.lo != p.hi { row.append(fixed(l.sourceHi.score)) }
                let e = entry[l.name]
                row += [fixed(l.score), e.map { "\($0.rank)" } ?? "", (e?.selected ?? false) ? "yes" : "", l.name]
                return row
            }
            out.append(renderTable(header: header, rows: rows).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        }
        return out.joined(separator: "\n")
    }

    /// The json export of the selection, byte for byte as `SelectionExporter` writes it (the one
    /// implementation of the formats), with one more top-level key, "transfer": the block map and,
    /// with `details`, per layer the source layers and scores it was computed from.
    static func json(_ t: RankingTransfer, _ s: Selection, _ options: ExportOptions, details: Bool) throws -> String {
        let export = String(decoding: try SelectionExporter.render(s, format: .json, options: options), as: UTF8.self)
        var transfer: [String: Any] = [
            "source_blocks": t.map.sourceBlocks,
            "target_blocks": t.map.targetBlocks,
            "identity": t.isIdentity,
            "blocks": t.map.positions.map { p -> [String: Any] in
                ["block": p.target, "p": p.p, "lo": p.lo, "hi": p.hi, "weight_lo": p.weightLo, "weight_hi": p.weightHi]
            },
        ]
        if details {
            transfer["layers"] = t.layers.map { l -> [String: Any] in
                ["name": l.name, "block": l.block, "kind": l.kind.rawValue,
                 "source_lo": l.sourceLo.name, "source_hi": l.sourceHi.name,
                 "score_lo": l.sourceLo.score, "score_hi": l.sourceHi.score,
                 "w": l.position.w, "score": l.score]
            }
        }
        let inner = try jsonText(transfer).split(separator: "\n", omittingEmptySubsequences: false)
            .enumerated().map { $0.offset == 0 ? String($0.element) : "  " + $0.element }.joined(separator: "\n")
        // Insert before the closing brace of the top-level object.
        guard let close = export.lastIndex(of: "}") else {
            throw ILAError("internal: the json export of the selection is not a JSON object")
        }
        let head = export[..<close].replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        let text = head + ",\n  \"transfer\": " + inner + "\n}"
        guard (try? JSONSerialization.jsonObject(with: Data(text.utf8))) is [String: Any] else {
            throw ILAError("internal: the json export of the selection is not a JSON object")
        }
        return text
    }
}
