import Foundation
import XCTest
import ILADiff
import ILATestSupport
@testable import ILAMask

/// `ila-mask tokenize` end to end, through the built binary.
final class TokenizerCommandTests: XCTestCase {
    private var fixtures: URL { RepoPaths.fixtures.appendingPathComponent("tokenizers") }

    private func run(_ args: [String]) throws -> CommandResult {
        try CommandRunner.run("ila-mask", ["tokenize"] + args)
    }

    /// A JSON string literal for `s`, escaping only what JSON requires (so every scalar is
    /// written as it is).
    private func jsonString(_ s: String) -> String {
        var out = "\""
        for x in s.unicodeScalars {
            switch x.value {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0..<0x20: out += String(format: "\\u%04x", x.value)
            default: out.unicodeScalars.append(x)
            }
        }
        return out + "\""
    }

    private func expectedIDs(_ family: String) throws -> [[Int]] {
        let json = try JSONValue.read(fixtures.appendingPathComponent(family).appendingPathComponent("expected.json").path)
        return try XCTUnwrap(json["ids"]?.array).map { ($0.array ?? []).compactMap(\.int) }
    }

    private func parseLines(_ text: String) throws -> [[Int]] {
        try text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map { line in
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [Int], "\(line)")
        }
    }

    func testTextsRoundTripMatchesTokenizers() throws {
        let dir = TempDir("ila-tokenize")
        let texts = dir.path("texts.jsonl")
        let strings = TokenizerFamilyTests.strings
        XCTAssertFalse(strings.isEmpty)
        try Data((strings.map(jsonString).joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: texts))
        for family in ["llama3", "gemma", "qwen2", "tekken", "phi3"] {
            let r = try run(["--base", fixtures.appendingPathComponent(family).path, "--texts", texts])
            XCTAssertEqual(r.status, 0, "\(family): \(r.stderr)")
            XCTAssertEqual(r.stderr, "", family)
            let got = try parseLines(r.stdout)
            XCTAssertEqual(got.count, strings.count, family)
            XCTAssertEqual(got, try expectedIDs(family), family)
        }
        // A final line without a newline counts; a tokenizer.json file works as --base too.
        try Data("\"Hello world\"\n\"\"".utf8).write(to: URL(fileURLWithPath: texts))
        let file = fixtures.appendingPathComponent("gpt2").appendingPathComponent("tokenizer.json").path
        let r = try run(["--base", file, "--texts", texts])
        XCTAssertEqual(r.status, 0, r.stderr)
        let tok = try Tokenizer(path: file)
        XCTAssertEqual(try parseLines(r.stdout), [tok.encode("Hello world"), []])
    }

    func testTextJSONAndHumanView() throws {
        let base = fixtures.appendingPathComponent("llama3").path
        let tok = try Tokenizer(path: base)
        let text = "Hello, world! It's 2024.\n"
        var r = try run(["--base", base, "--text", text, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ids = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [Int])
        XCTAssertEqual(ids, tok.encode(text))
        r = try run(["--base", base, "--text", text])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("\(ids.count) tokens\n"), r.stdout)
        XCTAssertTrue(r.stdout.contains("ids: [" + ids.map(String.init).joined(separator: ",") + "]"), r.stdout)
        XCTAssertTrue(r.stdout.contains(tok.displayToken(ids[0])), r.stdout)  // each token's spelling
        XCTAssertTrue(r.stdout.contains("\"Ċ\""), r.stdout)  // the newline's byte-level spelling
    }

    func testDataRowsWithLabels() throws {
        let base = fixtures.appendingPathComponent("llama3").path
        let data = RepoPaths.fixtures.appendingPathComponent("data/define.eval.jsonl").path
        let tok = try Tokenizer(path: base)
        let special = try SpecialTokens.resolve(directory: base, tokenizer: tok)
        let bos = try XCTUnwrap(special.bos), eos = try XCTUnwrap(special.eos)
        var r = try run(["--base", base, "--data", data, "--limit", "3", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = r.stdout.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: [Int]] }
        XCTAssertEqual(rows.count, 3)
        let lines = try String(contentsOfFile: data, encoding: .utf8).split(separator: "\n")
        for (line, row) in zip(lines, rows) {
            let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
            let p = tok.encode("### Instruction:\n\(o["instruction"]!)\n\n### Response:\n")
            let a = tok.encode(o["output"]!)
            XCTAssertEqual(row?["ids"], [bos] + p + a + [eos])
            XCTAssertEqual(row?["labels"], [Int](repeating: -100, count: 1 + p.count) + a + [eos])
        }
        // --seq-len cuts; the human view marks the response tokens by their labels.
        r = try run(["--base", base, "--data", data, "--limit", "1", "--seq-len", "8", "--json"])
        let cut = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: [Int]])
        XCTAssertEqual(cut["ids"]?.count, 8)
        r = try run(["--base", base, "--data", data, "--limit", "2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("row 1: "), r.stdout)
        XCTAssertTrue(r.stdout.contains("\n\nrow 2: "), r.stdout)
        XCTAssertTrue(r.stdout.contains("<|begin_of_text|>(\(bos), -100)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("<|eot_id|>(\(eos), \(eos))"), r.stdout)
        XCTAssertFalse(r.stdout.contains("\u{1B}["), "no colour when stdout is not a terminal")
    }

    // MARK: - errors: one `error:` line, exit 1, nothing on stdout

    private func expectFailure(_ args: [String], _ parts: [String], status: Int32 = 1,
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try run(args)
        XCTAssertEqual(r.status, status, r.stderr, file: file, line: line)
        XCTAssertEqual(r.stdout, "", "no partial output", file: file, line: line)
        if status == 1 {
            XCTAssertEqual(r.errorLines.count, 1, r.stderr, file: file, line: line)
            XCTAssertEqual(r.stderrLines.count, 1, r.stderr, file: file, line: line)
        }
        for p in parts { XCTAssertTrue(r.stderr.contains(p), "\"\(r.stderr)\" lacks \"\(p)\"", file: file, line: line) }
    }

    func testErrors() throws {
        let dir = TempDir("ila-tokenize")
        let empty = dir.sub("no-tokenizer")
        try expectFailure(["--base", empty.path, "--text", "x"], ["error: \(empty.path)/tokenizer.json: no such file"])
        try expectFailure(["--base", dir.path("missing"), "--text", "x"], ["error: \(dir.path("missing")): no such folder"])

        // A bad line in --texts: nothing printed for the good lines before it.
        let texts = dir.path("bad.jsonl")
        try Data("\"fine\"\n\"also fine\"\n{\"not\": \"a string\"}\n".utf8).write(to: URL(fileURLWithPath: texts))
        let llama3 = fixtures.appendingPathComponent("llama3").path
        try expectFailure(["--base", llama3, "--texts", texts], ["error: \(texts):3: not a JSON string"])
        try Data("\"fine\"\n\n".utf8).write(to: URL(fileURLWithPath: texts))
        try expectFailure(["--base", llama3, "--texts", texts], ["\(texts):2: not a JSON string"])
        try Data("\"\\ud800\"\n".utf8).write(to: URL(fileURLWithPath: texts))
        try expectFailure(["--base", llama3, "--texts", texts], ["\(texts):1:", "unpaired surrogate"])
        try expectFailure(["--base", llama3, "--texts", dir.path("none.jsonl")], ["none.jsonl: no such file"])

        // Refused constructs, each named.
        func tokenizerDir(_ name: String, _ edit: (inout [String: Any]) -> Void) throws -> String {
            let src = fixtures.appendingPathComponent("llama3").appendingPathComponent("tokenizer.json")
            var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: src)) as? [String: Any])
            edit(&json)
            let d = dir.sub(name)
            try JSONSerialization.data(withJSONObject: json).write(to: d.appendingPathComponent("tokenizer.json"))
            return d.path
        }
        let unigram = try tokenizerDir("unigram") { $0["model"] = ["type": "Unigram", "vocab": [["a", 0.0]]] }
        try expectFailure(["--base", unigram, "--text", "x"], ["tokenizer.json: model type Unigram is not supported"])
        let lookbehind = try tokenizerDir("lookbehind") {
            $0["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": "(?<=x)y"], "behavior": "Isolated", "invert": false]
        }
        try expectFailure(["--base", lookbehind, "--text", "x"], ["tokenizer.json: Split pre_tokenizer regex", "lookbehind"])
        let bert = try tokenizerDir("bert") { $0["normalizer"] = ["type": "BertNormalizer"] }
        try expectFailure(["--base", bert, "--text", "x"], ["normalizer type BertNormalizer is not supported"])
        let dropout = try tokenizerDir("dropout") {
            var m = $0["model"] as? [String: Any] ?? [:]
            m["dropout"] = 0.1
            $0["model"] = m
        }
        try expectFailure(["--base", dropout, "--text", "x"], ["model.dropout 0.1 is not supported"])
        // --data errors name the row.
        let rows = dir.path("rows.jsonl")
        try Data("{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": 3, \"output\": \"b\"}\n".utf8)
            .write(to: URL(fileURLWithPath: rows))
        try expectFailure(["--base", llama3, "--data", rows, "--json"], ["\(rows):2:"])
    }

    func testUsageErrors() throws {
        let base = fixtures.appendingPathComponent("llama3").path
        try expectFailure(["--base", base], ["exactly one of --text, --texts and --data"], status: 2)
        try expectFailure(["--base", base, "--text", "a", "--texts", "b"], ["exactly one"], status: 2)
        try expectFailure(["--base", base, "--text", "a", "--limit", "2"], ["--limit needs --data"], status: 2)
        try expectFailure(["--base", base, "--data", "d", "--limit", "0"], ["--limit must be at least 1"], status: 2)
        try expectFailure(["--text", "a"], ["--base"], status: 2)
        let help = try run(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("Examples:"), help.stdout)
        XCTAssertTrue(help.stdout.contains("--texts"), help.stdout)
    }
}
