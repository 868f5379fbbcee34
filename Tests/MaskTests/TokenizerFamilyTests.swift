import Foundation
import XCTest
import ILADiff
import ILATestSupport
@testable import ILAMask

/// The tokenizer.json layouts of today's model families, each a small BPE trained with Hugging
/// Face `tokenizers` on the test-bed text (bench/make_tokenizer_fixtures.py), against the ids
/// `tokenizers` gave for test-bed rows and adversarial strings (fixtures/tokenizers/).
final class TokenizerFamilyTests: XCTestCase {
    static let root = RepoPaths.fixtures.appendingPathComponent("tokenizers")

    /// The shared strings, read with the exact-scalar JSON reader (JSONSerialization would be
    /// fine too, but the reader is what tokenizer.json goes through).
    static let strings: [String] = {
        guard let json = try? JSONValue.read(root.appendingPathComponent("strings.json").path),
              let list = json["strings"]?.array else { return [] }
        return list.compactMap(\.string)
    }()

    static let families = ["gpt2", "llama3", "qwen2", "qwen35", "tekken", "o200k", "llama2", "llama2-metaspace",
                           "mistral", "phi3", "gemma", "gemma-split", "clip", "wordpiece-like", "nfkc-metaspace",
                           "behaviours"]

    /// Encodes every shared string with `family`'s tokenizer and compares with the expected ids.
    private func check(_ family: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = Self.root.appendingPathComponent(family)
        let tok = try Tokenizer(path: dir.path)
        let expected = try XCTUnwrap(JSONValue.read(dir.appendingPathComponent("expected.json").path)["ids"]?.array,
                                     file: file, line: line)
        let strings = Self.strings
        XCTAssertGreaterThan(strings.count, 100, file: file, line: line)
        XCTAssertEqual(expected.count, strings.count, "\(family): expected.json and strings.json disagree", file: file, line: line)
        var mismatches = 0
        for (s, e) in zip(strings, expected) {
            let want = (e.array ?? []).compactMap(\.int)
            let got = tok.encode(s)
            if got != want {
                mismatches += 1
                if mismatches <= 3 {
                    XCTFail("\(family): \(s.debugDescription)\n  want \(want)\n  got  \(got)", file: file, line: line)
                }
            }
        }
        XCTAssertEqual(mismatches, 0, "\(family): \(mismatches) of \(strings.count) strings differ from tokenizers", file: file, line: line)
    }

    func testEveryFixtureFolderIsCovered() throws {
        let dirs = try FileManager.default.contentsOfDirectory(atPath: Self.root.path)
            .filter { (try? Self.root.appendingPathComponent($0).resourceValues(forKeys: [.isDirectoryKey]).isDirectory) == true }
        XCTAssertEqual(Set(dirs), Set(Self.families))
    }

    func testGPT2() throws { try check("gpt2") }
    func testLlama3() throws { try check("llama3") }
    func testQwen2() throws { try check("qwen2") }
    func testQwen35() throws { try check("qwen35") }
    func testMistralTekken() throws { try check("tekken") }
    func testO200kSplit() throws { try check("o200k") }
    func testLlama2Legacy() throws { try check("llama2") }
    func testLlama2Metaspace() throws { try check("llama2-metaspace") }
    func testMistral() throws { try check("mistral") }
    func testPhi3() throws { try check("phi3") }
    func testGemma() throws { try check("gemma") }
    func testGemmaSplit() throws { try check("gemma-split") }
    func testCLIPStyle() throws { try check("clip") }
    func testWordPieceLikeNormalizers() throws { try check("wordpiece-like") }
    func testNFKCMetaspace() throws { try check("nfkc-metaspace") }
    func testSplitBehaviours() throws { try check("behaviours") }

    /// The layouts really are what the fixtures claim (so a regenerated fixture cannot drift
    /// into testing something else).
    func testFixtureLayouts() throws {
        func json(_ family: String) throws -> JSONValue {
            try JSONValue.read(Self.root.appendingPathComponent(family).appendingPathComponent("tokenizer.json").path)
        }
        let l3 = try json("llama3")
        XCTAssertEqual(l3["model"]?["ignore_merges"]?.bool, true)
        XCTAssertEqual(l3["pre_tokenizer"]?["pretokenizers"]?.array?.first?["pattern"]?["Regex"]?.string, SplitRegex.llama3Source)
        XCTAssertEqual(try json("qwen2")["normalizer"]?["type"]?.string, "NFC")
        XCTAssertEqual(try json("gpt2")["model"]?["merges"]?.array?.first?.string?.contains(" "), true)
        let gemma = try json("gemma")
        XCTAssertEqual(gemma["normalizer"]?["type"]?.string, "Replace")
        XCTAssertTrue(gemma["pre_tokenizer"]?.isNull ?? true)
        XCTAssertEqual(gemma["model"]?["byte_fallback"]?.bool, true)
        let llama2 = try json("llama2")
        XCTAssertEqual(llama2["normalizer"]?["normalizers"]?.array?.map { $0["type"]?.string ?? "" }, ["Prepend", "Replace"])
        XCTAssertEqual(try json("llama2-metaspace")["pre_tokenizer"]?["prepend_scheme"]?.string, "first")
        let phi3 = try json("phi3")
        XCTAssertTrue(phi3["added_tokens"]?.array?.contains { $0["content"]?.string == "<|assistant|>" && $0["rstrip"]?.bool == true } ?? false)
        XCTAssertEqual(try json("clip")["model"]?["end_of_word_suffix"]?.string, "</w>")
        XCTAssertEqual(try json("wordpiece-like")["model"]?["continuing_subword_prefix"]?.string, "##")
    }

    func testSpecialTokensOfFamilies() throws {
        for (family, bos, eos) in [("llama3", "<|begin_of_text|>", "<|eot_id|>"), ("gemma", "<bos>", "<eos>"),
                                   ("llama2", "<s>", "</s>"), ("phi3", "<s>", "<|endoftext|>")] {
            let dir = Self.root.appendingPathComponent(family).path
            let tok = try Tokenizer(path: dir)
            let special = try SpecialTokens.resolve(directory: dir, tokenizer: tok)
            XCTAssertEqual(special, SpecialTokens(bos: tok.tokenID(for: bos), eos: tok.tokenID(for: eos)), family)
            XCTAssertNotNil(special.bos, family)
        }
    }
}
