import Foundation
import XCTest
import ILADiff
import ILATestSupport
@testable import ILAMask

/// The Jinja renderer and `--template model` against fixtures rendered by jinja2 / transformers
/// (scripts/make-chat-template-fixtures.py).
final class ChatTemplateTests: XCTestCase {
    static let root = RepoPaths.fixtures.appendingPathComponent("chat-templates")
    static let families = ["llama3.1", "llama3.2", "qwen2.5", "qwen3", "gemma2", "gemma3", "phi3", "mistral-v0.3"]

    static func readJSON(_ url: URL) throws -> JValue {
        try JValue.parseJSON(Array(try Data(contentsOf: url)))
    }

    static func str(_ v: JValue?) -> String? { if case .string(let s)? = v { return s } else { return nil } }
    static func ints(_ v: JValue?) -> [Int]? {
        guard case .list(let l)? = v else { return nil }
        return l.compactMap { if case .int(let i) = $0 { return i } else { return nil } }
    }
    static func dict(_ v: JValue?) -> JDict? { if case .dict(let d)? = v { return d } else { return nil } }

    // MARK: - renderer constructs against jinja2

    func testSnippetsRenderAsJinja2() throws {
        guard case .list(let snippets) = try Self.readJSON(Self.root.appendingPathComponent("snippets.json")) else {
            return XCTFail("snippets.json is not a list")
        }
        XCTAssertGreaterThan(snippets.count, 90)
        var checked = 0
        for s in snippets {
            guard let d = Self.dict(s), let template = Self.str(d["template"]) else { return XCTFail("bad snippet \(s)") }
            var vars: [String: JValue] = [:]
            for (k, v) in Self.dict(d["vars"])?.pairs ?? [] { vars[k] = v }
            if let expected = Self.str(d["output"]) {
                do {
                    let got = try ChatTemplate(source: template).render(variables: vars)
                    XCTAssertEqual(got, expected, "template: \(template)")
                } catch {
                    XCTFail("template \(template) failed: \(error)")
                }
            } else {
                let expected = Self.str(d["error"]) ?? ""
                do {
                    let got = try ChatTemplate(source: template).render(variables: vars)
                    XCTFail("template \(template) rendered \(got.debugDescription) but jinja2 refused it: \(expected)")
                } catch let e as JinjaError {
                    if expected.hasPrefix("TemplateError: ") {
                        XCTAssertEqual(e.kind, .raised)
                        XCTAssertEqual(e.message, String(expected.dropFirst("TemplateError: ".count)))
                    }
                    XCTAssertFalse(e.description.contains("\n"), e.description)
                    XCTAssertTrue(e.description.hasPrefix("line "), e.description)
                }
            }
            checked += 1
        }
        XCTAssertEqual(checked, snippets.count)
    }

    // MARK: - families: rendered text, ids and labels as transformers gives them

    func testFamiliesRenderAndLabelAsTransformers() throws {
        var cases = 0
        for family in Self.families {
            let dir = Self.root.appendingPathComponent(family)
            let expected = try XCTUnwrap(Self.dict(try Self.readJSON(dir.appendingPathComponent("expected.json"))))
            let chat = try XCTUnwrap(try ModelChatTemplate.load(directory: dir.path), family)
            var special: [String: String] = [:]
            for (k, v) in Self.dict(expected["special_tokens"])?.pairs ?? [] { special[k] = Self.str(v) }
            XCTAssertEqual(chat.specialTokens, special, family)
            let tok = try Tokenizer(path: dir.path)
            let specialIDs = try SpecialTokens.resolve(directory: dir.path, tokenizer: tok)
            guard case .list(let list)? = expected["cases"] else { return XCTFail("\(family): no cases") }
            for c in list {
                let cd = try XCTUnwrap(Self.dict(c))
                let name = family + "/" + (Self.str(cd["name"]) ?? "?")
                let rowText = try XCTUnwrap(Self.str(cd["row"]))
                let row = try XCTUnwrap(Self.dict(try JValue.parseJSON(Array(rowText.utf8))))
                guard case .list(let messages)? = row["messages"] else { return XCTFail(name) }
                let tools = row["tools"]
                var kwargs: [String: JValue] = [:]
                for (k, v) in Self.dict(row["chat_template_kwargs"])?.pairs ?? [] { kwargs[k] = v }
                let template = try ChatTemplate(source: try chat.select(hasTools: tools != nil).source)
                for (key, agp) in [("render", false), ("render_agp", true)] {
                    let want = try XCTUnwrap(Self.dict(cd[key]))
                    do {
                        let got = try template.apply(messages: messages, tools: tools, addGenerationPrompt: agp,
                                                     specialTokens: chat.specialTokens, kwargs: kwargs)
                        XCTAssertEqual(got, Self.str(want["text"]), "\(name) \(key)")
                    } catch let e as JinjaError {
                        let err = Self.str(want["error"]) ?? "rendered"
                        XCTAssertEqual("raise:" + e.message, err, "\(name) \(key): \(e)")
                    }
                }
                let file = FileManager.default.temporaryDirectory.appendingPathComponent("ila-chat-\(UUID().uuidString).jsonl")
                try (rowText + "\n").write(to: file, atomically: true, encoding: .utf8)
                defer { try? FileManager.default.removeItem(at: file) }
                for (key, trainOn) in [("last", TrainOn.last), ("all-assistant", TrainOn.allAssistant)] {
                    let want = try XCTUnwrap(Self.dict(cd[key]))
                    do {
                        let rows = try loadInstructionRows(path: file.path, format: DataFormat(template: .model, trainOn: trainOn),
                                                           chat: chat, tokenizer: tok, special: specialIDs, seqLen: 100_000, limit: nil)
                        XCTAssertNil(want["error"], "\(name) \(key): Swift labelled a row transformers' side refused")
                        XCTAssertEqual(rows.count, 1)
                        XCTAssertEqual(rows.first?.ids, Self.ints(want["ids"]), "\(name) \(key) ids")
                        XCTAssertEqual(rows.first?.labels, Self.ints(want["labels"]), "\(name) \(key) labels")
                    } catch let e as ILAError {
                        let err = try XCTUnwrap(Self.str(want["error"]), "\(name) \(key): \(e.message)")
                        XCTAssertFalse(e.message.contains("\n"))
                        XCTAssertTrue(e.message.hasPrefix(file.path + ":1: "), e.message)
                        switch err {
                        case "turn-differs": XCTAssertTrue(e.message.contains("differently when later turns follow"), e.message)
                        case "prompt-not-prefix": XCTAssertTrue(e.message.contains("is not the start of the text"), e.message)
                        default:
                            XCTAssertTrue(err.hasPrefix("raise:"), err)
                            XCTAssertTrue(e.message.contains("raise_exception: " + err.dropFirst(6)), e.message)
                        }
                    }
                }
                cases += 1
            }
        }
        XCTAssertGreaterThanOrEqual(cases, 70)
    }

    /// The trained pieces are the assistant turns' text (a spot check of what the labels mean).
    func testLabelledTextIsTheAssistantTurns() throws {
        let dir = Self.root.appendingPathComponent("llama3.1")
        let chat = try XCTUnwrap(try ModelChatTemplate.load(directory: dir.path))
        let tok = try Tokenizer(path: dir.path)
        let b = try ChatRowBuilder(chat: chat, tokenizer: tok, trainOn: .allAssistant)
        func m(_ r: String, _ c: String) -> JValue { .dict(JDict([("role", .string(r)), ("content", .string(c))])) }
        let pieces = try b.pieces(messages: [m("user", "Hi"), m("assistant", "Hello"), m("user", "Bye"), m("assistant", "Ciao")],
                                  tools: nil, kwargs: [:])
        XCTAssertEqual(pieces.filter(\.trained).map(\.text), ["Hello<|eot_id|>", "Ciao<|eot_id|>"])
        XCTAssertTrue(pieces[0].text.hasPrefix("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date"))
        XCTAssertTrue(pieces[0].text.hasSuffix("<|start_header_id|>assistant<|end_header_id|>\n\n"))
        let last = try ChatRowBuilder(chat: chat, tokenizer: tok, trainOn: .last)
            .pieces(messages: [m("user", "Hi"), m("assistant", "Hello"), m("user", "Bye"), m("assistant", "Ciao")], tools: nil, kwargs: [:])
        XCTAssertEqual(last.filter(\.trained).map(\.text), ["Ciao<|eot_id|>"])
    }

    // MARK: - loading

    func testTemplateSourcesAndSelection() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("ila-ct-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let cfg = tmp.appendingPathComponent("tokenizer_config.json")
        XCTAssertNil(try ModelChatTemplate.load(directory: tmp.path))
        try #"{"eos_token": {"content": "</s>"}, "chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]}"#
            .write(to: cfg, atomically: true, encoding: .utf8)
        var t = try XCTUnwrap(try ModelChatTemplate.load(directory: tmp.path))
        XCTAssertEqual(try t.select(hasTools: false).source, "D")
        XCTAssertEqual(try t.select(hasTools: true).source, "T")
        XCTAssertEqual(t.specialTokens, ["eos_token": "</s>"])
        try "J\n".write(to: tmp.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)
        t = try XCTUnwrap(try ModelChatTemplate.load(directory: tmp.path))
        XCTAssertEqual(try t.select(hasTools: true).source, "J\n")
        XCTAssertEqual(try ChatTemplate(source: "J\n").render(variables: [:]), "J")  // one trailing newline dropped
        try FileManager.default.removeItem(at: tmp.appendingPathComponent("chat_template.jinja"))
        try #"{"chat_template": [{"name": "a", "template": "A"}, {"name": "b", "template": "B"}]}"#.write(to: cfg, atomically: true, encoding: .utf8)
        t = try XCTUnwrap(try ModelChatTemplate.load(directory: tmp.path))
        XCTAssertThrowsError(try t.select(hasTools: false)) { XCTAssertTrue("\($0)".contains("none named default"), "\($0)") }
        try #"{"chat_template": 3}"#.write(to: cfg, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ModelChatTemplate.load(directory: tmp.path)) {
            XCTAssertTrue("\($0)".contains("chat_template is neither a string nor a list"), "\($0)")
        }
    }

    // MARK: - refusals

    func testUnsupportedConstructsNameLineAndConstruct() {
        let cases: [(String, Int, String)] = [
            ("a\nb\n{% include 'x.jinja' %}", 3, "unsupported Jinja construct: {% include %}"),
            ("{% extends 'base' %}", 1, "{% extends %}"),
            ("x\n{% for a in b recursive %}{% endfor %}", 2, "recursive for loops"),
            ("\n\n\n{{ x | wordwrap(10) }}", 4, "unsupported Jinja construct: filter 'wordwrap'"),
            ("{{ x | groupby('a') }}", 1, "filter 'groupby'"),
            ("{% with a = 1 %}{% endwith %}", 1, "{% with %}"),
            ("{% raw %}x{% endraw %}", 1, "{% raw %}"),
            ("\n{% do x.append(1) %}", 2, "{% do %}"),
            ("{{ f(*args) }}", 1, "*args"),
            ("{{ x | nosuch }}", 1, "no filter named 'nosuch'"),
            ("{{ x is nosuch }}", 1, "no test named 'nosuch'"),
            ("{% if x %}", 1, "'if' is never closed"),
            ("{{ x ", 1, "'{{' is not closed"),
            ("{% endfor %}", 1, "unknown tag 'endfor'"),
            ("ok\n{% frobnicate %}", 2, "unknown tag 'frobnicate'"),
        ]
        for (source, line, text) in cases {
            XCTAssertThrowsError(try ChatTemplate(source: source), source) { e in
                guard let j = e as? JinjaError else { return XCTFail("\(source): \(e)") }
                XCTAssertEqual(j.line, line, "\(source): \(j)")
                XCTAssertTrue(j.description.contains(text), "\(source): \(j.description)")
                XCTAssertTrue(j.description.hasPrefix("line \(line): "), j.description)
            }
        }
        // Found when run: a global jinja2 has that this renderer lacks, and '{:>5}'.format.
        XCTAssertThrowsError(try ChatTemplate(source: "\n{{ cycler(1, 2) }}").render(variables: [:])) {
            XCTAssertEqual("\($0)", "line 2: unsupported Jinja construct: the global cycler()")
        }
        XCTAssertThrowsError(try ChatTemplate(source: "{{ '{:>5}'.format(1) }}").render(variables: [:])) {
            XCTAssertTrue("\($0)".contains("unsupported Jinja construct: str.format field"), "\($0)")
        }
    }

    func testRaiseExceptionNamesItsLine() {
        let t = "{% for m in messages %}\n{% if m.role == 'system' %}\n{{ raise_exception('System role not supported') }}\n{% endif %}{% endfor %}"
        XCTAssertThrowsError(try ChatTemplate(source: t).apply(messages: [.dict(JDict([("role", .string("system"))]))],
                                                               addGenerationPrompt: false)) {
            XCTAssertEqual("\($0)", "line 3: raise_exception: System role not supported")
        }
    }

    func testHostileTemplatesStopWithinLimits() {
        let small = JinjaLimits(steps: 200_000, stringLength: 1_000_000, callDepth: 32)
        let cases: [(String, String)] = [
            ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "evaluation steps"),
            ("{{ 'a' * 10000000 }}", "grew beyond"),
            ("{% set s = namespace(v='ab') %}{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}", "grew beyond"),
            ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested deeper"),
            ("{{ range(10000000) }}", "range too big"),
            ("{{ 2 ** 200 }}", "integer overflow"),
            ("{{ " + String(repeating: "(", count: 500) + "1" + String(repeating: ")", count: 500) + " }}", "nested deeper"),
            (String(repeating: "{% if true %}", count: 300) + String(repeating: "{% endif %}", count: 300), "nested deeper"),
        ]
        for (source, text) in cases {
            XCTAssertThrowsError(try ChatTemplate(source: source, limits: small).render(variables: [:]), source) {
                XCTAssertTrue("\($0)".contains(text), "\(source.prefix(60)): \($0)")
            }
        }
    }

    func testStrftimeNowIsTheLocalDate() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/date")
        p.arguments = ["+%d %b %Y"]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        p.waitUntilExit()
        let date = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .newlines)
        XCTAssertEqual(try ChatTemplate(source: "{{ strftime_now('%d %b %Y') }}").render(variables: [:]), date)
    }

    // MARK: - the command line

    private func tokenize(_ args: [String]) throws -> CommandResult {
        try CommandRunner.run("ila-mask", ["tokenize"] + args)
    }

    private func jsonl(_ lines: [String]) throws -> String {
        let f = FileManager.default.temporaryDirectory.appendingPathComponent("ila-chat-\(UUID().uuidString).jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: f, atomically: true, encoding: .utf8)
        return f.path
    }

    func testCommandDefaultsToTheModelTemplateForMessages() throws {
        let dir = Self.root.appendingPathComponent("qwen2.5").path
        let chat = #"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#
        let data = try jsonl([chat])
        defer { try? FileManager.default.removeItem(atPath: data) }
        let auto = try tokenize(["--base", dir, "--data", data, "--json"])
        let model = try tokenize(["--base", dir, "--data", data, "--json", "--template", "model"])
        XCTAssertEqual(auto.status, 0, auto.stderr)
        XCTAssertEqual(auto.stdout, model.stdout)
        let tok = try Tokenizer(path: dir)
        let prompt = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        let p = tok.encode(prompt), r = tok.encode("Hello<|im_end|>\n")
        func list(_ x: [Int]) -> String { "[" + x.map(String.init).joined(separator: ",") + "]" }
        XCTAssertEqual(auto.stdout, "{\"ids\":\(list(p + r)),\"labels\":\(list([Int](repeating: -100, count: p.count) + r))}\n")
        // alpaca rows keep the alpaca template by default
        let alpaca = try jsonl([#"{"instruction": "Hi", "output": "Hello"}"#])
        defer { try? FileManager.default.removeItem(atPath: alpaca) }
        let a = try tokenize(["--base", dir, "--data", alpaca, "--json"])
        let b = try tokenize(["--base", dir, "--data", alpaca, "--json", "--template", "alpaca"])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(a.stdout, b.stdout)
        XCTAssertNotEqual(a.stdout, try tokenize(["--base", dir, "--data", alpaca, "--json", "--template", "model"]).stdout)
    }

    func testCommandRefusalsAreOneLine() throws {
        let gemma = Self.root.appendingPathComponent("gemma2").path
        let data = try jsonl([#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#,
                              #"{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#])
        defer { try? FileManager.default.removeItem(atPath: data) }
        var r = try tokenize(["--base", gemma, "--data", data, "--template", "model"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdout, "")
        XCTAssertEqual(r.errorLines.count, 1, r.stderr)
        XCTAssertEqual(r.stderrLines.count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("\(data):2: chat template (") && r.stderr.contains("line 1: raise_exception: System role not supported"), r.stderr)

        // no chat template: --template model is refused
        let plain = RepoPaths.fixtures.appendingPathComponent("tokenizers/gpt2").path
        r = try tokenize(["--base", plain, "--data", data, "--template", "model"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("the tokenizer has no chat template"), r.stderr)

        // an unsupported construct in the model's template: the file, line and construct
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("ila-ct-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        try FileManager.default.copyItem(atPath: gemma + "/tokenizer.json", toPath: tmp.appendingPathComponent("tokenizer.json").path)
        try "{% for m in messages %}\n{{ m.content | wordwrap(4) }}\n{% endfor %}".write(
            to: tmp.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)
        r = try tokenize(["--base", tmp.path, "--data", data])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderrLines, ["error: \(tmp.path)/chat_template.jinja: chat template: line 2: unsupported Jinja construct: filter 'wordwrap'"])

        // several assistant turns under a hand-written template and all-assistant
        let multi = try jsonl([#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}"#])
        defer { try? FileManager.default.removeItem(atPath: multi) }
        r = try tokenize(["--base", gemma, "--data", multi, "--template", "chatml", "--train-on", "all-assistant"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("--train-on all-assistant needs --template model"), r.stderr)
        r = try tokenize(["--base", gemma, "--data", multi, "--train-on", "all-assistant", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try tokenize(["--base", gemma, "--data", multi, "--chat-template-kwargs", "[1]"])
        XCTAssertEqual(r.status, 2)  // a usage error
        XCTAssertTrue(r.stderr.contains("--chat-template-kwargs must be a JSON object"), r.stderr)
    }
}
