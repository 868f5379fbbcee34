import Foundation

public let ilaVersion = "0.1.0"

/// What `ila-diff` reports of one layer.
public struct LayerSummary: Sendable {
    public let layer: LinearLayer
    public let shape: [Int]
    public let normDelta: Double
    public let normBase: Double
    public let relChange: Double
    public let rank: Int?
    public let reconstructionError: Double?

    public init(_ d: LayerDelta) {
        layer = d.layer
        shape = d.shape
        normDelta = d.normDelta
        normBase = d.normBase
        relChange = d.relChange
        if case .factors(_, _, let r, _) = d.payload { rank = r } else { rank = nil }
        reconstructionError = d.reconstructionError
    }
}

/// The `ila-diff` table and JSON (DESIGN.md section 2).
public struct DiffReport: Sendable {
    public let kind: String
    public let layers: [LayerSummary]
    public init(kind: String, layers: [LayerSummary]) {
        self.kind = kind
        self.layers = layers
    }

    public var jsonObject: [String: Any] {
        ["kind": kind,
         "layers": layers.map { l -> [String: Any] in
             var o: [String: Any] = ["name": l.layer.name, "block": l.layer.block, "kind": l.layer.kind.rawValue,
                                     "shape": l.shape, "norm_delta": l.normDelta, "norm_base": l.normBase,
                                     // ‖W0‖ = 0 with Δ ≠ 0 gives an infinite ratio, which JSON cannot hold.
                                     "rel_change": l.relChange.isFinite ? l.relChange as Any : NSNull()]
             if let r = l.rank { o["rank"] = r }
             if let e = l.reconstructionError { o["reconstruction_error"] = e }
             return o
         }]
    }

    /// Layers sorted by relative change (largest first), then a per-kind summary.
    public var table: String {
        let sorted = layers.sorted { ($0.relChange, $1.layer) > ($1.relChange, $0.layer) }
        let withErr = layers.contains { $0.reconstructionError != nil }
        var header = ["layer", " block", "kind", "shape", " ‖Δ‖F", " ‖W0‖F", " rel change"]
        if withErr { header.append(" svd err") }
        let rows = sorted.map { l -> [String] in
            var r = [l.layer.name, "\(l.layer.block)", l.layer.kind.rawValue, "\(l.shape[0])×\(l.shape[1])",
                     fmt(l.normDelta), fmt(l.normBase), fmt(l.relChange)]
            if withErr { r.append(l.reconstructionError.map(fmt) ?? "") }
            return r
        }
        var kindRows: [[String]] = []
        for k in LayerKind.ordered(layers.map(\.layer.kind)) {
            let ls = layers.filter { $0.layer.kind == k }
            guard !ls.isEmpty else { continue }
            let rel = ls.map(\.relChange)
            let top = ls.max { $0.relChange < $1.relChange }!
            kindRows.append([k.rawValue, "\(ls.count)", fmt(rel.reduce(0, +) / Double(rel.count)),
                             fmt(rel.min()!), fmt(rel.max()!), "\(top.layer.block)"])
        }
        let totalDelta = layers.map { $0.normDelta * $0.normDelta }.reduce(0, +).squareRoot()
        let totalBase = layers.map { $0.normBase * $0.normBase }.reduce(0, +).squareRoot()
        return """
        \(kind) deltas, \(layers.count) linear layers

        \(renderTable(header: header, rows: rows))

        per kind:
        \(renderTable(header: ["kind", " layers", " mean rel", " min rel", " max rel", " max at block"], rows: kindRows))

        all layers: ‖Δ‖F \(fmt(totalDelta)), ‖W0‖F \(fmt(totalBase)), rel change \(fmt(totalBase > 0 ? totalDelta / totalBase : 0))
        """
    }
}

func fmt(_ x: Double) -> String {
    if x == 0 { return "0" }
    let a = abs(x)
    return (a >= 1e-3 && a < 1e5) ? String(format: "%.4f", x) : String(format: "%.3e", x)
}
