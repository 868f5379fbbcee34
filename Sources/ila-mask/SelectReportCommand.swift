import ArgumentParser
import Foundation
import ILACommandLine
import ILACommandOptions
import ILADiff
import ILAMask
import ILAModel
import ILAEngine
import ILARanking
import ILATune
import ILACollective

struct SelectReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "select-report",
        abstract: "Which layer score picks the layers best: every method's top-F selections, their overlap, and the held-out NLL each keeps.",
        discussion: """
        For one model, its deltas and a data set: runs every --methods score (as `score` does) and \
        reads every --ranking file, takes each one's top-F layers for each --fractions F, and \
        prints the pairwise Jaccard of those sets and the held-out NLL on --eval when only the \
        selected layers' deltas are kept (γ = 1 on them, 0 elsewhere: `eval --ranking R --top F`), \
        beside the base (no delta), all deltas, and random selections of the same size (mean of \
        --random seeded draws). Lower NLL = the method kept more of the alignment.

        (--tune also tunes each selection with ila-tune and reports the tuned model's held-out NLL; the \
        report's evaluators are one closure per column, see SelectionEvaluator.)

        Examples:
          ila-mask select-report --base base/ --deltas deltas.h5 --data train.jsonl --eval eval.jsonl --limit 64 --eval-limit 64
          ila-mask select-report --base base/ --deltas deltas.h5 --data train.jsonl --eval eval.jsonl --ranking ila.json --svg nll.svg --json
          ila-mask select-report --base base/ --deltas deltas.h5 --data train.jsonl --eval eval.jsonl --methods spectrum,taylor --fractions 0.2,0.4
        """)

    @OptionGroup var options: ScoreOptions

    @Option(help: ArgumentHelp("Score methods to run, comma-separated (\(ScoreMethod.allCases.map(\.rawValue).joined(separator: ", "))); 'none' to use only --ranking files. ila is left out of the default (it trains; pass its ranking from `learn` with --ranking, or name it here).",
                               valueName: "list"))
    var methods: String = "rel-change,spectrum,block-influence,block-influence-sublayer,angular,taylor,ablation"

    @Option(help: ArgumentHelp("A ranking.json to include (from learn, score or elsewhere); repeatable. Labelled by its objective.method, else its file name.",
                               valueName: "ranking.json"))
    var ranking: [String] = []

    @Option(help: "Held-out JSONL the selections are evaluated on.")
    var eval: String

    @Option(name: .customLong("eval-limit"), help: "Rows of --eval to use (the first N).")
    var evalLimit: Int = 64

    @Option(help: ArgumentHelp("Fractions F of the layers to select, comma-separated, each in (0, 1].", valueName: "list"))
    var fractions: String = "0.1,0.3,0.5,0.75"

    @Option(help: "Random selections of each size to average as a baseline (0: none); seeded by --seed.")
    var random: Int = 3

    @Option(help: "Write the plot of held-out NLL against F per method (SVG) here.")
    var svg: String?

    @Option(name: .customLong("save-rankings"), help: "Write each computed method's ranking.json into this directory (<method>.json).")
    var saveRankings: String?

    @Option(name: .shortAndLong, help: "Also write the report as JSON (the --json shape) to this file.")
    var output: String?

    @Flag(help: "Also tune each selection with ila-tune (LoRA on those layers only, from the base, PEFT's initialisation, seed --seed) on --data and report the held-out NLL of the tuned model.")
    var tune = false

    @Option(name: .customLong("tune-steps"), help: "With --tune: LoRA steps per selection.")
    var tuneSteps: Int = 100

    @Option(name: .customLong("tune-batch"), help: "With --tune: rows per step.")
    var tuneBatch: Int = 8

    @Option(name: .customLong("tune-lr"), help: "With --tune: peak learning rate (cosine, 3% warmup; r 8, alpha 16).")
    var tuneLR: Double = 2e-3

    @Flag(help: "Print the report as JSON: {\"fractions\", \"methods\", \"nll\", \"jaccard\", \"selections\", \"nll_base\", \"nll_all_deltas\", \"random\", …}.")
    var json = false

    var methodList: [ScoreMethod] {
        get throws {
            if methods == "none" { return [] }
            return try methods.split(separator: ",").map { name in
                guard let m = ScoreMethod(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("--methods: unknown method '\(name)' (known: \(ScoreMethod.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                return m
            }
        }
    }

    var fractionList: [Double] {
        get throws {
            try fractions.split(separator: ",").map { f in
                guard let v = Double(f.trimmingCharacters(in: .whitespaces)), v > 0, v <= 1 else {
                    throw ValidationError("--fractions: '\(f)' is not a number in (0, 1]")
                }
                return v
            }
        }
    }

    func validate() throws {
        guard options.deltas != nil else { throw ValidationError("select-report needs --deltas (the selections keep or drop them)") }
        let ms = try methodList
        if ms.isEmpty && ranking.isEmpty { throw ValidationError("nothing to compare: give --methods or --ranking") }
        if Set(ms).count != ms.count { throw ValidationError("--methods names a method twice") }
        if try fractionList.isEmpty { throw ValidationError("--fractions is empty") }
        if evalLimit < 1 { throw ValidationError("--eval-limit must be at least 1") }
        if random < 0 { throw ValidationError("--random must be 0 or more") }
        if ms.contains(where: \.needsData) && options.data == nil { throw ValidationError("--methods \(ms.filter(\.needsData).map(\.rawValue).joined(separator: ",")) need --data") }
        if options.distance != nil && !ms.contains(.angular) { throw ValidationError("--distance applies only to the angular method") }
        if let svg, !svg.hasSuffix(".svg") { throw ValidationError("--svg must end in .svg") }
        if tune && options.data == nil { throw ValidationError("--tune needs --data (the rows to tune on)") }
        if tuneSteps < 1 || tuneBatch < 1 { throw ValidationError("--tune-steps and --tune-batch must be at least 1") }
        if !(tuneLR > 0 && tuneLR.isFinite) { throw ValidationError("--tune-lr must be positive") }
    }

    /// Held-out NLL after ila-tune on only `selected` (the same Tuner ila-tune runs; under several
    /// ranks with ila-tune's data-parallel seam: each step's rows split, sums and gradients all-reduced).
    func tunedNLL(_ selected: Set<String>, model: BaseModel, train: [TokenizedRow], eval: [TokenizedRow],
                  comm: Communicator) throws -> Double {
        var o = TuneOptions()
        o.lr = tuneLR; o.batch = tuneBatch; o.steps = tuneSteps; o.seqLen = options.seqLen; o.seed = options.seed
        let spec = model.spec
        let layers = spec.allLayers.filter { selected.contains($0.name) }.map { l -> LoRAParameters.Layer in
            let sh = spec.shape(of: l.kind)!
            return .init(layer: l, rank: o.r, inFeatures: sh.in, outFeatures: sh.out, scale: Float(o.scale(rank: o.r, alpha: o.alpha)))
        }
        let params = LoRAParameters(layers: layers)
        LoRAInitialisation.peftDefault(params, seed: o.seed)
        let engine = try TransformerEngine(weights: model.weights, training: params, maxSequenceLength: options.seqLen,
                                           gemm: options.gemmOptions)
        let rows = Tuner.trainingRows(train)
        let tuner = try Tuner(engine: engine, rows: rows, progress: TuneProgress(options: o, fingerprint: "", layers: layers.map(\.layer.name)))
        if comm.size > 1 {
            tuner.share = { comm.share(of: $0) }
            tuner.allreduce = { sums, floats in
                try comm.allreduceSum(&sums)
                if !floats.isEmpty { try comm.allreduceSum(&floats) }
            }
        }
        let bar = ProgressBar(total: tuneSteps, label: "tune \(layers.count) layers")
        while tuner.progress.step < tuneSteps { let s = try tuner.step(); bar.update(s.step, detail: String(format: "loss %.4f", s.loss)) }
        bar.finish()
        return try tuner.evaluate(eval).meanNLL
    }

    /// One column of the report: the held-out NLL of the model when only `selected` layers are
    /// adapted. Today: the alignment's own deltas kept on them (γ = 1) and dropped elsewhere.
    /// Extension point for `--tune`: an evaluator that runs ila-tune on the selection (LoRA on those
    /// layers only, from the base) and evaluates the tuned adapter goes beside it.
    typealias SelectionEvaluator = (_ selected: Set<String>) throws -> Double

    func run() throws {
        try runReportingErrors {
            let methods = try methodList, fractions = try fractionList
            // Under mpirun: scores, held-out NLLs and tuning split their rows across the ranks (as
            // score, eval and ila-tune); rank 0 alone writes and prints.
            let comm = try joinJob()
            if comm.isRoot {
                if let svg { try AtomicOutput(path: svg).discard() }
                if let output { try AtomicOutput(path: output).discard() }
            }
            let needsGradient = methods.contains(.taylor) || methods.contains(.ila)
            let (model, engine, store, _) = try loadModelEngine(base: options.base, deltas: options.deltas, seqLen: options.seqLen,
                                                                 maxMemory: options.maxMemory, recompute: false, gemm: options.gemmOptions,
                                                                 requireDeltas: true, gradient: needsGradient)
            let trainRows = try options.data.map { try model.rows(path: $0, format: options.format, seqLen: options.seqLen, limit: options.limit) }
            let evalRows = try model.rows(path: eval, format: options.format, seqLen: options.seqLen, limit: evalLimit)
            let layerNames = engine.maskedLayers.map(\.name)
            let masked = Set(layerNames)

            // The rankings: computed ones, then the files.
            var labels: [String] = [], rankings: [Ranking] = [], seconds: [String: Double] = [:]
            for m in methods {
                var o = options
                if m != .angular { o.distance = nil }
                if ![.blockInfluence, .blockInfluenceSublayer, .angular].contains(m) { o.positions = nil; o.gamma = nil }
                let (r, s) = try o.ranking(m, loaded: (model, engine, store), rows: trainRows, comm: comm)
                labels.append(m.rawValue); rankings.append(r); seconds[m.rawValue] = s
            }
            for path in ranking {
                let r = try Ranking.load(path: path)
                let names = Set(r.layers.map(\.name))
                guard names == masked else {
                    let missing = masked.subtracting(names).sorted().first.map { "lacks \($0)" }
                        ?? "has \(names.subtracting(masked).sorted().first ?? "") which has no delta"
                    throw ILAError(file: path, "does not cover the deltas' layers: \(missing)")
                }
                // Rankings `learn` wrote before objective.method existed are ILA's (they have its optimizer fields).
                var label = r.objective?.method ?? (r.objective?.lambda != nil ? ScoreMethod.ila.rawValue
                    : URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent)
                if labels.contains(label) { label = URL(fileURLWithPath: path).lastPathComponent }
                labels.append(label); rankings.append(r)
            }
            if comm.isRoot, let dir = saveRankings {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                for (m, r) in zip(methods, rankings) { try r.write(path: (dir as NSString).appendingPathComponent("\(m.rawValue).json")) }
            }

            let keepDeltas: SelectionEvaluator = { selected in
                let gamma = layerNames.map { selected.contains($0) ? Float(1) : 0 }
                return try evaluateWithProgress(engine, rows: evalRows, gamma: gamma, label: "eval", comm: comm).meanNLL
            }
            let none = try evaluateWithProgress(engine, rows: evalRows, gamma: [Float](repeating: 0, count: layerNames.count), label: "eval γ=0",
                                                comm: comm)
            guard none.tokens > 0 else { throw ILAError(file: eval, "no response tokens to score (all labels are -100)") }
            let all = try keepDeltas(masked)

            var selections: [[Set<String>]] = [], nll: [[Double]] = []
            for r in rankings {
                let sels = fractions.map { r.top($0) }
                selections.append(sels)
                nll.append(try sels.map(keepDeltas))
            }
            var rng = SplitMix64(seed: options.seed)
            var randomNLL: [Double] = []
            if random > 0 {
                for f in fractions {
                    let k = Ranking.topCount(fraction: f, of: layerNames.count)
                    var total = 0.0
                    for _ in 0..<random {
                        var pool = layerNames
                        for i in stride(from: pool.count - 1, to: 0, by: -1) { pool.swapAt(i, rng.index(below: i + 1)) }
                        total += try keepDeltas(Set(pool.prefix(k)))
                    }
                    randomNLL.append(total / Double(random))
                }
            }
            let jaccard: [[[Double]]] = fractions.indices.map { fi in
                rankings.indices.map { a in
                    rankings.indices.map { b in
                        let x = selections[a][fi], y = selections[b][fi]
                        return Double(x.intersection(y).count) / Double(max(1, x.union(y).count))
                    }
                }
            }
            var tuned: [[Double]] = []
            if tune, let trainRows {
                tuned = try selections.map { sels in try sels.map { try tunedNLL($0, model: model, train: trainRows, eval: evalRows, comm: comm) } }
            }
            let report = Report(fractions: fractions, labels: labels, nll: nll, base: none.meanNLL, all: all,
                                random: randomNLL, jaccard: jaccard, evalRows: none.rows, evalTokens: none.tokens, tuned: tuned)
            guard comm.isRoot else { return }
            if let svg { try AtomicOutput.write(Data(report.svg().utf8), to: svg) }
            do {
                var o: [String: Any] = ["fractions": fractions, "methods": labels, "nll_base": none.meanNLL, "nll_all_deltas": all,
                                        "eval_rows": none.rows, "eval_tokens": none.tokens, "layers": layerNames.count,
                                        "nll": Dictionary(uniqueKeysWithValues: zip(labels, nll)),
                                        "jaccard": Dictionary(uniqueKeysWithValues: zip(fractions.map { String($0) }, jaccard)),
                                        "selections": Dictionary(uniqueKeysWithValues: zip(labels, selections.map { sels in
                                            Dictionary(uniqueKeysWithValues: zip(fractions.map { String($0) }, sels.map { $0.sorted() }))
                                        })),
                                        "seconds": seconds]
                if random > 0 { o["random"] = randomNLL; o["random_draws"] = random }
                if !tuned.isEmpty {
                    o["tuned_nll"] = Dictionary(uniqueKeysWithValues: zip(labels, tuned))
                    o["tune"] = ["steps": tuneSteps, "batch": tuneBatch, "lr": tuneLR, "r": 8, "alpha": 16, "seed": options.seed] as [String: Any]
                }
                if let svg { o["svg"] = svg }
                let text = try jsonText(o)
                if let output { try AtomicOutput.write(Data((text + "\n").utf8), to: output) }
                if json { printOut(text) } else { printOut(report.text() + (svg.map { "\nwrote \($0)" } ?? "")) }
            }
        }
    }

    struct Report {
        var fractions: [Double], labels: [String], nll: [[Double]], base: Double, all: Double, random: [Double]
        var jaccard: [[[Double]]], evalRows: Int, evalTokens: Int
        /// Held-out NLL after ila-tune on each selection (empty without --tune), as `nll`.
        var tuned: [[Double]] = []

        /// Share of the alignment's NLL gain (base − all) that a selection keeps.
        func kept(_ v: Double) -> Double { (base - v) / (base - all) }

        func text() -> String {
            let header = ["method"] + fractions.map { String(format: " F=%g", $0) }
            var rows = zip(labels, nll).map { l, v in [l] + v.map { String(format: "%.4f (%3.0f%%)", $0, 100 * kept($0)) } }
            if !random.isEmpty { rows.append(["random"] + random.map { String(format: "%.4f (%3.0f%%)", $0, 100 * kept($0)) }) }
            var out = "held-out NLL with only the top-F layers' deltas kept (share of the alignment's gain kept), "
                + "\(evalRows) rows, \(evalTokens) tokens\n"
            out += renderTable(header: header, rows: rows)
            out += String(format: "\nbase (no delta) %.4f, all deltas %.4f\n", base, all)
            if !tuned.isEmpty {
                out += "\nheld-out NLL after ila-tune on only the top-F layers\n"
                out += renderTable(header: header, rows: zip(labels, tuned).map { l, v in [l] + v.map { String(format: "%.4f", $0) } })
                out += "\n"
            }
            for (fi, f) in fractions.enumerated() {
                out += String(format: "\nJaccard of the top-%g selections\n", f)
                out += renderTable(header: [""] + labels, rows: labels.indices.map { a in
                    [labels[a]] + labels.indices.map { b in String(format: "%.2f", jaccard[fi][a][b]) }
                })
                out += "\n"
            }
            // The winner per fraction.
            for (fi, f) in fractions.enumerated() {
                if let best = labels.indices.min(by: { nll[$0][fi] < nll[$1][fi] }) {
                    out += String(format: "F=%g: best %@ (%.4f)\n", f, labels[best], nll[best][fi])
                }
            }
            return out
        }

        /// Held-out NLL against F, one polyline per method, base / all deltas dashed.
        func svg() -> String {
            let w = 720.0, h = 440.0, left = 70.0, right = 200.0, top = 30.0, bottom = 50.0
            let values = nll.flatMap { $0 } + random + [base, all]
            let lo = values.min() ?? 0, hi = values.max() ?? 1
            let pad = (hi - lo) * 0.05 + 1e-9
            let y0 = lo - pad, y1 = hi + pad
            let fx0 = 0.0, fx1 = 1.0
            func x(_ f: Double) -> Double { left + (f - fx0) / (fx1 - fx0) * (w - left - right) }
            func y(_ v: Double) -> Double { top + (y1 - v) / (y1 - y0) * (h - top - bottom) }
            let colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
            var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
            s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
            s += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", left, h - bottom, w - right, h - bottom)
            s += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", left, top, left, h - bottom)
            for f in stride(from: 0.0, through: 1.0001, by: 0.25) {
                s += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", x(f), h - bottom + 16, f)
            }
            for i in 0...4 {
                let v = y0 + Double(i) / 4 * (y1 - y0)
                s += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n", left - 6, y(v) + 4, v)
            }
            s += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">fraction F of layers whose deltas are kept</text>\n",
                        (left + w - right) / 2, h - 12)
            s += String(format: "<text x=\"16\" y=\"%.1f\" transform=\"rotate(-90 16 %.1f)\" text-anchor=\"middle\">held-out NLL</text>\n",
                        (top + h - bottom) / 2, (top + h - bottom) / 2)
            for (v, name) in [(base, "base (no delta)"), (all, "all deltas")] {
                s += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"gray\" stroke-dasharray=\"4 3\"/>\n", left, y(v), w - right, y(v))
                s += String(format: "<text x=\"%.1f\" y=\"%.1f\" fill=\"gray\">%@</text>\n", w - right + 4, y(v) + 4, name)
            }
            var series = Array(zip(labels, nll))
            if !random.isEmpty { series.append(("random", random)) }
            for (i, (label, v)) in series.enumerated() {
                let c = label == "random" ? "#000000" : colours[i % colours.count]
                let pts = zip(fractions, v).map { String(format: "%.1f,%.1f", x($0), y($1)) }.joined(separator: " ")
                s += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"2\"\(label == "random" ? " stroke-dasharray=\"2 2\"" : "") points=\"\(pts)\"/>\n"
                for (f, value) in zip(fractions, v) {
                    s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\"/>\n", x(f), y(value), c)
                }
                let ly = top + 10 + Double(i) * 18
                s += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%@\" stroke-width=\"2\"/>\n", w - right + 4, ly + 30, w - right + 24, ly + 30, c)
                s += String(format: "<text x=\"%.1f\" y=\"%.1f\">%@</text>\n", w - right + 28, ly + 34, xmlEscape(label))
            }
            return s + "</svg>\n"
        }

        func xmlEscape(_ t: String) -> String {
            t.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
    }
}
