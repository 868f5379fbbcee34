import ArgumentParser
import Foundation
import ILACommandLine
import ILACommandOptions
import ILADiff
import ILAMask
import ILAModel
import ILAEngine
import ILARanking

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "How much rankings agree: Jaccard of top-F sets, Spearman and Kendall τ-b of scores.",
        discussion: """
        Prints three symmetric matrices, rows and columns labelled by the rankings' file names. \
        Jaccard compares the top-F layer sets (|A∩B| / |A∪B|); Spearman's ρ (average ranks for \
        ties) and Kendall's τ-b compare the scores of all layers. The rankings must cover the same \
        layers. The paper reports ~0.9 Jaccard for top-75% sets learned on different datasets.

        Examples:
          ila-mask compare alpaca/ranking.json lima/ranking.json
          ila-mask compare r1.json r2.json r3.json --top 0.3
          ila-mask compare r1.json r2.json --json
        """)

    @Argument(help: ArgumentHelp("Two or more ranking.json files from `ila-mask learn`.", valueName: "ranking"))
    var rankings: [String] = []

    @Option(help: "Fraction of layers in the top sets that Jaccard compares, in (0, 1]. Example: --top 0.3")
    var top: Double = 0.75

    @Flag(help: "Print {\"top\", \"rankings\", \"jaccard\", \"spearman\", \"kendall\"} as JSON (undefined values as null).")
    var json = false

    func validate() throws {
        if rankings.count < 2 { throw ValidationError("compare needs at least 2 ranking files, got \(rankings.count)") }
        if !(top > 0 && top <= 1) { throw ValidationError("--top must be in (0, 1], got \(top)") }
    }

    func run() throws {
        try runReportingErrors {
            let c = try RankingComparison(paths: rankings, top: top)
            if json {
                printOut(try jsonText(c.jsonObject))
                return
            }
            let labels = Self.shortNames(rankings)
            let first = try Ranking.load(path: rankings[0])
            let k = Ranking.topCount(fraction: top, of: first.layers.count)
            var text = "\(rankings.count) rankings over \(first.layers.count) layers; top \(Self.percent(top)) = \(k) layers\n"
            if labels != rankings {
                text += zip(labels, rankings).map { "  \($0) = \($1)" }.joined(separator: "\n") + "\n"
            }
            for (title, m) in [("Jaccard of top-\(Self.percent(top)) sets", c.jaccard),
                               ("Spearman ρ of scores", c.spearman), ("Kendall τ-b of scores", c.kendall)] {
                let rows = m.enumerated().map { i, row in
                    [labels[i]] + row.map { $0.isFinite ? String(format: "%.3f", $0) : "n/a" }
                }
                text += "\n\(title)\n" + renderTable(header: [""] + labels.map { " " + $0 }, rows: rows) + "\n"
            }
            printOut(text)
        }
    }

    static func percent(_ f: Double) -> String {
        let p = f * 100
        return p == p.rounded() ? "\(Int(p))%" : String(format: "%.4g%%", p)
    }

    /// The shortest path suffixes (file name, then parent/file, …) that tell the files apart,
    /// without a `.json` extension.
    static func shortNames(_ paths: [String]) -> [String] {
        let comps = paths.map { p -> [String] in
            var c = p.split(separator: "/").map(String.init)
            if c.isEmpty { c = [p] }
            if let last = c.last, last.hasSuffix(".json"), last.count > 5 { c[c.count - 1] = String(last.dropLast(5)) }
            return c
        }
        let maxDepth = comps.map(\.count).max() ?? 1
        // The shortest suffix depth that tells different files apart; the same file given twice
        // keeps its name with a number.
        let distinct = Set(comps.map { $0.joined(separator: "/") }).count
        var names = comps.map { $0.joined(separator: "/") }
        for depth in 1...max(1, maxDepth) {
            let candidate = comps.map { $0.suffix(depth).joined(separator: "/") }
            if Set(candidate).count == distinct { names = candidate; break }
        }
        var seen: [String: Int] = [:]
        names = names.map { n in
            seen[n, default: 0] += 1
            return seen[n]! == 1 ? n : "\(n) (\(seen[n]!))"
        }
        return names
    }
}
