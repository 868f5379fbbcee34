import Foundation
import XCTest
import ILADiff
@testable import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking

/// Fixture paths, found relative to this file so a fresh clone tests without the test bed.
enum TokFixtures {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fixtures")
    static var tinyBase: String { root.appendingPathComponent("tiny/base-A").path }
    static var tinyTokenizer: String { root.appendingPathComponent("tiny/base-A/tokenizer.json").path }
    static var reference: String { root.appendingPathComponent("tiny/reference.json").path }
    static func evalData(_ dataset: String) -> String {
        root.appendingPathComponent("data/\(dataset).eval.jsonl").path
    }

    /// A fresh temporary directory, removed when the test ends.
    static func tempDir(_ test: XCTestCase) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ila-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    /// Writes `object` as JSON to `dir/name` and returns the path.
    @discardableResult
    static func writeJSON(_ object: Any, _ dir: URL, _ name: String = "tokenizer.json") throws -> String {
        let url = dir.appendingPathComponent(name)
        try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]).write(to: url)
        return url.path
    }
}

/// Builders of small tokenizer.json objects whose ids can be worked out by hand.
enum TinyTokenizers {
    /// GPT-2's byte → printable scalar map, written out independently of the implementation.
    static let byteChars: [String] = {
        var bs = Array(33...126) + Array(161...172) + Array(174...255)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) {
            bs.append(b)
            cs.append(256 + n)
            n += 1
        }
        var table = [String](repeating: "", count: 256)
        for (b, c) in zip(bs, cs) { table[b] = String(Character(Unicode.Scalar(UInt32(c))!)) }
        return table
    }()

    /// Byte-level BPE: byte b has id b; merges Ġ+t, h+e, Ġt+he, i+n → ids 256…259; "Ġxyz" = 260
    /// is in the vocabulary but no merge makes it.
    static func byteLevel(pairs: Bool, ignoreMerges: Bool = false, preTokenizer: Any? = nil,
                          added: [[String: Any]] = []) -> [String: Any] {
        var vocab: [String: Int] = [:]
        for b in 0..<256 { vocab[byteChars[b]] = b }
        let merges = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"]]
        for (i, m) in merges.enumerated() { vocab[m[0] + m[1]] = 256 + i }
        vocab["Ġxyz"] = 260
        return [
            "version": "1.0", "added_tokens": added, "normalizer": NSNull(),
            "pre_tokenizer": preTokenizer ?? ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": ignoreMerges, "vocab": vocab,
                      "merges": pairs ? merges : merges.map { $0.joined(separator: " ") } as [Any]],
        ]
    }

    /// Llama 2 style: `<unk>`=0 `<s>`=1 `</s>`=2, `<0x00>`…`<0xFF>` = 3…258, then
    /// ▁=259 h=260 e=261 l=262 o=263 w=264 r=265 d=266 and merge results ▁h=267 ll=268
    /// ▁he=269 ▁hell=270 ▁hello=271 ▁w=272 or=273 ▁wor=274.
    static func metaspace(style: String, byteFallback: Bool = true, fuseUnk: Bool = true) -> [String: Any] {
        var vocab: [String: Int] = ["<unk>": 0, "<s>": 1, "</s>": 2]
        for b in 0..<256 { vocab[String(format: "<0x%02X>", b)] = 3 + b }
        for (i, t) in ["▁", "h", "e", "l", "o", "w", "r", "d"].enumerated() { vocab[t] = 259 + i }
        let merges = ["▁ h", "l l", "▁h e", "▁he ll", "▁hell o", "▁ w", "o r", "▁w or"]
        for (i, m) in merges.enumerated() { vocab[m.replacingOccurrences(of: " ", with: "")] = 267 + i }
        let added: [[String: Any]] = [(0, "<unk>"), (1, "<s>"), (2, "</s>")].map {
            ["id": $0.0, "content": $0.1, "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true]
        }
        var json: [String: Any] = [
            "version": "1.0", "added_tokens": added,
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": "<unk>", "fuse_unk": fuseUnk,
                      "byte_fallback": byteFallback, "vocab": vocab, "merges": merges],
        ]
        switch style {
        case "normalizer":  // Llama 2 as converted by transformers
            json["normalizer"] = ["type": "Sequence", "normalizers": [
                ["type": "Prepend", "prepend": "▁"],
                ["type": "Replace", "pattern": ["String": " "], "content": "▁"]]]
            json["pre_tokenizer"] = NSNull()
        default:  // Metaspace pre-tokenizer with the given prepend scheme
            json["normalizer"] = NSNull()
            json["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁", "prepend_scheme": style, "split": false]
        }
        return json
    }
}

final class TokenizerTests: XCTestCase {
    private func load(_ json: [String: Any]) throws -> Tokenizer {
        try Tokenizer(path: TokFixtures.writeJSON(json, TokFixtures.tempDir(self)))
    }

    private func expectError(_ body: () throws -> Void, contains parts: [String],
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let e = error as? ILAError else { return XCTFail("not an ILAError: \(error)", file: file, line: line) }
            for p in parts {
                XCTAssertTrue(e.message.contains(p), "\"\(e.message)\" lacks \"\(p)\"", file: file, line: line)
            }
        }
    }

    // MARK: - the fixture tokenizer against the reference

    func testFixtureTokenizerMatchesReferencePromptAndResponse() throws {
        let tok = try Tokenizer(path: TokFixtures.tinyBase)
        XCTAssertEqual(tok.vocabSize, 512)
        XCTAssertEqual(tok.tokenID(for: "<s>"), 1)
        XCTAssertEqual(tok.tokenID(for: "</s>"), 2)
        XCTAssertNil(tok.tokenID(for: "no such token"))
        let ref = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: TokFixtures.reference))) as? [String: Any])
        let aligned = try XCTUnwrap(ref["aligned"] as? [String: [String: Any]])
        XCTAssertEqual(aligned.count, 4)
        for (name, entry) in aligned {
            let dataset = try XCTUnwrap(entry["dataset"] as? String)
            let lines = try String(contentsOfFile: TokFixtures.evalData(dataset), encoding: .utf8)
                .split(separator: "\n").prefix(3)
            let firstRows = try XCTUnwrap(entry["first_rows"] as? [[String: [Int]]])
            for (line, expected) in zip(lines, firstRows) {
                let row = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
                let prompt = "### Instruction:\n\(row["instruction"] ?? "")\n\n### Response:\n"
                let ids = [1] + tok.encode(prompt) + tok.encode(row["output"] ?? "") + [2]
                let want = try XCTUnwrap(expected["ids"])
                XCTAssertEqual(Array(ids.prefix(256)), want, "\(name)")
            }
        }
    }

    // MARK: - byte-level BPE

    func testByteLevelMergesByRankInBothMergeEncodings() throws {
        for pairs in [true, false] {
            let tok = try load(TinyTokenizers.byteLevel(pairs: pairs))
            // "the" → t+he; " in" → Ġ+in; " the" → Ġt+he → Ġthe.
            XCTAssertEqual(tok.encode("the in the"), [116, 257, 32, 259, 258])
            // Contractions split off; "é" is two bytes.
            XCTAssertEqual(tok.encode("it's"), [105, 116, 39, 115])
            XCTAssertEqual(tok.encode("é"), [0xC3, 0xA9])
            XCTAssertEqual(tok.encode(""), [])
            XCTAssertEqual(tok.vocabSize, 261)
            XCTAssertEqual(tok.token(for: 258), "Ġthe")
        }
    }

    func testIgnoreMergesTakesWholeWordFromVocabulary() throws {
        XCTAssertEqual(try load(TinyTokenizers.byteLevel(pairs: true, ignoreMerges: true)).encode(" xyz"), [260])
        XCTAssertEqual(try load(TinyTokenizers.byteLevel(pairs: true)).encode(" xyz"), [32, 120, 121, 122])
    }

    func testAddPrefixSpace() throws {
        let pre: [String: Any] = ["type": "ByteLevel", "add_prefix_space": true, "use_regex": true]
        let tok = try load(TinyTokenizers.byteLevel(pairs: true, preTokenizer: pre))
        XCTAssertEqual(tok.encode("the"), [258])
        XCTAssertEqual(tok.encode(" the"), [258])  // no second space
    }

    func testGPT2SplitPattern() throws {
        let text = Array("I'M here,  it'S 12345 ok!!\n\n  (x) \tdone  ".unicodeScalars)
        // From Python tokenizers' Split(Regex(<GPT-2 pattern>), "isolated").
        XCTAssertEqual(splitStrings(SplitRegex.gpt2, text),
                       ["I", "'", "M", " here", ",", " ", " it", "'", "S", " 12345", " ok", "!!", "\n\n ", " (",
                        "x", ")", " ", "\t", "done", "  "])
    }

    func testLlama3SplitPattern() throws {
        let re = try XCTUnwrap(SplitRegex(source: SplitRegex.llama3Source))
        let text = Array("I'M here,  it'S 12345 ok!!\n\n  (x) \tdone  ".unicodeScalars)
        // From Python tokenizers' Split(Regex(<Llama 3 pattern>), "isolated").
        XCTAssertEqual(splitStrings(re, text),
                       ["I", "'M", " here", ",", " ", " it", "'S", " ", "123", "45", " ok", "!!\n\n", " ", " (",
                        "x", ")", " ", "\tdone", "  "])
        XCTAssertEqual(splitStrings(re, Array("it'ſt a \n\n  b".unicodeScalars)),
                       ["it", "'ſ", "t", " a", " \n\n", " ", " b"])
        XCTAssertEqual(SplitRegex(source: SplitRegex.qwen2Source), .llama3(maxDigits: 1))
    }

    private func splitStrings(_ re: SplitRegex, _ s: [Unicode.Scalar]) -> [String] {
        var out: [String] = []
        var start = 0
        for end in re.matchEnds(s) {
            var v = String.UnicodeScalarView()
            v.append(contentsOf: s[start..<end])
            out.append(String(v))
            start = end
        }
        return out
    }

    func testLlama3SequencePreTokenizer() throws {
        let pre: [String: Any] = ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["Regex": SplitRegex.llama3Source], "behavior": "Isolated", "invert": false],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false]]]
        let tok = try load(TinyTokenizers.byteLevel(pairs: true, preTokenizer: pre))
        XCTAssertEqual(tok.encode("the in"), [116, 257, 32, 259])
        XCTAssertEqual(tok.encode("1234"), [49, 50, 51, 52])
    }

    // MARK: - added tokens

    func testAddedTokensAreCutOutFirst() throws {
        // The vocabulary has 261 entries, so new added tokens are numbered 261, 262, …
        let added: [[String: Any]] = [
            ["id": 261, "content": "<|x|>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false],
            ["id": 262, "content": "<|x|>y", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false],
            ["id": 263, "content": "[L]", "special": false, "normalized": false, "lstrip": true, "rstrip": false, "single_word": false],
            ["id": 264, "content": "[R]", "special": false, "normalized": false, "lstrip": false, "rstrip": true, "single_word": false],
            ["id": 265, "content": "xy", "special": false, "normalized": true, "lstrip": false, "rstrip": false, "single_word": true],
        ]
        let tok = try load(TinyTokenizers.byteLevel(pairs: true, added: added))
        XCTAssertEqual(tok.vocabSize, 266)
        XCTAssertEqual(tok.tokenID(for: "<|x|>"), 261)
        XCTAssertEqual(tok.encode("the<|x|>the"), [116, 257, 261, 116, 257])
        XCTAssertEqual(tok.encode("<|x|>y"), [262])  // longest match wins
        XCTAssertEqual(tok.encode("the  [L]the"), [116, 257, 263, 116, 257])  // lstrip eats the spaces
        XCTAssertEqual(tok.encode("[R]  the"), [264, 116, 257])  // rstrip too
        XCTAssertEqual(tok.encode(" xy"), [32, 265])  // a single word
        XCTAssertEqual(tok.encode("txy"), [116, 120, 121])  // inside a word: not the added token
    }

    func testAddedTokenIdsAreAssignedAsTokenizersDoes() throws {
        // `tokenizers` ignores the file's ids: a token already in the vocabulary takes its id,
        // a new one the next free number from the vocabulary size; a repeated content keeps its
        // first id (and takes the later flags); an empty content is skipped.
        let added: [[String: Any]] = [
            ["id": 900, "content": "<a>", "special": true, "normalized": false],
            ["id": 5, "content": "Ġt", "special": true, "normalized": false],
            ["id": 901, "content": "<b>", "special": true, "normalized": false],
            ["id": 902, "content": "<a>", "special": false, "normalized": false, "lstrip": true],
            ["id": 903, "content": "", "special": true, "normalized": false],
        ]
        let tok = try load(TinyTokenizers.byteLevel(pairs: true, added: added))
        XCTAssertEqual(tok.tokenID(for: "<a>"), 261)
        XCTAssertEqual(tok.tokenID(for: "Ġt"), 256)
        XCTAssertEqual(tok.tokenID(for: "<b>"), 262)
        XCTAssertEqual(tok.vocabSize, 263)
        XCTAssertEqual(tok.encode("x <a><b>"), [120, 261, 262])  // lstrip from the later entry
    }

    // MARK: - Metaspace / byte fallback

    func testLlama2NormalizerWithByteFallback() throws {
        let tok = try load(TinyTokenizers.metaspace(style: "normalizer"))
        // "▁hello▁world": ▁h, ll, ▁he, ▁hell, ▁hello, ▁w, or, ▁wor; l and d stay.
        XCTAssertEqual(tok.encode("hello world"), [271, 274, 262, 266])
        // é is not in the vocabulary: its UTF-8 bytes C3 A9 become <0xC3> <0xA9>.
        XCTAssertEqual(tok.encode("hé"), [267, 3 + 0xC3, 3 + 0xA9])
        // Text after an added token is normalized on its own, so it gets its own ▁.
        XCTAssertEqual(tok.encode("<s>hi"), [1, 267, 3 + 0x69])
        XCTAssertEqual(tok.encode(" "), [259, 259])
    }

    func testMetaspacePrependSchemes() throws {
        let first = try load(TinyTokenizers.metaspace(style: "first"))
        XCTAssertEqual(first.encode("hello world"), [271, 274, 262, 266])
        // Only text at the very start gets the ▁: after <s>, "hello" is h e ll o.
        XCTAssertEqual(first.encode("<s>hello"), [1, 260, 261, 268, 263])
        let always = try load(TinyTokenizers.metaspace(style: "always"))
        XCTAssertEqual(always.encode("<s>hello"), [1, 271])
        let never = try load(TinyTokenizers.metaspace(style: "never"))
        XCTAssertEqual(never.encode("hello"), [260, 261, 268, 263])
    }

    func testUnknownTokenFusedOrNot() throws {
        let fused = try load(TinyTokenizers.metaspace(style: "normalizer", byteFallback: false, fuseUnk: true))
        XCTAssertEqual(fused.encode("hxyz"), [267, 0])
        let single = try load(TinyTokenizers.metaspace(style: "normalizer", byteFallback: false, fuseUnk: false))
        XCTAssertEqual(single.encode("hxyz"), [267, 0, 0, 0])
    }

    func testLongWordIsNotQuadratic() throws {
        // Without a pre-tokenizer a whole text is one word; 200k scalars must still be quick.
        let tok = try load(TinyTokenizers.metaspace(style: "normalizer"))
        let text = String(repeating: "hello world ", count: 20_000)
        let start = Date()
        let ids = tok.encode(text)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        XCTAssertEqual(ids.count, 20_000 * 4 + 1)  // each "▁hello▁world" is 4 ids, plus the last ▁
    }

    func testCanonicallyEquivalentTokensStayDistinct() throws {
        // "é" as U+00E9 and as e + U+0301 are equal Swift Strings but different tokens.
        let text = #"""
        {"added_tokens": [], "normalizer": null, "pre_tokenizer": null,
         "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": false, "byte_fallback": false,
                   "vocab": {"<unk>": 0, "\u00e9": 1, "e": 2, "\u0301": 3, "e\u0301": 4},
                   "merges": [["e", "\u0301"]]}}
        """#
        let url = try TokFixtures.tempDir(self).appendingPathComponent("tokenizer.json")
        try Data(text.utf8).write(to: url)
        let tok = try Tokenizer(path: url.path)
        for _ in 0..<2 {  // the second round comes from the word cache
            XCTAssertEqual(tok.encode("\u{E9}"), [1])
            XCTAssertEqual(tok.encode("e\u{301}"), [4])
        }
        XCTAssertEqual(tok.tokenID(for: "\u{E9}"), 1)
        XCTAssertEqual(tok.tokenID(for: "e\u{301}"), 4)
        XCTAssertEqual(tok.token(for: 4)?.unicodeScalars.count, 2)
    }

    func testJSONParser() throws {
        let dir = try TokFixtures.tempDir(self)
        func parse(_ s: String) throws -> JSONValue {
            let url = dir.appendingPathComponent("x.json")
            try Data(s.utf8).write(to: url)
            return try JSONValue.read(url.path)
        }
        let v = try parse(#"{"a": [1, -2.5, true, false, null, -2.5e1], "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude42", "s": "dup"}"#)
        XCTAssertEqual(v["a"]?.array?.count, 6)
        XCTAssertEqual(v["a"]?.array?[5].int, -25)
        XCTAssertEqual(v["a"]?.array?[0].int, 1)
        XCTAssertNil(v["a"]?.array?[1].int)
        XCTAssertEqual(v["a"]?.array?[2].bool, true)
        XCTAssertTrue(v["a"]?.array?[4].isNull ?? false)
        XCTAssertEqual(v["s"]?.string, "q\"\\/\u{8}\u{C}\n\r\té🙂")
        XCTAssertNil(v["missing"])
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "01", "\"\\ud800\"", "\"\\x\"", "[1] 2", "\"a\nb\"", "nul", "-", "1."] {
            XCTAssertThrowsError(try parse(bad), bad) { error in
                XCTAssertTrue((error as? ILAError)?.message.contains("not valid JSON") ?? false, "\(bad): \(error)")
            }
        }
        let invalidUTF8 = dir.appendingPathComponent("y.json")
        try Data([0x22, 0xFF, 0x22]).write(to: invalidUTF8)
        XCTAssertThrowsError(try JSONValue.read(invalidUTF8.path))
    }

    func testConcurrentEncodingAgreesWithSerial() throws {
        let tok = try Tokenizer(path: TokFixtures.tinyBase)
        let lines = try String(contentsOfFile: TokFixtures.evalData("pyapi"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        let serial = try Tokenizer(path: TokFixtures.tinyBase)
        let want = lines.map(serial.encode)
        let results = UnsafeMutableBufferPointer<[Int]>.allocate(capacity: lines.count)
        results.initialize(repeating: [])
        defer { results.deallocate() }
        // Every thread writes only its own slots.
        nonisolated(unsafe) let slots = results
        DispatchQueue.concurrentPerform(iterations: lines.count) { i in slots[i] = tok.encode(lines[i]) }
        XCTAssertEqual(Array(results), want)
    }

    // MARK: - BOS / EOS

    func testSpecialTokensFromFixture() throws {
        let tok = try Tokenizer(path: TokFixtures.tinyBase)
        XCTAssertEqual(try SpecialTokens.resolve(directory: TokFixtures.tinyBase, tokenizer: tok), SpecialTokens(bos: 1, eos: 2))
    }

    func testSpecialTokensConfigWinsAndFormats() throws {
        let dir = try TokFixtures.tempDir(self)
        try TokFixtures.writeJSON(TinyTokenizers.metaspace(style: "first"), dir)
        let tok = try Tokenizer(path: dir.path)
        // tokenizer_config.json only, both spellings.
        try TokFixtures.writeJSON(["bos_token": "<s>", "eos_token": ["content": "</s>", "special": true]], dir, "tokenizer_config.json")
        XCTAssertEqual(try SpecialTokens.resolve(directory: dir.path, tokenizer: tok), SpecialTokens(bos: 1, eos: 2))
        // config.json wins; a list counts by its first entry.
        try TokFixtures.writeJSON(["bos_token_id": 259, "eos_token_id": [260, 2]], dir, "config.json")
        XCTAssertEqual(try SpecialTokens.resolve(directory: dir.path, tokenizer: tok), SpecialTokens(bos: 259, eos: 260))
        // add_bos_token false drops BOS.
        try TokFixtures.writeJSON(["bos_token": "<s>", "add_bos_token": false], dir, "tokenizer_config.json")
        XCTAssertEqual(try SpecialTokens.resolve(directory: dir.path, tokenizer: tok), SpecialTokens(bos: nil, eos: 260))
        // Nothing known.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("config.json"))
        try FileManager.default.removeItem(at: dir.appendingPathComponent("tokenizer_config.json"))
        XCTAssertEqual(try SpecialTokens.resolve(directory: dir.path, tokenizer: tok), SpecialTokens(bos: nil, eos: nil))
        // Errors: an id outside the vocabulary, an unknown token string.
        try TokFixtures.writeJSON(["eos_token_id": 99999], dir, "config.json")
        expectError({ _ = try SpecialTokens.resolve(directory: dir.path, tokenizer: tok) }, contains: ["config.json", "eos_token_id", "99999"])
        try FileManager.default.removeItem(at: dir.appendingPathComponent("config.json"))
        try TokFixtures.writeJSON(["bos_token": "<nope>"], dir, "tokenizer_config.json")
        expectError({ _ = try SpecialTokens.resolve(directory: dir.path, tokenizer: tok) }, contains: ["tokenizer_config.json", "<nope>"])
    }

    // MARK: - errors

    func testMissingFileAndBadJSON() throws {
        let dir = try TokFixtures.tempDir(self)
        expectError({ _ = try Tokenizer(path: dir.appendingPathComponent("none.json").path) }, contains: ["none.json", "no such file"])
        expectError({ _ = try Tokenizer(path: dir.path) }, contains: ["tokenizer.json", "no such file"])
        let bad = dir.appendingPathComponent("tokenizer.json")
        try Data("{\"model\": ".utf8).write(to: bad)
        expectError({ _ = try Tokenizer(path: bad.path) }, contains: ["tokenizer.json", "not valid JSON"])
        try Data("{}".utf8).write(to: bad)
        expectError({ _ = try Tokenizer(path: bad.path) }, contains: ["tokenizer.json", "model"])
    }

    func testUnsupportedModelTypes() throws {
        for type in ["Unigram", "WordPiece", "WordLevel"] {
            var json = TinyTokenizers.byteLevel(pairs: true)
            json["model"] = ["type": type, "vocab": [:] as [String: Any]]
            expectError({ _ = try load(json) }, contains: ["tokenizer.json", type, "not supported"])
        }
    }

    func testBadMergesAndModelFields() throws {
        func withModel(_ edit: (inout [String: Any]) -> Void) -> [String: Any] {
            var json = TinyTokenizers.byteLevel(pairs: true)
            var model = json["model"] as? [String: Any] ?? [:]
            edit(&model)
            json["model"] = model
            return json
        }
        expectError({ _ = try load(withModel { $0["merges"] = [["Ġ", "zz"]] }) }, contains: ["merge 1", "\"zz\"", "not in the vocabulary"])
        expectError({ _ = try load(withModel { $0["merges"] = ["Ġ t", "q qq"] }) }, contains: ["merge 2", "\"qq\""])
        expectError({ _ = try load(withModel { $0["merges"] = ["nospace"] }) }, contains: ["merge 1", "separated by a space"])
        expectError({ _ = try load(withModel { $0["merges"] = [["a", "b"]] }) }, contains: ["merge 1", "\"ab\"", "not in the vocabulary"])
        expectError({ _ = try load(withModel { $0["merges"] = [42] }) }, contains: ["merge 1"])
        expectError({ _ = try load(withModel { $0["unk_token"] = "<unk>" }) }, contains: ["unk_token", "<unk>"])
        expectError({ _ = try load(withModel { $0["vocab"] = ["a": "x"] }) }, contains: ["vocab", "\"a\""])
        expectError({ _ = try load(withModel { $0["vocab"] = [1, 2] }) }, contains: ["model.vocab"])
    }

    func testUnsupportedPipelineParts() throws {
        var json = TinyTokenizers.byteLevel(pairs: true, preTokenizer: [
            "type": "Split", "pattern": ["Regex": "(?<=a)\\w+"], "behavior": "Isolated", "invert": false])
        expectError({ _ = try load(json) }, contains: ["tokenizer.json", "regex", "(?<=a)\\w+", "not supported", "lookbehind"])
        json = TinyTokenizers.byteLevel(pairs: true, preTokenizer: ["type": "BertPreTokenizer"])
        expectError({ _ = try load(json) }, contains: ["BertPreTokenizer", "not supported"])
        json = TinyTokenizers.byteLevel(pairs: true)
        json["normalizer"] = ["type": "BertNormalizer"]
        expectError({ _ = try load(json) }, contains: ["BertNormalizer", "not supported"])
        json = TinyTokenizers.byteLevel(pairs: true)
        json["added_tokens"] = [["content": "x"]]
        expectError({ _ = try load(json) }, contains: ["added_tokens[0]"])
    }

    // MARK: - pipeline details checked against Hugging Face tokenizers

    /// Metaspace with prepend_scheme "first" prepends to the piece whose ORIGINAL start is 0:
    /// after a Strip normalizer removed leading spaces, the first piece starts at offset 2 and
    /// gets no ▁ (as `tokenizers` gives).
    func testMetaspaceFirstLooksAtTheOriginalStart() throws {
        func json(normalizer: Any) -> [String: Any] {
            ["version": "1.0", "normalizer": normalizer,
             "added_tokens": [["id": 5, "content": "<a>", "special": false, "normalized": false]],
             "pre_tokenizer": ["type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true],
             "model": ["type": "BPE", "unk_token": "<unk>", "vocab": ["<unk>": 0, "▁": 1, "h": 2, "i": 3, "▁h": 4],
                       "merges": [["▁", "h"]]]]
        }
        let plain = try load(json(normalizer: NSNull()))
        XCTAssertEqual(plain.encode("hi"), [4, 3])
        XCTAssertEqual(plain.encode("  hi"), [1, 4, 3])
        XCTAssertEqual(plain.encode(" hi hi"), [4, 3, 4, 3])
        let strip = try load(json(normalizer: ["type": "Strip", "strip_left": true, "strip_right": true]))
        XCTAssertEqual(strip.encode("hi"), [4, 3])
        XCTAssertEqual(strip.encode("  hi"), [2, 3])
        XCTAssertEqual(strip.encode(" hi hi"), [2, 3, 4, 3])
        XCTAssertEqual(strip.encode("<a>hi"), [5, 2, 3])
        XCTAssertEqual(strip.encode("  hi<a> hi"), [2, 3, 5, 2, 3])
    }

    func testMergesAsTokenizersReadsThem() throws {
        func withMerges(_ merges: [Any], prefix: String? = nil) -> [String: Any] {
            var json = TinyTokenizers.byteLevel(pairs: true)
            var model = json["model"] as? [String: Any] ?? [:]
            model["merges"] = merges
            if let prefix { model["continuing_subword_prefix"] = prefix }
            json["model"] = model
            return json
        }
        // A "#version" line is skipped; the ranks count from the next line.
        let versioned = try load(withMerges(["#version: 0.2", "Ġ t", "h e", "Ġt he", "i n"]))
        XCTAssertEqual(versioned.encode("the in the"), [116, 257, 32, 259, 258])
        expectError({ _ = try load(withMerges(["Ġ t", "h e x"])) }, contains: ["merge 2", "not two tokens"])
        expectError({ _ = try load(withMerges([["Ġ", "t"], "h e"])) }, contains: ["merge 2"])
        expectError({ _ = try load(withMerges(["Ġ t", ["h", "e"]])) }, contains: ["merge 2"])
        var noMerges = TinyTokenizers.byteLevel(pairs: true)
        var model = noMerges["model"] as? [String: Any] ?? [:]
        model.removeValue(forKey: "merges")
        noMerges["model"] = model
        expectError({ _ = try load(noMerges) }, contains: ["model.merges"])
    }

    func testDropoutMustBeNullOrZero() throws {
        for (value, ok) in [(NSNull() as Any, true), (0 as Any, true), (0.1 as Any, false), (1 as Any, false)] {
            var json = TinyTokenizers.byteLevel(pairs: true)
            var model = json["model"] as? [String: Any] ?? [:]
            model["dropout"] = value
            json["model"] = model
            if ok {
                XCTAssertEqual(try load(json).encode("the"), [116, 257])
            } else {
                expectError({ _ = try load(json) }, contains: ["model.dropout", "not supported"])
            }
        }
    }

    func testMoreRefusals() throws {
        var json = TinyTokenizers.byteLevel(pairs: true)
        json["normalizer"] = ["type": "Precompiled", "precompiled_charsmap": "AAAA"]
        expectError({ _ = try load(json) }, contains: ["normalizer type Precompiled is not supported"])
        for type in ["UnicodeScripts", "BertPreTokenizer"] {
            json = TinyTokenizers.byteLevel(pairs: true, preTokenizer: ["type": type])
            expectError({ _ = try load(json) }, contains: ["pre_tokenizer type \(type) is not supported"])
        }
        json = TinyTokenizers.byteLevel(pairs: true, preTokenizer: [
            "type": "Metaspace", "replacement": "▁", "add_prefix_space": false, "prepend_scheme": "always"])
        expectError({ _ = try load(json) }, contains: ["add_prefix_space false contradicts"])
        json = TinyTokenizers.byteLevel(pairs: true, preTokenizer: [
            "type": "Split", "pattern": ["Regex": "\\p{Greek}"], "behavior": "Isolated", "invert": false])
        expectError({ _ = try load(json) }, contains: ["Split pre_tokenizer regex", "\\p{Greek}", "not supported"])
        json = TinyTokenizers.byteLevel(pairs: true)
        json["normalizer"] = ["type": "Replace", "pattern": ["Regex": "a(?<=b)"], "content": "x"]
        expectError({ _ = try load(json) }, contains: ["Replace normalizer regex", "lookbehind"])
        json = TinyTokenizers.byteLevel(pairs: true)
        json["version"] = "2.0"
        expectError({ _ = try load(json) }, contains: ["version 2.0"])
    }

    func testNormalizersAndPreTokenizersOnHandWorkedText() throws {
        // Byte-level vocabulary: every byte is its own id, so ids spell out the normalized text.
        func spelled(_ normalizer: Any, pre: Any? = nil, _ text: String) throws -> String {
            var json = TinyTokenizers.byteLevel(pairs: true, preTokenizer: pre ?? [
                "type": "ByteLevel", "add_prefix_space": false, "use_regex": false])
            json["normalizer"] = normalizer
            json["model"] = ["type": "BPE", "vocab": (json["model"] as? [String: Any])?["vocab"] ?? [:], "merges": [] as [Any]]
            let ids = try load(json).encode(text)
            return String(decoding: ids.map { UInt8($0) }, as: UTF8.self)
        }
        XCTAssertEqual(try spelled(["type": "NFKC"], "ﬁ ①"), "fi 1")
        XCTAssertEqual(try spelled(["type": "NFD"], "é"), "e\u{301}")
        XCTAssertEqual(try spelled(["type": "NFC"], "e\u{301}"), "é")
        XCTAssertEqual(try spelled(["type": "Lowercase"], "ÀB İ"), "àb i\u{307}")
        XCTAssertEqual(try spelled(["type": "Strip", "strip_left": true, "strip_right": false], " \u{A0}x "), "x ")
        XCTAssertEqual(try spelled(["type": "Sequence", "normalizers": [["type": "NFD"], ["type": "StripAccents"]]], "café"), "cafe")
        XCTAssertEqual(try spelled(["type": "Replace", "pattern": ["Regex": " {2,}"], "content": " "], "a   b  c d"), "a b c d")
        XCTAssertEqual(try spelled(["type": "Prepend", "prepend": "_"], "x"), "_x")
        XCTAssertEqual(try spelled(["type": "Nmt"], "a\u{1}b\tc"), "ab c")
    }
}
