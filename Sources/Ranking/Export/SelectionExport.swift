import Foundation
import ILADiff

/// Output formats of `ila-mask export` and `ila-transfer` (DESIGN.md section 8).
public enum ExportFormat: String, CaseIterable, Sendable {
    /// `{"format": "ila-selection", ...}` with every layer.
    case json
    /// The same columns as `json`, one row per layer.
    case csv
    /// An adapter_config.json fragment whose `target_modules` regex full-matches the selected modules.
    case peft
    /// Axolotl YAML: `unfrozen_parameters:` with one `^<layer>\.weight$` regex per selected layer.
    case axolotl
    /// LLaMA-Factory YAML: the closest freeze-mode setting, plus the exact list as comments.
    case llamaFactory = "llama-factory"
    /// JSON list of the parameter names to freeze (the unselected layers' weights).
    case freeze
    /// The paper's figure 1: blocks × kinds heat map of the scores, selected layers outlined.
    case svg

    /// The usual file extension for the format.
    public var fileExtension: String {
        switch self {
        case .json, .peft, .freeze: return "json"
        case .csv: return "csv"
        case .axolotl, .llamaFactory: return "yaml"
        case .svg: return "svg"
        }
    }
}

/// Knobs of the exports that need them.
public struct ExportOptions: Sendable {
    /// LoRA rank written into the peft config.
    public var loraR: Int = 16
    /// LoRA alpha written into the peft config.
    public var loraAlpha: Int = 32
    /// SVG title; nil = a default naming the top fraction and the source.
    public var title: String? = nil
    public init(loraR: Int = 16, loraAlpha: Int = 32, title: String? = nil) {
        self.loraR = loraR
        self.loraAlpha = loraAlpha
        self.title = title
    }
}

/// Renders a `Selection` in one of the export formats (DESIGN.md section 8).
public enum SelectionExporter {
    public static func render(_ s: Selection, format: ExportFormat, options: ExportOptions = ExportOptions()) throws -> Data {
        guard !s.layers.isEmpty else { throw ILAError(file: s.source, "the selection has no layers") }
        let text: String
        switch format {
        case .json: text = json(s)
        case .csv: text = csv(s)
        case .peft:
            guard options.loraR >= 1 else { throw ILAError("--lora-r must be at least 1, got \(options.loraR)") }
            guard options.loraAlpha >= 1 else { throw ILAError("--lora-alpha must be at least 1, got \(options.loraAlpha)") }
            guard !s.selectedNames.isEmpty else { throw ILAError(file: s.source, "no layer is selected") }
            text = peft(s, options: options)
        case .axolotl: text = axolotl(s)
        case .llamaFactory: text = llamaFactory(s)
        case .freeze: text = freeze(s)
        case .svg: text = SelectionFigure.svg(s, title: options.title)
        }
        return Data(text.utf8)
    }

    // MARK: json / csv

    static func json(_ s: Selection) -> String {
        var out = "{\n"
        out += "  \"format\": \"ila-selection\",\n"
        out += "  \"version\": 1,\n"
        out += "  \"top\": \(jsonNumber(s.top)),\n"
        out += "  \"source\": \(jsonString(s.source)),\n"
        out += "  \"target\": \(s.target.map(jsonString) ?? "null"),\n"
        out += "  \"selected\": \(s.selectedNames.count),\n"
        out += "  \"layers\": ["
        let rows = s.layers.map { l -> String in
            var fields = ["\"name\": \(jsonString(l.name))", "\"block\": \(l.block)", "\"kind\": \(jsonString(l.kind))",
                          "\"score\": \(jsonNumber(l.score))"]
            if let g = l.gamma { fields.append("\"gamma\": \(jsonNumber(g))") }
            fields += ["\"rank\": \(l.rank)", "\"selected\": \(l.selected)"]
            return "\n    {" + fields.joined(separator: ", ") + "}"
        }
        out += rows.joined(separator: ",") + "\n  ]\n}\n"
        return out
    }

    static func csv(_ s: Selection) -> String {
        var lines = ["name,block,kind,score,gamma,rank,selected"]
        for l in s.layers {
            lines.append([csvField(l.name), String(l.block), csvField(l.kind), number(l.score),
                          l.gamma.map(number) ?? "", String(l.rank), l.selected ? "true" : "false"].joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: peft

    static func peft(_ s: Selection, options: ExportOptions) -> String {
        """
        {
          "peft_type": "LORA",
          "task_type": "CAUSAL_LM",
          "r": \(options.loraR),
          "lora_alpha": \(options.loraAlpha),
          "target_modules": \(jsonString(peftRegex(s.selectedNames)))
        }

        """
    }

    /// One regular expression that Python's `re.fullmatch` (PEFT's rule for a string
    /// `target_modules`, applied to each module name of the model, e.g.
    /// `model.layers.3.self_attn.q_proj`) matches for exactly `names` and nothing else.
    ///
    /// Names are grouped by their shape around the block number (`model.layers.` + N +
    /// `.self_attn.` + kind); inside a shape, blocks with the same set of kinds become one
    /// alternative `prefix(?:3|7)middle(?:q_proj|v_proj)` (or kinds with the same set of blocks,
    /// whichever is shorter). Each alternative is a product of blocks × kinds that lies entirely
    /// in the selection, so the union is exact. Also valid for ICU / NSRegularExpression.
    public static func peftRegex(_ names: [String]) -> String {
        struct Shape: Hashable { var prefix: String; var middle: String }
        var shapes: [Shape: [(block: String, kind: String)]] = [:]
        var shapeOrder: [Shape] = []
        var literals: [String] = []
        for name in names {
            guard let p = NameParts(name) else { literals.append(name); continue }
            let shape = Shape(prefix: p.prefix, middle: p.middle)
            if shapes[shape] == nil { shapeOrder.append(shape) }
            shapes[shape, default: []].append((p.block, p.kind))
        }
        var alternatives: [String] = []
        for shape in shapeOrder {
            let cells = shapes[shape]!
            var blockOrder: [String] = [], kindOrder: [String] = []
            var kindsOfBlock: [String: Set<String>] = [:], blocksOfKind: [String: Set<String>] = [:]
            for c in cells {
                if kindsOfBlock[c.block] == nil { blockOrder.append(c.block) }
                if blocksOfKind[c.kind] == nil { kindOrder.append(c.kind) }
                kindsOfBlock[c.block, default: []].insert(c.kind)
                blocksOfKind[c.kind, default: []].insert(c.block)
            }
            blockOrder.sort { (Int($0) ?? 0, $0) < (Int($1) ?? 0, $1) }
            let kindRank = { (k: String) in LayerKind(k).order }
            kindOrder.sort { (kindRank($0), $0) < (kindRank($1), $1) }

            func render(blocks: [String], kinds: [String]) -> String {
                regexEscape(shape.prefix) + blockSet(blocks) + regexEscape(shape.middle)
                    + group(kinds.map(regexEscape))
            }
            // Blocks sharing a kind set.
            var byBlocks: [String] = []
            var seenKindSets: [[String]] = []
            var blocksForKindSet: [[String]: [String]] = [:]
            for b in blockOrder {
                let ks = kindOrder.filter { kindsOfBlock[b]!.contains($0) }
                if blocksForKindSet[ks] == nil { seenKindSets.append(ks) }
                blocksForKindSet[ks, default: []].append(b)
            }
            for ks in seenKindSets { byBlocks.append(render(blocks: blocksForKindSet[ks]!, kinds: ks)) }
            // Kinds sharing a block set.
            var byKinds: [String] = []
            var seenBlockSets: [[String]] = []
            var kindsForBlockSet: [[String]: [String]] = [:]
            for k in kindOrder {
                let bs = blockOrder.filter { blocksOfKind[k]!.contains($0) }
                if kindsForBlockSet[bs] == nil { seenBlockSets.append(bs) }
                kindsForBlockSet[bs, default: []].append(k)
            }
            for bs in seenBlockSets { byKinds.append(render(blocks: bs, kinds: kindsForBlockSet[bs]!)) }

            let a = byBlocks.joined(separator: "|"), b = byKinds.joined(separator: "|")
            alternatives += (b.count < a.count ? byKinds : byBlocks)
        }
        alternatives += literals.map(regexEscape)
        return alternatives.joined(separator: "|")
    }

    /// A regex matching exactly the given decimal strings: numbers differing only in their last
    /// digit share a character class with ranges (`[0-35]`, `1[2-4]`).
    public static func blockSet(_ blocks: [String]) -> String {
        var order: [String] = []
        var lastDigits: [String: [Int]] = [:]
        for b in blocks {
            guard let last = b.last, let d = last.wholeNumberValue, last.isASCII else {
                order.append(b); lastDigits[b] = nil; continue
            }
            let prefix = String(b.dropLast())
            if lastDigits[prefix] == nil { order.append(prefix) }
            lastDigits[prefix, default: []].append(d)
        }
        let items = order.map { prefix -> String in
            guard let ds = lastDigits[prefix] else { return regexEscape(prefix) }
            let digits = Array(Set(ds)).sorted()
            if digits.count == 1 { return regexEscape(prefix) + String(digits[0]) }
            var runs: [String] = []
            var i = 0
            while i < digits.count {
                var j = i
                while j + 1 < digits.count && digits[j + 1] == digits[j] + 1 { j += 1 }
                switch j - i {
                case 0: runs.append("\(digits[i])")
                case 1: runs.append("\(digits[i])\(digits[j])")
                default: runs.append("\(digits[i])-\(digits[j])")
                }
                i = j + 1
            }
            return regexEscape(prefix) + "[" + runs.joined() + "]"
        }
        return group(items)
    }

    /// `(?:a|b)`, or just `a` for one item.
    static func group(_ items: [String]) -> String {
        items.count == 1 ? items[0] : "(?:" + items.joined(separator: "|") + ")"
    }

    /// Escapes every ASCII character other than letters, digits and `_` (safe in both Python `re`
    /// and ICU, where an escaped punctuation character is always the literal character).
    public static func regexEscape(_ s: String) -> String {
        var out = ""
        for ch in s.unicodeScalars {
            if ch.isASCII && !(CharacterSet.alphanumerics.contains(ch) || ch == "_") {
                if ch.value < 0x20 || ch.value == 0x7F {
                    out += String(format: "\\x%02x", ch.value)
                } else {
                    out += "\\" + String(ch)
                }
            } else {
                out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// A layer name split around its block number: `model.layers.` · `3` · `.self_attn.` · `q_proj`.
    struct NameParts {
        var prefix: String
        var block: String
        var middle: String
        var kind: String
        init?(_ name: String) {
            let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard parts.count >= 3 else { return nil }
            var at: Int?
            for i in 0..<(parts.count - 2) where parts[i] == "layers" {
                if !parts[i + 1].isEmpty, parts[i + 1].allSatisfy({ $0.isASCII && $0.isNumber }) { at = i }
            }
            guard let at else { return nil }
            prefix = parts[0...at].joined(separator: ".") + "."
            block = parts[at + 1]
            let mid = parts[(at + 2)..<(parts.count - 1)]
            middle = "." + (mid.isEmpty ? "" : mid.joined(separator: ".") + ".")
            kind = parts[parts.count - 1]
        }
        /// The module right under the block (`self_attn`, `mlp`), or nil.
        var parent: String? {
            let inner = middle.split(separator: ".")
            return inner.first.map(String.init)
        }
    }

    // MARK: axolotl

    static func axolotl(_ s: Selection) -> String {
        let selected = s.selectedNames
        var out = header(s, tool: "axolotl")
        out += "# Train only these \(selected.count) of \(s.layers.count) linear layers' weights; every other parameter stays frozen.\n"
        out += "unfrozen_parameters:\n"
        for n in selected { out += "  - " + yamlSingleQuoted("^" + regexEscape(n + ".weight") + "$") + "\n" }
        return out
    }

    // MARK: llama-factory

    /// The LLaMA-Factory freeze setting (`freeze_trainable_layers` = last n blocks if positive,
    /// first n if negative; `freeze_trainable_modules` = modules right under a block) whose trained
    /// linear layers are closest to the selection (highest Jaccard, then fewest differences).
    public struct FreezeApproximation: Sendable, Equatable {
        public var trainableLayers: Int
        public var modules: [String]
        /// Selected layers the setting trains.
        public var covered: Int
        /// Selected layers it leaves frozen.
        public var missed: Int
        /// Unselected layers it trains.
        public var extra: Int
        /// Jaccard of the trained and the selected layer sets.
        public var jaccard: Double {
            let u = covered + missed + extra
            return u == 0 ? 1 : Double(covered) / Double(u)
        }
    }

    public static func llamaFactoryApproximation(_ s: Selection) -> FreezeApproximation {
        let parsed = s.layers.map { (l: $0, parent: NameParts($0.name)?.parent ?? "") }
        var parents: [String] = []
        for p in parsed where !parents.contains(p.parent) && !p.parent.isEmpty { parents.append(p.parent) }
        var moduleSets: [[String]] = parents.map { [$0] }
        if parents.count > 1 { moduleSets.append(parents) }
        if moduleSets.isEmpty { moduleSets = [["all"]] }
        let blocks = max(1, s.blocks)
        var best: FreezeApproximation?
        for n in 1...blocks {
            for lastBlocks in [true, false] {
                let range = lastBlocks ? (blocks - n)..<blocks : 0..<n
                for mods in moduleSets {
                    var covered = 0, missed = 0, extra = 0
                    for p in parsed {
                        let trained = range.contains(p.l.block) && (mods == ["all"] || mods.contains(p.parent))
                        switch (trained, p.l.selected) {
                        case (true, true): covered += 1
                        case (false, true): missed += 1
                        case (true, false): extra += 1
                        case (false, false): break
                        }
                    }
                    let cand = FreezeApproximation(trainableLayers: lastBlocks ? n : -n, modules: mods,
                                                   covered: covered, missed: missed, extra: extra)
                    if let b = best {
                        // Highest Jaccard (the measure `compare` uses), then fewest differences, then fewest layers.
                        let jb = b.jaccard, jc = cand.jaccard
                        if jc < jb { continue }
                        if jc == jb && (cand.missed + cand.extra, cand.covered + cand.extra) >= (b.missed + b.extra, b.covered + b.extra) { continue }
                    }
                    best = cand
                }
            }
        }
        return best!
    }

    static func llamaFactory(_ s: Selection) -> String {
        let selected = s.selectedNames
        let a = llamaFactoryApproximation(s)
        var out = header(s, tool: "LLaMA-Factory")
        out += """
        # LLaMA-Factory's freeze mode trains the last n (freeze_trainable_layers: n) or the first n
        # (freeze_trainable_layers: -n) blocks, restricted to whole modules of a block
        # (freeze_trainable_modules); it cannot express an arbitrary set of layers.
        # Below is the closest setting (Jaccard \(String(format: "%.3f", a.jaccard)) with the selection): it trains
        # \(a.covered) of the \(selected.count) selected layers, leaves \(a.missed) selected layers frozen and trains
        # \(a.extra) unselected ones.
        # For the exact set use the `peft` export (LoRA) or the `freeze` export (requires_grad=False list).
        finetuning_type: freeze
        freeze_trainable_layers: \(a.trainableLayers)
        freeze_trainable_modules: \(a.modules.joined(separator: ","))

        # Exact selection: \(selected.count) of \(s.layers.count) layers, canonical order (block, then q k v o gate up down).
        # selected_layers:

        """
        for n in selected { out += "#   - \(n)\n" }
        return out
    }

    // MARK: freeze

    static func freeze(_ s: Selection) -> String {
        let names = s.layers.filter { !$0.selected }.map { $0.name + ".weight" }
        if names.isEmpty { return "[]\n" }
        return "[\n" + names.map { "  " + jsonString($0) }.joined(separator: ",\n") + "\n]\n"
    }

    // MARK: helpers

    static func header(_ s: Selection, tool: String) -> String {
        var out = "# \(tool) layer selection written by ila (ILA, arXiv 2410.17875).\n"
        out += "# ranking: \(oneLine(s.source))\n"
        if let t = s.target { out += "# target model: \(oneLine(t))\n" }
        out += "# top \(percent(s.top)): \(s.selectedNames.count) of \(s.layers.count) linear layers selected\n"
        return out
    }

    static func oneLine(_ s: String) -> String {
        s.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
    }

    static func percent(_ f: Double) -> String {
        let p = f * 100
        return p == p.rounded() ? "\(Int(p))%" : String(format: "%.4g%%", p)
    }

    static func yamlSingleQuoted(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// Shortest round-trip decimal text of a finite double.
    static func number(_ d: Double) -> String {
        guard d.isFinite else { return d.isNaN ? "nan" : (d > 0 ? "inf" : "-inf") }
        return "\(d)"
    }

    static func jsonNumber(_ d: Double) -> String {
        d.isFinite ? "\(d)" : "null"
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for ch in s.unicodeScalars {
            switch ch {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if ch.value < 0x20 { out += String(format: "\\u%04x", ch.value) } else { out.unicodeScalars.append(ch) }
            }
        }
        return out + "\""
    }

    static func csvField(_ s: String) -> String {
        if s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) {
            return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        return s
    }
}
