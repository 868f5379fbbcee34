import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import ILATestSupport
import XCTest
import ILADiff
import ILARanking
@testable import ILATransfer

/// The built `ila-transfer` binary: output, every export format parsed back, and errors.
final class TransferCLITests: XCTestCase {
    /// A workspace with an 8-block ranking (scores from a fixed generator, some ties) and the
    /// tiny base-B target (3 blocks).
    struct Setup {
        let dir: TempDir
        let ranking: Ranking
        let rankingPath: String
        let target: String
        let transfer: RankingTransfer
    }

    func setup() throws -> Setup {
        let dir = TempDir("ila-transfer-cli")
        var state: UInt64 = 7
        let ranking = makeRanking(blocks: 8) { _, _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(Int(state >> 33) % 1601 - 500) / 200      // −2.5 … 5.5 in steps of 0.005
        }
        let rankingPath = dir.path("ranking.json")
        try ranking.write(path: rankingPath)
        let target = try TransferPaths.tiny("base-B").path
        let t = try RankingTransfer.load(rankingPath: rankingPath, targetPath: target)
        return Setup(dir: dir, ranking: ranking, rankingPath: rankingPath, target: target, transfer: t)
    }

    /// All tensor names of the target and every module path (each dotted prefix) they imply:
    /// what PEFT iterates over when it matches `target_modules`.
    func modulePaths(_ target: String) throws -> (tensors: [String], modules: [String]) {
        let names = try ModelCheckpoint(path: target).names
        var modules = Set<String>()
        for n in names {
            let parts = n.split(separator: ".").dropLast()
            for i in 1...max(1, parts.count) where i <= parts.count { modules.insert(parts.prefix(i).joined(separator: ".")) }
        }
        return (names, modules.sorted())
    }

    func fullMatch(_ pattern: String, _ s: String) throws -> Bool {
        let re = try NSRegularExpression(pattern: "^(?:" + pattern + ")$")
        return re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
    }

    // MARK: success

    func testTableAndExplain() throws {
        let s = try setup()
        let r = try runTransfer([s.rankingPath, s.target, "--top", "0.25", "--explain"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        let sel = s.transfer.selection(top: 0.25)
        XCTAssertTrue(r.stdout.contains("5 of 21 layers"), r.stdout)
        for name in sel.selectedNames { XCTAssertTrue(r.stdout.contains(name)) }
        // every target block explained with its source blocks and weights
        XCTAssertTrue(r.stdout.contains("target block 0: p = 0.833333 ← source block 0 (weight 0.166667) + source block 1 (weight 0.833333)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("target block 1: p = 3.5 ← source block 3 (weight 0.5) + source block 4 (weight 0.5)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("target block 2: p = 6.16667 ← source block 6 (weight 0.833333) + source block 7 (weight 0.166667)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("source blocks not read: 2, 5"))
        // no file written
        XCTAssertEqual(s.dir.contents(), ["ranking.json"])

        let all = try runTransfer([s.rankingPath, s.target, "--top", "0.25", "--all"])
        XCTAssertEqual(all.status, 0, all.stderr)
        for l in s.transfer.layers { XCTAssertTrue(all.stdout.contains(l.name)) }
    }

    func testJSONOutput() throws {
        let s = try setup()
        let r = try runTransfer([s.rankingPath, s.target, "--top", "0.5", "--json", "--explain"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let doc = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(doc["format"] as? String, "ila-selection")
        XCTAssertEqual(doc["target"] as? String, s.target)
        let layers = try XCTUnwrap(doc["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.count, 21)
        XCTAssertEqual(layers.filter { $0["selected"] as? Bool == true }.count, 11)   // ⌊10.5 + 0.5⌋
        let transfer = try XCTUnwrap(doc["transfer"] as? [String: Any])
        XCTAssertEqual(transfer["source_blocks"] as? Int, 8)
        XCTAssertEqual(transfer["target_blocks"] as? Int, 3)
        let blocks = try XCTUnwrap(transfer["blocks"] as? [[String: Any]])
        XCTAssertEqual(blocks.map { $0["lo"] as? Int }, [0, 3, 6])
        XCTAssertEqual(blocks.map { $0["hi"] as? Int }, [1, 4, 7])
        let details = try XCTUnwrap(transfer["layers"] as? [[String: Any]])
        for d in details {
            let lo = d["score_lo"] as! Double, hi = d["score_hi"] as! Double, w = d["w"] as! Double
            XCTAssertEqual(d["score"] as! Double, (1 - w) * lo + w * hi, accuracy: 1e-12)
        }
    }

    /// Each format written with -o is exactly what `SelectionExporter` renders for the
    /// transferred selection, and parses back to that selection.
    func testEveryExportFormatParsesBack() throws {
        let s = try setup()
        let top = 0.3
        let sel = s.transfer.selection(top: top)
        let selected = Set(sel.selectedNames)
        XCTAssertEqual(selected.count, 6)   // ⌊6.3 + 0.5⌋
        let (tensors, modules) = try modulePaths(s.target)
        let byName = Dictionary(uniqueKeysWithValues: s.transfer.layers.map { ($0.name, $0) })

        for format in ExportFormat.allCases {
            let out = s.dir.path("out.\(format.rawValue)")
            var args = [s.rankingPath, s.target, "--top", "\(top)", "--format", format.rawValue, "-o", out]
            if format == .peft { args += ["--lora-r", "4", "--lora-alpha", "8"] }
            let r = try runTransfer(args)
            XCTAssertEqual(r.status, 0, "\(format): \(r.stderr)")
            let data = try Data(contentsOf: URL(fileURLWithPath: out))
            let options = format == .peft ? ExportOptions(loraR: 4, loraAlpha: 8) : ExportOptions()
            XCTAssertEqual(data, try SelectionExporter.render(sel, format: format, options: options), "\(format) differs from the exporter")
            // printed to stdout without -o: the same bytes
            let stdout = try runTransfer([s.rankingPath, s.target, "--top", "\(top)", "--format", format.rawValue]
                                         + (format == .peft ? ["--lora-r", "4", "--lora-alpha", "8"] : []))
            XCTAssertEqual(stdout.status, 0)
            XCTAssertEqual(Data(stdout.stdout.utf8), data, "\(format) on stdout")
            let text = String(decoding: data, as: UTF8.self)

            switch format {
            case .json:
                let doc = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
                XCTAssertEqual(doc["format"] as? String, "ila-selection")
                XCTAssertEqual(doc["version"] as? Int, 1)
                XCTAssertEqual(doc["top"] as? Double, top)
                XCTAssertEqual(doc["source"] as? String, s.rankingPath)
                XCTAssertEqual(doc["target"] as? String, s.target)
                // numbers through JSONDecoder: JSONSerialization on Linux does not round-trip doubles exactly
                let layers = try JSONDecoder().decode(SelectionDoc.self, from: data).layers
                XCTAssertEqual(layers.map(\.name), s.transfer.layers.map(\.name))   // canonical order
                for (l, e) in zip(layers, sel.layers) {
                    XCTAssertEqual(l.score, byName[l.name]!.score, l.name)
                    XCTAssertEqual(l.rank, e.rank)
                    XCTAssertEqual(l.block, e.block)
                    XCTAssertEqual(l.kind, e.kind)
                    XCTAssertEqual(l.selected, selected.contains(l.name))
                    XCTAssertNil(l.gamma)
                }
            case .csv:
                let lines = text.split(separator: "\n").map(String.init)
                XCTAssertEqual(lines.first, "name,block,kind,score,gamma,rank,selected")
                XCTAssertEqual(lines.count, 22)
                for (line, e) in zip(lines.dropFirst(), sel.layers) {
                    let c = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                    XCTAssertEqual(c.count, 7)
                    XCTAssertEqual(c[0], e.name)
                    XCTAssertEqual(Int(c[1]), e.block)
                    XCTAssertEqual(c[2], e.kind)
                    XCTAssertEqual(Double(c[3]), byName[e.name]!.score)
                    XCTAssertEqual(c[4], "")
                    XCTAssertEqual(Int(c[5]), e.rank)
                    XCTAssertEqual(c[6], selected.contains(e.name) ? "true" : "false")
                }
            case .peft:
                let cfg = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
                XCTAssertEqual(cfg["r"] as? Int, 4)
                XCTAssertEqual(cfg["lora_alpha"] as? Int, 8)
                XCTAssertEqual(cfg["task_type"] as? String, "CAUSAL_LM")
                let pattern = try XCTUnwrap(cfg["target_modules"] as? String)
                let matched = try modules.filter { try fullMatch(pattern, $0) }
                XCTAssertEqual(Set(matched), selected, "peft target_modules \(pattern)")
            case .axolotl:
                XCTAssertTrue(text.contains("unfrozen_parameters:"))
                let patterns = text.split(separator: "\n").compactMap { line -> String? in
                    let t = line.trimmingCharacters(in: .whitespaces)
                    guard t.hasPrefix("- '"), t.hasSuffix("'") else { return nil }
                    return String(t.dropFirst(3).dropLast()).replacingOccurrences(of: "''", with: "'")
                }
                XCTAssertEqual(patterns.count, selected.count)
                var matched = Set<String>()
                for p in patterns {
                    let re = try NSRegularExpression(pattern: p)
                    for n in tensors where re.firstMatch(in: n, range: NSRange(n.startIndex..., in: n)) != nil { matched.insert(n) }
                }
                XCTAssertEqual(matched, Set(selected.map { $0 + ".weight" }))
            case .llamaFactory:
                XCTAssertTrue(text.contains("finetuning_type: freeze"))
                let listed = text.split(separator: "\n").compactMap { line -> String? in
                    line.hasPrefix("#   - ") ? String(line.dropFirst(6)) : nil
                }
                XCTAssertEqual(Set(listed), selected)
            case .freeze:
                let list = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String])
                XCTAssertEqual(Set(list), Set(sel.layers.filter { !$0.selected }.map { $0.name + ".weight" }))
                XCTAssertTrue(Set(list).isSubset(of: Set(tensors)))
            case .svg:
                let parser = XMLParser(data: data)
                let root = SVGRoot()
                parser.delegate = root
                XCTAssertTrue(parser.parse(), "svg does not parse: \(String(describing: parser.parserError))")
                XCTAssertEqual(root.root, "svg")
            }
        }
        XCTAssertEqual(s.dir.contents().filter { $0.hasPrefix(".") }, [], "temporary files left behind")
    }

    /// When python3 with torch, transformers and peft is at hand: PEFT itself, given the peft
    /// export, adapts exactly the selected modules of the target model.
    func testPEFTAdaptsExactlyTheSelectedModules() throws {
        let s = try setup()
        let cfg = s.dir.path("adapter_config.json")
        let r = try runTransfer([s.rankingPath, s.target, "--top", "0.4", "--format", "peft", "-o", cfg])
        XCTAssertEqual(r.status, 0, r.stderr)
        let script = """
        import json, sys
        try:
            import peft, torch, transformers
        except Exception as e:
            print("SKIP", e); sys.exit(0)
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(sys.argv[1]))
        pm = peft.get_peft_model(model, peft.LoraConfig(**json.load(open(sys.argv[2]))))
        print(json.dumps(sorted(n[len("base_model.model."):] for n, m in pm.named_modules()
                                if hasattr(m, "lora_A") and n.startswith("base_model.model."))))
        """
        let py = s.dir.path("check.py")
        try script.write(toFile: py, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", py, s.target, cfg]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { throw XCTSkip("python3 is not available; skipping the PEFT check") }
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        if p.terminationStatus != 0 || out.hasPrefix("SKIP") || out.isEmpty {
            throw XCTSkip("python3 with torch, transformers and peft is not available (\(out.prefix(80))); skipping the PEFT check")
        }
        let adapted = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String])
        XCTAssertEqual(Set(adapted), Set(s.transfer.selection(top: 0.4).selectedNames))
    }

    /// Same depth: the transferred selection is the ranking's own selection (dataset transfer).
    func testIdentityThroughTheCLI() throws {
        let dir = TempDir("ila-transfer-cli")
        let base = try TransferPaths.tiny("base-A").path
        let names = LinearLayer.layers(in: try ModelCheckpoint(path: base)).map(\.name)
        let r = makeRanking(blocks: 2, names: names) { b, k in Double(b) - Double(allKinds.firstIndex(of: k)!) * 0.25 }
        let path = dir.path("r.json")
        try r.write(path: path)
        let out = dir.path("sel.json")
        let run = try runTransfer([path, base, "--top", "0.5", "-o", out])
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("identity"))
        let layers = try JSONDecoder().decode(SelectionDoc.self, from: Data(contentsOf: URL(fileURLWithPath: out))).layers
        XCTAssertEqual(layers.map(\.name), r.layers.map(\.name))
        XCTAssertEqual(layers.map(\.score), r.layers.map(\.score))
        XCTAssertEqual(layers.map(\.rank), r.layers.map(\.rank))
        let top = r.top(0.5)
        XCTAssertEqual(layers.map(\.selected), r.layers.map { top.contains($0.name) })
    }

    // MARK: errors

    /// Exit 1, exactly one `error:` line containing `fragments`, nothing on stdout, and no
    /// output file (nor temporary) in the folder.
    func assertFails(_ args: [String], in dir: TempDir, contains fragments: [String],
                     file: StaticString = #filePath, line: UInt = #line) throws {
        let before = dir.contents()
        let r = try runTransfer(args)
        XCTAssertEqual(r.status, 1, "exit status for \(args): \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stderrLines.count, 1, "stderr: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.hasPrefix("error: "), r.stderr, file: file, line: line)
        for f in fragments { XCTAssertTrue(r.stderr.contains(f), "stderr lacks \(f): \(r.stderr)", file: file, line: line) }
        XCTAssertEqual(r.stdout, "", file: file, line: line)
        XCTAssertEqual(dir.contents(), before, "files changed", file: file, line: line)
    }

    func testErrors() throws {
        let s = try setup()
        let out = s.dir.path("out.json")
        // missing ranking file
        let missing = s.dir.path("missing.json")
        try assertFails([missing, s.target, "--top", "0.5", "-o", out], in: s.dir, contains: [missing, "no such file"])
        // wrong format / version
        var obj = try JSONSerialization.jsonObject(with: try s.ranking.jsonData()) as! [String: Any]
        obj["format"] = "ila-selection"
        let wrongFormat = s.dir.path("wrong-format.json")
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: wrongFormat))
        try assertFails([wrongFormat, s.target, "--top", "0.5", "-o", out], in: s.dir, contains: [wrongFormat, "ila-ranking"])
        obj["format"] = "ila-ranking"
        obj["version"] = 7
        let wrongVersion = s.dir.path("wrong-version.json")
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: wrongVersion))
        try assertFails([wrongVersion, s.target, "--top", "0.5", "-o", out], in: s.dir, contains: [wrongVersion, "version 7"])
        let notJSON = s.dir.path("not.json")
        try "{ nope".write(toFile: notJSON, atomically: true, encoding: .utf8)
        try assertFails([notJSON, s.target, "--top", "0.5", "-o", out], in: s.dir, contains: [notJSON])
        // target path missing, or not a model
        let noTarget = s.dir.path("no-such-model")
        try assertFails([s.rankingPath, noTarget, "--top", "0.5", "-o", out], in: s.dir, contains: [noTarget])
        let adapter = try TransferPaths.tiny("lora-define-100").path
        try assertFails([s.rankingPath, adapter, "--top", "0.5", "-o", out], in: s.dir, contains: [adapter, "adapter"])
        // a target kind the source lacks
        let qv = makeRanking(blocks: 8, kinds: ["q_proj", "v_proj"]) { b, _ in Double(b) }
        let qvPath = s.dir.path("qv.json")
        try qv.write(path: qvPath)
        try assertFails([qvPath, s.target, "--top", "0.5", "-o", out], in: s.dir,
                        contains: [qvPath, s.target, "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        try assertFails([qvPath, s.target, "--top", "0.5"], in: s.dir, contains: ["k_proj"])
        // unwritable output: missing folder, a directory in the way
        let noFolder = s.dir.path("no-folder/out.json")
        try assertFails([s.rankingPath, s.target, "--top", "0.5", "-o", noFolder], in: s.dir, contains: ["no-folder", "does not exist"])
        _ = s.dir.sub("a-directory")
        try assertFails([s.rankingPath, s.target, "--top", "0.5", "-o", s.dir.path("a-directory")], in: s.dir,
                        contains: ["a-directory", "directory"])
        XCTAssertEqual(s.dir.contents().filter { $0.hasPrefix(".") }, [])
    }

    func testUsageErrorsExit2() throws {
        let s = try setup()
        for args in [[s.rankingPath, s.target],                                   // --top missing
                     [s.rankingPath, s.target, "--top", "0"],
                     [s.rankingPath, s.target, "--top", "1.5"],
                     [s.rankingPath, s.target, "--top", "nan"],
                     [s.rankingPath, s.target, "--top", "0.5", "--format", "yaml"],
                     [s.rankingPath, s.target, "--top", "0.5", "--lora-r", "0", "-o", s.dir.path("x")],
                     [s.rankingPath, s.target, "--top", "0.5", "--format", "csv", "--json"]] {
            let r = try runTransfer(args)
            XCTAssertEqual(r.status, 2, "\(args): \(r.stderr)")
        }
        XCTAssertEqual(s.dir.contents(), ["ranking.json"])
        let help = try runTransfer(["--help"])
        XCTAssertEqual(help.status, 0)
        for option in ["--top", "--format", "--output", "--json", "--explain", "--lora-r", "--lora-alpha", "Examples:"] {
            XCTAssertTrue(help.stdout.contains(option), option)
        }
    }
}

/// Records the first element of an XML document.
final class SVGRoot: NSObject, XMLParserDelegate {
    var root: String?
    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        if root == nil { root = elementName }
    }
}

/// The json export, decoded with exact numbers.
struct SelectionDoc: Decodable {
    struct Layer: Decodable {
        var name: String
        var block: Int
        var kind: String
        var score: Double
        var gamma: Double?
        var rank: Int
        var selected: Bool
    }
    var format: String
    var version: Int
    var top: Double
    var source: String
    var target: String?
    var layers: [Layer]
}
