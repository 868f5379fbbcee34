import Foundation
import ILADiff

/// The paper's figure 1 as SVG: transformer blocks on x, the linear kinds on y, each cell coloured
/// by the layer's score (viridis), the selected layers outlined, with a colour bar.
enum SelectionFigure {
    /// matplotlib's viridis at 0, 0.1, …, 1.
    static let viridis: [(Double, Double, Double)] = [
        (68, 1, 84), (72, 36, 117), (65, 68, 135), (53, 95, 141), (42, 120, 142), (33, 145, 140),
        (34, 168, 132), (68, 191, 112), (122, 209, 81), (189, 223, 38), (253, 231, 37),
    ]

    /// Viridis at t ∈ [0, 1], linearly interpolated between the stops.
    static func colour(_ t: Double) -> (r: Int, g: Int, b: Int) {
        let t = t.isFinite ? min(1, max(0, t)) : 0.5
        let x = t * Double(viridis.count - 1)
        let i = min(viridis.count - 2, Int(x.rounded(.down)))
        let w = x - Double(i)
        let a = viridis[i], b = viridis[i + 1]
        func mix(_ p: Double, _ q: Double) -> Int { Int((p + (q - p) * w).rounded()) }
        return (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }

    static func hex(_ c: (r: Int, g: Int, b: Int)) -> String { String(format: "#%02x%02x%02x", c.r, c.g, c.b) }

    static func xml(_ s: String) -> String {
        var out = ""
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\n": out += "&#10;"
            default:
                // XML 1.0 forbids most control characters even as references.
                if ch.value < 0x20 && ch != "\t" { out += " " } else { out.unicodeScalars.append(ch) }
            }
        }
        return out
    }

    static func fmt(_ d: Double) -> String {
        let s = String(format: "%.1f", d)
        return s.hasSuffix(".0") ? String(s.dropLast(2)) : s
    }

    static func scoreText(_ d: Double) -> String { String(format: "%.4g", d) }

    static func svg(_ s: Selection, title: String?) -> String {
        // Rows: the kinds present, canonical order first, unknown kinds after.
        var kinds: [String] = LayerKind.ordered(s.layers.map { LayerKind($0.kind) }).map(\.rawValue)
        for l in s.layers where !kinds.contains(l.kind) { kinds.append(l.kind) }
        let blocks = max(s.blocks, (s.layers.map(\.block).max() ?? 0) + 1)
        var cell: [String: Selection.Entry] = [:]
        for l in s.layers { cell["\(l.block)|\(l.kind)"] = l }

        let scores = s.layers.map(\.score).filter(\.isFinite)
        let lo = scores.min() ?? 0, hi = scores.max() ?? 1
        func t(_ v: Double) -> Double { hi > lo ? (v - lo) / (hi - lo) : 0.5 }

        let selectedCount = s.layers.filter(\.selected).count
        let pct = SelectionExporter.percent(s.top)
        let sourceName = URL(fileURLWithPath: s.source).lastPathComponent
        let mainTitle = title ?? "ILA layer importance: top \(pct) of \(sourceName)"
        var subtitle = "\(selectedCount) of \(s.layers.count) linear layers selected"
        if let target = s.target { subtitle += " · transferred to \(URL(fileURLWithPath: target).lastPathComponent)" }

        // Geometry.
        let cw = min(44, max(12, (720.0 / Double(blocks)).rounded(.down)))
        let ch = 30.0
        let left = 104.0, top = 72.0
        let gridW = cw * Double(blocks), gridH = ch * Double(kinds.count)
        let barX = left + gridW + 28, barW = 14.0
        let barH = max(gridH, 120)
        // Wide enough for the title (≈ 10.5 px per bold 17 px character) and the subtitle.
        let width = max(barX + barW + 78, left + 400, left + 10.5 * Double(mainTitle.count) + 16,
                        left + 7.5 * Double(subtitle.count) + 16)
        let height = top + max(gridH, barH) + (cw >= 28 ? 104 : 86)
        let font = "DejaVu Sans, Helvetica, Arial, sans-serif"

        var o = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(fmt(width))" height="\(fmt(height))" \
        viewBox="0 0 \(fmt(width)) \(fmt(height))" font-family="\(font)" role="img">

        """
        o += "<title>\(xml(mainTitle))</title>\n"
        o += "<defs>\n<linearGradient id=\"ila-viridis\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n"
        for (i, c) in viridis.enumerated() {
            let off = Double(i) / Double(viridis.count - 1)
            o += "  <stop offset=\"\(fmt(off * 100))%\" stop-color=\"\(hex((Int(c.0), Int(c.1), Int(c.2))))\"/>\n"
        }
        o += "</linearGradient>\n</defs>\n"
        o += "<rect x=\"0\" y=\"0\" width=\"\(fmt(width))\" height=\"\(fmt(height))\" fill=\"#ffffff\"/>\n"
        o += "<text x=\"\(fmt(left))\" y=\"28\" font-size=\"17\" font-weight=\"bold\" fill=\"#1a1a1a\">\(xml(mainTitle))</text>\n"
        o += "<text x=\"\(fmt(left))\" y=\"50\" font-size=\"12.5\" fill=\"#555555\">\(xml(subtitle))</text>\n"

        // Cells.
        o += "<g id=\"cells\">\n"
        // Whole-pixel geometry keeps cells and outlines crisp.
        let outlineW = max(2, min(3, (cw / 5).rounded(.down)))
        var outlines = ""
        for (r, kind) in kinds.enumerated() {
            let y = top + Double(r) * ch
            for b in 0..<blocks {
                let x = left + Double(b) * cw
                guard let l = cell["\(b)|\(kind)"] else {
                    o += "  <rect x=\"\(fmt(x + 1))\" y=\"\(fmt(y + 1))\" width=\"\(fmt(cw - 1))\" height=\"\(fmt(ch - 1))\" fill=\"#eeeeee\"><title>block \(b) \(xml(kind)): no layer</title></rect>\n"
                    continue
                }
                let c = colour(t(l.score))
                var tip = "\(l.name)\nscore \(scoreText(l.score))"
                if let g = l.gamma { tip += " · γ \(String(format: "%.3f", g))" }
                tip += " · rank \(l.rank)" + (l.selected ? " · selected" : "")
                o += "  <rect class=\"cell\" x=\"\(fmt(x + 1))\" y=\"\(fmt(y + 1))\" width=\"\(fmt(cw - 1))\" height=\"\(fmt(ch - 1))\" fill=\"\(hex(c))\" data-layer=\"\(xml(l.name))\"><title>\(xml(tip))</title></rect>\n"
                if cw >= 28 {
                    let lum = 0.2126 * Double(c.r) + 0.7152 * Double(c.g) + 0.0722 * Double(c.b)
                    o += "  <text x=\"\(fmt(x + cw / 2))\" y=\"\(fmt(y + ch / 2 + 3.5))\" font-size=\"10\" text-anchor=\"middle\" fill=\"\(lum > 140 ? "#1a1a1a" : "#ffffff")\" pointer-events=\"none\">\(l.rank)</text>\n"
                }
                if l.selected {
                    let inset = 1 + outlineW / 2
                    outlines += "  <rect class=\"selected\" x=\"\(fmt(x + inset))\" y=\"\(fmt(y + inset))\" width=\"\(fmt(cw - 1 - outlineW))\" height=\"\(fmt(ch - 1 - outlineW))\" fill=\"none\" stroke=\"#111111\" stroke-width=\"\(fmt(outlineW))\" data-layer=\"\(xml(l.name))\"/>\n"
                }
            }
        }
        o += "</g>\n<g id=\"selected\">\n" + outlines + "</g>\n"

        // Axes.
        o += "<g id=\"axes\" fill=\"#333333\" font-size=\"12\">\n"
        for (r, kind) in kinds.enumerated() {
            o += "  <text x=\"\(fmt(left - 8))\" y=\"\(fmt(top + Double(r) * ch + ch / 2 + 4))\" text-anchor=\"end\">\(xml(kind))</text>\n"
        }
        let step = max(1, Int((26 / cw).rounded(.up)))
        let nice = [1, 2, 4, 5, 10, 20, 25, 50, 100].first { $0 >= step } ?? step
        for b in stride(from: 0, to: blocks, by: nice) {
            let x = left + (Double(b) + 0.5) * cw
            o += "  <line x1=\"\(fmt(x))\" y1=\"\(fmt(top + gridH))\" x2=\"\(fmt(x))\" y2=\"\(fmt(top + gridH + 4))\" stroke=\"#666666\"/>\n"
            o += "  <text x=\"\(fmt(x))\" y=\"\(fmt(top + gridH + 17))\" text-anchor=\"middle\">\(b)</text>\n"
        }
        o += "  <text x=\"\(fmt(left + gridW / 2))\" y=\"\(fmt(top + gridH + 38))\" text-anchor=\"middle\" font-size=\"13\">transformer block</text>\n"
        o += "  <text transform=\"translate(18 \(fmt(top + gridH / 2))) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">layer kind</text>\n"
        o += "</g>\n"

        // Colour bar.
        let barY = top
        o += "<g id=\"colorbar\" font-size=\"11\" fill=\"#333333\">\n"
        o += "  <text x=\"\(fmt(barX + barW / 2))\" y=\"\(fmt(barY - 10))\" text-anchor=\"middle\" font-size=\"12\">score</text>\n"
        o += "  <rect x=\"\(fmt(barX))\" y=\"\(fmt(barY))\" width=\"\(fmt(barW))\" height=\"\(fmt(barH))\" fill=\"url(#ila-viridis)\" stroke=\"#666666\" stroke-width=\"0.5\"/>\n"
        let ticks: [(Double, String)] = hi > lo
            ? [(hi, "max " + scoreText(hi)), ((lo + hi) / 2, scoreText((lo + hi) / 2)), (lo, "min " + scoreText(lo))]
            : [(hi, scoreText(hi))]
        for (v, label) in ticks {
            let y = barY + barH * (1 - t(v))
            o += "  <line x1=\"\(fmt(barX + barW))\" y1=\"\(fmt(y))\" x2=\"\(fmt(barX + barW + 4))\" y2=\"\(fmt(y))\" stroke=\"#666666\"/>\n"
            o += "  <text x=\"\(fmt(barX + barW + 7))\" y=\"\(fmt(y + 4))\">\(xml(label))</text>\n"
        }
        o += "</g>\n"

        // Legend for the outline.
        let ly = top + max(gridH, barH) + 58
        o += "<g id=\"legend\" font-size=\"12\" fill=\"#333333\">\n"
        o += "  <rect x=\"\(fmt(left))\" y=\"\(fmt(ly - 11))\" width=\"22\" height=\"14\" fill=\"\(hex(colour(0.85)))\" stroke=\"#111111\" stroke-width=\"2.5\"/>\n"
        o += "  <text x=\"\(fmt(left + 30))\" y=\"\(fmt(ly))\">selected: top \(xml(pct)) by score (\(selectedCount) layers)</text>\n"
        if cw >= 28 {
            o += "  <text x=\"\(fmt(left + 30))\" y=\"\(fmt(ly + 18))\" fill=\"#555555\">numbers in cells: rank (1 = most important)</text>\n"
        }
        o += "</g>\n</svg>\n"
        return o
    }
}
