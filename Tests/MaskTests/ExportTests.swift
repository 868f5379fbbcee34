import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import ILADiff
@testable import ILAMask
import ILAModel
@testable import ILAEngine
@testable import ILARanking
import XCTest

/// Shared by ExportTests and ExportCommandTests.
enum ExportFixtures {
    static let kinds = LayerKind.llama.map(\.rawValue)

    static func layerName(_ block: Int, _ kind: String) -> String {
        "model.layers.\(block).\(kind.hasSuffix("_proj") && ["gate_proj", "up_proj", "down_proj", "gate_up_proj"].contains(kind) ? "mlp" : "self_attn").\(kind)"
    }

    /// A ranking over `blocks` × 7 layers with deterministic pseudo-random scores.
    static func ranking(blocks: Int, seed: UInt64 = 7) -> Ranking {
        var rng = SplitMix(seed)
        var scores: [(LinearLayer, Double)] = []
        for b in 0..<blocks {
            for k in kinds { scores.append((LinearLayer(name: layerName(b, k))!, Double(rng.next() % 100_000) / 10_000 - 2)) }
        }
        let gammas = scores.map { 1 / (1 + exp(-$0.1)) }
        return Ranking.from(scores: scores, gammas: gammas, architecture: "LlamaForCausalLM", blocks: blocks,
                            source: nil, objective: nil, history: nil)
    }

    /// A selection over `blocks` × 7 layers where exactly `selected` names are selected.
    static func selection(blocks: Int, selected: Set<String>, target: String? = nil) -> Selection {
        let r = ranking(blocks: blocks)
        return Selection(top: 0.5, source: "runs/ranking.json", target: target, blocks: blocks, layers: r.layers.map {
            Selection.Entry(name: $0.name, block: $0.block, kind: $0.kind, score: $0.score, gamma: $0.gamma, rank: $0.rank,
                            selected: selected.contains($0.name))
        })
    }

    struct SplitMix {
        var state: UInt64
        init(_ seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Python's `re.fullmatch(pattern, name)` emulated with ICU: anchored, whole string.
    static func fullMatch(_ pattern: String, _ name: String) throws -> Bool {
        let re = try NSRegularExpression(pattern: "^(?:" + pattern + ")$")
        let range = NSRange(name.startIndex..., in: name)
        guard let m = re.firstMatch(in: name, range: range) else { return false }
        return m.range == range
    }

    static var python3: String? {
        for p in ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"] where FileManager.default.isExecutableFile(atPath: p) {
            return p
        }
        return nil
    }

    /// Names that `re.fullmatch(pattern, name)` accepts, computed by Python itself.
    static func pythonFullMatches(_ pattern: String, _ names: [String]) throws -> Set<String> {
        guard let py = python3 else { throw XCTSkip("python3 is not available") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ila-py-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in.json"), output = dir.appendingPathComponent("out.json")
        try JSONSerialization.data(withJSONObject: ["pattern": pattern, "names": names]).write(to: input)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: py)
        p.arguments = ["-c", """
            import json, re, sys
            d = json.load(open(sys.argv[1]))
            json.dump([n for n in d["names"] if re.fullmatch(d["pattern"], n)], open(sys.argv[2], "w"))
            """, input.path, output.path]
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "python3 failed")
        let got = try JSONSerialization.jsonObject(with: Data(contentsOf: output)) as? [String] ?? []
        return Set(got)
    }
}

final class ExportTests: XCTestCase {
    typealias F = ExportFixtures

    private func text(_ s: Selection, _ format: ExportFormat, _ options: ExportOptions = ExportOptions()) throws -> String {
        String(decoding: try SelectionExporter.render(s, format: format, options: options), as: UTF8.self)
    }

    private func topSelection(blocks: Int = 8, top: Double = 0.3) -> Selection {
        Selection(ranking: F.ranking(blocks: blocks), top: top, source: "runs/a b/ranking.json")
    }

    // MARK: peft

    /// Every module name of a Llama model with `blocks` blocks, plus look-alikes.
    private func moduleNames(blocks: Int) -> [String] {
        var names = ["", "model", "model.embed_tokens", "model.layers", "model.norm", "model.rotary_emb", "lm_head"]
        for b in 0..<blocks {
            names += ["model.layers.\(b)", "model.layers.\(b).self_attn", "model.layers.\(b).mlp", "model.layers.\(b).mlp.act_fn",
                      "model.layers.\(b).input_layernorm", "model.layers.\(b).post_attention_layernorm"]
            names += F.kinds.map { F.layerName(b, $0) }
            names += F.kinds.map { F.layerName(b, $0) + ".lora_A" }
        }
        // decoys: other models' numbering and prefixed names
        names += ["model.layers.10.mlp.up_proj", "model.layers.11.self_attn.q_proj", "model.layers.01.self_attn.q_proj",
                  "base_model.model.model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.q_proj.weight",
                  "model.layers.1xself_attn.q_proj", "model.layers.1.self_attn.q_projx", "xmodel.layers.1.self_attn.q_proj",
                  "model.layers.100.mlp.down_proj", "model.layers.1.mlp.up_proj_", "model.layers.21.mlp.up_proj"]
        return Array(Set(names)).sorted()
    }

    private func checkPeftRegex(_ s: Selection, blocks: Int, python: Bool = false,
                                file: StaticString = #filePath, line: UInt = #line) throws {
        let cfg = try XCTUnwrap(JSONSerialization.jsonObject(with: SelectionExporter.render(s, format: .peft)) as? [String: Any])
        let pattern = try XCTUnwrap(cfg["target_modules"] as? String, file: file, line: line)
        let expected = Set(s.selectedNames)
        let names = moduleNames(blocks: blocks)
        let icu = try Set(names.filter { try F.fullMatch(pattern, $0) })
        XCTAssertEqual(icu, expected, "pattern \(pattern)", file: file, line: line)
        if python {
            XCTAssertEqual(try F.pythonFullMatches(pattern, names), expected, "pattern \(pattern)", file: file, line: line)
        }
    }

    func testPeftConfigFields() throws {
        let s = topSelection()
        let cfg = try XCTUnwrap(JSONSerialization.jsonObject(
            with: SelectionExporter.render(s, format: .peft, options: ExportOptions(loraR: 8, loraAlpha: 16))) as? [String: Any])
        XCTAssertEqual(cfg["r"] as? Int, 8)
        XCTAssertEqual(cfg["lora_alpha"] as? Int, 16)
        XCTAssertEqual(cfg["task_type"] as? String, "CAUSAL_LM")
        XCTAssertEqual(cfg["peft_type"] as? String, "LORA")
        XCTAssertEqual(Set(cfg.keys), ["r", "lora_alpha", "task_type", "peft_type", "target_modules"])
        let def = try XCTUnwrap(JSONSerialization.jsonObject(with: SelectionExporter.render(s, format: .peft)) as? [String: Any])
        XCTAssertEqual(def["r"] as? Int, 16)
        XCTAssertEqual(def["lora_alpha"] as? Int, 32)
        XCTAssertThrowsError(try SelectionExporter.render(s, format: .peft, options: ExportOptions(loraR: 0)))
    }

    func testPeftRegexOnlyBlockOne() throws {
        let sel = Set(F.kinds.map { F.layerName(1, $0) })
        let s = F.selection(blocks: 12, selected: sel)
        try checkPeftRegex(s, blocks: 12, python: true)
        let pattern = SelectionExporter.peftRegex(s.selectedNames)
        XCTAssertFalse(try F.fullMatch(pattern, "model.layers.10.mlp.up_proj"))
        XCTAssertFalse(try F.fullMatch(pattern, "model.layers.11.self_attn.q_proj"))
        XCTAssertTrue(try F.fullMatch(pattern, "model.layers.1.mlp.up_proj"))
        XCTAssertLessThan(pattern.count, 150, "compact: \(pattern)")
    }

    func testPeftRegexSingleLayerAndAll() throws {
        try checkPeftRegex(F.selection(blocks: 12, selected: [F.layerName(10, "down_proj")]), blocks: 12, python: true)
        let all = Set((0..<12).flatMap { b in F.kinds.map { F.layerName(b, $0) } })
        let s = F.selection(blocks: 12, selected: all)
        try checkPeftRegex(s, blocks: 12, python: true)
        XCTAssertLessThan(SelectionExporter.peftRegex(s.selectedNames).count, 200)
    }

    func testPeftRegexRandomSelections() throws {
        var rng = F.SplitMix(42)
        var samples: [(Selection, Int)] = []
        for trial in 0..<40 {
            let blocks = [1, 3, 8, 12, 24, 40][trial % 6]
            var sel = Set<String>()
            let p = Double(rng.next() % 100) / 100
            for b in 0..<blocks { for k in F.kinds where Double(rng.next() % 1000) / 1000 < p { sel.insert(F.layerName(b, k)) } }
            if sel.isEmpty { sel.insert(F.layerName(blocks - 1, "q_proj")) }
            samples.append((F.selection(blocks: blocks, selected: sel), blocks))
        }
        for (s, blocks) in samples { try checkPeftRegex(s, blocks: blocks) }
        // Python's own re.fullmatch on a few of them (one process each).
        if F.python3 == nil { throw XCTSkip("python3 is not available") }
        for (s, blocks) in samples.prefix(8) { try checkPeftRegex(s, blocks: blocks, python: true) }
    }

    func testPeftRegexTopOfRanking() throws {
        for top in [0.01, 0.1, 0.3, 0.75, 1.0] {
            try checkPeftRegex(topSelection(blocks: 32, top: top), blocks: 32, python: top == 0.3)
        }
    }

    func testBlockSetRegex() throws {
        XCTAssertEqual(SelectionExporter.blockSet(["3"]), "3")
        XCTAssertEqual(SelectionExporter.blockSet(["0", "1", "2", "3", "5"]), "[0-35]")
        XCTAssertEqual(SelectionExporter.blockSet(["0", "1", "12", "13", "14", "20"]), "(?:[01]|1[2-4]|20)")
        let blocks = ["0", "2", "3", "9", "10", "11", "19", "25", "100"]
        let re = SelectionExporter.blockSet(blocks)
        for n in 0..<200 {
            XCTAssertEqual(try F.fullMatch(re, String(n)), blocks.contains(String(n)), "\(n) vs \(re)")
        }
    }

    func testRegexEscape() {
        XCTAssertEqual(SelectionExporter.regexEscape("model.layers.1"), "model\\.layers\\.1")
        XCTAssertEqual(SelectionExporter.regexEscape("a+b(c)[d]$^|*?{}"), "a\\+b\\(c\\)\\[d\\]\\$\\^\\|\\*\\?\\{\\}")
    }

    // MARK: json / csv

    func testJSONExport() throws {
        let s = topSelection()
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: SelectionExporter.render(s, format: .json)) as? [String: Any])
        XCTAssertEqual(obj["format"] as? String, "ila-selection")
        XCTAssertEqual(obj["version"] as? Int, 1)
        XCTAssertEqual(obj["top"] as? Double, 0.3)
        XCTAssertEqual(obj["source"] as? String, "runs/a b/ranking.json")
        XCTAssertTrue(obj["target"] is NSNull)
        let layers = try XCTUnwrap(obj["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.count, 56)
        XCTAssertEqual(layers.map { $0["name"] as? String }, s.layers.map(\.name))
        XCTAssertEqual(layers.filter { $0["selected"] as? Bool == true }.count, Ranking.topCount(fraction: 0.3, of: 56))
        for (l, e) in zip(layers, s.layers) {
            XCTAssertEqual(l["block"] as? Int, e.block)
            XCTAssertEqual(l["kind"] as? String, e.kind)
            // Foundation's JSON parser on Linux may be off in the last bit; the exact text is checked below.
            XCTAssertEqual(try XCTUnwrap(l["score"] as? Double), e.score, accuracy: 1e-12 * max(1, abs(e.score)))
            XCTAssertEqual(try XCTUnwrap(l["gamma"] as? Double), try XCTUnwrap(e.gamma), accuracy: 1e-12)
            XCTAssertEqual(l["rank"] as? Int, e.rank)
            XCTAssertEqual(l["selected"] as? Bool, e.selected)
        }
        // numbers are written as Swift's shortest round-trip text
        let text = try text(s, .json)
        for e in s.layers.prefix(10) {
            XCTAssertTrue(text.contains("\"score\": \(e.score),"), "\(e.score)")
            XCTAssertEqual(Double("\(e.score)"), e.score)
        }
        // canonical order: block, then q k v o gate up down
        XCTAssertEqual(layers.prefix(7).map { $0["kind"] as? String }, F.kinds)

        // no gamma → no key; a target → its path
        var t = F.selection(blocks: 2, selected: [F.layerName(0, "q_proj")], target: "models/\"big\"")
        for i in t.layers.indices { t.layers[i].gamma = nil }
        let obj2 = try XCTUnwrap(JSONSerialization.jsonObject(with: SelectionExporter.render(t, format: .json)) as? [String: Any])
        XCTAssertEqual(obj2["target"] as? String, "models/\"big\"")
        XCTAssertTrue(try XCTUnwrap(obj2["layers"] as? [[String: Any]]).allSatisfy { $0["gamma"] == nil })
    }

    func testCSVExport() throws {
        let s = topSelection()
        let lines = try text(s, .csv).split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "name,block,kind,score,gamma,rank,selected")
        XCTAssertEqual(lines.count, 57)
        for (line, e) in zip(lines.dropFirst(), s.layers) {
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            XCTAssertEqual(f.count, 7)
            XCTAssertEqual(f[0], e.name)
            XCTAssertEqual(Int(f[1]), e.block)
            XCTAssertEqual(f[2], e.kind)
            XCTAssertEqual(Double(f[3]), e.score)
            XCTAssertEqual(Double(f[4]), e.gamma)
            XCTAssertEqual(Int(f[5]), e.rank)
            XCTAssertEqual(f[6], e.selected ? "true" : "false")
        }
    }

    // MARK: yaml

    /// `- 'value'` items under `key:` (simple YAML line parsing).
    private func yamlList(_ text: String, key: String) -> [String] {
        var items: [String] = [], inside = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("#") { continue }
            if line == "\(key):" { inside = true; continue }
            guard inside else { continue }
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("- ") else { if !line.hasPrefix(" ") { inside = false }; continue }
            var v = String(t.dropFirst(2))
            if v.hasPrefix("'") && v.hasSuffix("'") { v = String(v.dropFirst().dropLast()).replacingOccurrences(of: "''", with: "'") }
            items.append(v)
        }
        return items
    }

    private func yamlScalars(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.hasPrefix(" ") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { out[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return out
    }

    func testAxolotlExport() throws {
        let s = topSelection(blocks: 12, top: 0.25)
        let yaml = try text(s, .axolotl)
        XCTAssertTrue(yaml.hasPrefix("#"))
        XCTAssertTrue(yaml.contains("runs/a b/ranking.json"))
        let regexes = yamlList(yaml, key: "unfrozen_parameters")
        XCTAssertEqual(regexes.count, s.selectedNames.count)
        var params: [String] = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"]
        for l in s.layers { params += [l.name + ".weight", l.name + ".bias"] }
        params.append("model.layers.100.self_attn.q_proj.weight")
        for (re, name) in zip(regexes, s.selectedNames) {
            XCTAssertTrue(re.hasPrefix("^") && re.hasSuffix("\\.weight$"), re)
            let r = try NSRegularExpression(pattern: re)
            let hits = params.filter { r.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) != nil }
            XCTAssertEqual(hits, [name + ".weight"], re)
        }
    }

    func testLlamaFactoryExport() throws {
        let s = topSelection(blocks: 8, top: 0.3)
        let yaml = try text(s, .llamaFactory)
        let kv = yamlScalars(yaml)
        XCTAssertEqual(kv["finetuning_type"], "freeze")
        XCTAssertNotNil(Int(kv["freeze_trainable_layers"] ?? ""))
        XCTAssertNotNil(kv["freeze_trainable_modules"])
        XCTAssertTrue(yaml.lowercased().contains("cannot express"))
        let listed = yaml.split(separator: "\n").filter { $0.hasPrefix("#   - ") }.map { String($0.dropFirst(6)) }
        XCTAssertEqual(listed, s.selectedNames)
    }

    func testLlamaFactoryApproximation() throws {
        // last 2 of 8 blocks, every layer: exactly expressible
        let last2 = Set((6..<8).flatMap { b in F.kinds.map { F.layerName(b, $0) } })
        let a = SelectionExporter.llamaFactoryApproximation(F.selection(blocks: 8, selected: last2))
        XCTAssertEqual(a.trainableLayers, 2)
        XCTAssertEqual(a.modules, ["self_attn", "mlp"])
        XCTAssertEqual([a.covered, a.missed, a.extra], [14, 0, 0])
        // first 3 blocks' MLPs
        let mlp3 = Set((0..<3).flatMap { b in ["gate_proj", "up_proj", "down_proj"].map { F.layerName(b, $0) } })
        let b = SelectionExporter.llamaFactoryApproximation(F.selection(blocks: 8, selected: mlp3))
        XCTAssertEqual(b.trainableLayers, -3)
        XCTAssertEqual(b.modules, ["mlp"])
        XCTAssertEqual([b.covered, b.missed, b.extra], [9, 0, 0])
        let yaml = try text(F.selection(blocks: 8, selected: mlp3), .llamaFactory)
        XCTAssertEqual(yamlScalars(yaml)["freeze_trainable_layers"], "-3")
        XCTAssertEqual(yamlScalars(yaml)["freeze_trainable_modules"], "mlp")
    }

    // MARK: freeze

    func testFreezeExport() throws {
        let s = topSelection()
        let list = try XCTUnwrap(JSONSerialization.jsonObject(with: SelectionExporter.render(s, format: .freeze)) as? [String])
        XCTAssertEqual(list, s.layers.filter { !$0.selected }.map { $0.name + ".weight" })
        XCTAssertEqual(list.count, 56 - Ranking.topCount(fraction: 0.3, of: 56))
        let all = Selection(ranking: F.ranking(blocks: 2), top: 1, source: "r.json")
        XCTAssertEqual(try JSONSerialization.jsonObject(with: SelectionExporter.render(all, format: .freeze)) as? [String], [])
    }

    // MARK: svg

    final class SVGCounter: NSObject, XMLParserDelegate {
        var selected: [String] = [], cells: [String] = [], texts: [String] = []
        var elements = 0
        var inText = false
        var buffer = ""
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            elements += 1
            if attributes["class"] == "selected" { selected.append(attributes["data-layer"] ?? "") }
            if attributes["class"] == "cell" { cells.append(attributes["data-layer"] ?? "") }
            if name == "text" || name == "title" { inText = true; buffer = "" }
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) { if inText { buffer += string } }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            if name == "text" || name == "title" { texts.append(buffer); inText = false }
        }
    }

    private func parseSVG(_ data: Data, file: StaticString = #filePath, line: UInt = #line) -> SVGCounter {
        let parser = XMLParser(data: data)
        let counter = SVGCounter()
        parser.delegate = counter
        XCTAssertTrue(parser.parse(), "SVG is not well-formed XML: \(String(describing: parser.parserError))", file: file, line: line)
        return counter
    }

    func testSVGIsWellFormedWithOneOutlinePerSelectedLayer() throws {
        for (blocks, top) in [(8, 0.3), (32, 0.75), (2, 1.0), (80, 0.1)] {
            let s = topSelection(blocks: blocks, top: top)
            let data = try SelectionExporter.render(s, format: .svg)
            let c = parseSVG(data)
            XCTAssertEqual(c.selected.count, s.selectedNames.count)
            XCTAssertEqual(Set(c.selected), Set(s.selectedNames))
            XCTAssertEqual(c.cells.count, blocks * 7)
            let t = String(decoding: data, as: UTF8.self)
            XCTAssertTrue(t.contains("<svg") && t.contains("linearGradient"))
            XCTAssertTrue(c.texts.contains { $0.contains("top \(Int(top * 100))%") && $0.contains("ranking.json") }, "default title")
            XCTAssertTrue(c.texts.contains { $0.hasPrefix("max ") } || blocks * 7 == 1)
            XCTAssertTrue(c.texts.contains { $0.hasPrefix("min ") })
            XCTAssertTrue(c.texts.contains("transformer block"))
            for k in F.kinds { XCTAssertTrue(c.texts.contains(k), k) }
        }
    }

    func testSVGEscapesTitleAndTarget() throws {
        let s = F.selection(blocks: 3, selected: [F.layerName(2, "v_proj")], target: "models/<T&'x'>")
        let data = try SelectionExporter.render(s, format: .svg, options: ExportOptions(title: "Llama <7B> & \"Alpaca\""))
        let c = parseSVG(data)
        XCTAssertTrue(c.texts.contains("Llama <7B> & \"Alpaca\""))
        XCTAssertTrue(c.texts.contains { $0.contains("<T&'x'>") })
        XCTAssertEqual(c.selected, [F.layerName(2, "v_proj")])
    }

    func testViridisEnds() {
        XCTAssertEqual(SelectionFigure.hex(SelectionFigure.colour(0)), "#440154")
        XCTAssertEqual(SelectionFigure.hex(SelectionFigure.colour(1)), "#fde725")
        XCTAssertEqual(SelectionFigure.hex(SelectionFigure.colour(0.5)), "#21918c")
        XCTAssertEqual(SelectionFigure.hex(SelectionFigure.colour(.nan)), "#21918c")
    }

    func testFormatNames() {
        XCTAssertEqual(ExportFormat.allCases.map(\.rawValue), ["json", "csv", "peft", "axolotl", "llama-factory", "freeze", "svg"])
        XCTAssertEqual(ExportFormat(rawValue: "llama-factory"), .llamaFactory)
    }
}
