import Foundation
import XCTest
import ILADiff
@testable import ILAMask
import ILAModel
@testable import ILAEngine
import ILARanking

final class InstructionDataTests: XCTestCase {
    private var tok: Tokenizer!
    private let special = SpecialTokens(bos: 1, eos: 2)

    override func setUpWithError() throws {
        tok = try Tokenizer(path: TokFixtures.tinyBase)
    }

    /// Writes `lines` as a JSONL file in a fresh temporary directory.
    private func jsonl(_ lines: [String], name: String = "train.jsonl") throws -> String {
        let url = try TokFixtures.tempDir(self).appendingPathComponent(name)
        try Data(lines.joined(separator: "\n").utf8).write(to: url)
        return url.path
    }

    private func rows(_ lines: [String], template: PromptTemplate = .alpaca, seqLen: Int = 256, limit: Int? = nil,
                      special: SpecialTokens? = nil, tokenizer: Tokenizer? = nil) throws -> [TokenizedRow] {
        try loadInstructionRows(path: jsonl(lines), template: template, tokenizer: tokenizer ?? tok,
                                special: special ?? self.special, seqLen: seqLen, limit: limit)
    }

    /// The row the contract expects for a prompt and response text.
    private func expected(_ prompt: String, _ response: String, special: SpecialTokens? = nil,
                          tokenizer: Tokenizer? = nil, seqLen: Int = 256) -> TokenizedRow {
        let t = tokenizer ?? tok!
        return TokenizedRow(promptIDs: t.encode(prompt), responseIDs: t.encode(response),
                            special: special ?? self.special, seqLen: seqLen)
    }

    private func expectError(_ body: () throws -> Void, _ message: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let e = error as? ILAError else { return XCTFail("not an ILAError: \(error)", file: file, line: line) }
            XCTAssertTrue(e.message.hasSuffix(message), "\"\(e.message)\" does not end in \"\(message)\"", file: file, line: line)
        }
    }

    // MARK: - the reference rows

    func testFirstRowsOfEveryAlignedReferenceEntry() throws {
        let ref = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: TokFixtures.reference))) as? [String: Any])
        let seqLen = try XCTUnwrap(ref["seq_len"] as? Int)
        XCTAssertEqual(seqLen, 256)
        let special = try SpecialTokens.resolve(directory: TokFixtures.tinyBase, tokenizer: tok)
        XCTAssertEqual(special, SpecialTokens(bos: ref["bos_id"] as? Int, eos: ref["eos_id"] as? Int))
        let aligned = try XCTUnwrap(ref["aligned"] as? [String: [String: Any]])
        XCTAssertEqual(Set(aligned.keys), ["lora-define-100", "lora-pyapi", "lora-whatis", "full-pyapi"])
        for (name, entry) in aligned.sorted(by: { $0.key < $1.key }) {
            let dataset = try XCTUnwrap(entry["dataset"] as? String)
            let want = try XCTUnwrap(entry["first_rows"] as? [[String: [Int]]])
            XCTAssertEqual(want.count, 3)
            let got = try loadInstructionRows(path: TokFixtures.evalData(dataset), template: .alpaca, tokenizer: tok,
                                              special: special, seqLen: seqLen, limit: 3)
            XCTAssertEqual(got.count, 3, name)
            for (g, w) in zip(got, want) {
                XCTAssertEqual(g.ids, w["ids"], "\(name) ids")
                XCTAssertEqual(g.labels, w["labels"], "\(name) labels")
            }
        }
    }

    // MARK: - row shapes and the alpaca template

    func testAlpacaRowsWithAndWithoutInput() throws {
        let got = try rows([
            #"{"instruction": "Define it.", "output": "A word."}"#,
            #"{"instruction": "Define it.", "input": "fold", "output": "A word."}"#,
            #"{"instruction": "Define it.", "input": "", "output": "A word."}"#,
            #"{"instruction": "Define it.", "input": null, "output": "A word."}"#,
        ])
        let plain = expected("### Instruction:\nDefine it.\n\n### Response:\n", "A word.")
        XCTAssertEqual(got, [plain, expected("### Instruction:\nDefine it.\n\n### Input:\nfold\n\n### Response:\n", "A word."), plain, plain])
        // Labels: -100 over BOS and prompt, then the response and EOS.
        let promptLength = tok.encode("### Instruction:\nDefine it.\n\n### Response:\n").count
        XCTAssertEqual(Array(got[0].labels.prefix(1 + promptLength)), Array(repeating: -100, count: 1 + promptLength))
        XCTAssertEqual(Array(got[0].labels.dropFirst(1 + promptLength)), tok.encode("A word.") + [2])
        XCTAssertEqual(got[0].ids.first, 1)
        XCTAssertEqual(got[0].ids.last, 2)
    }

    func testPromptResponseAndMessagesRowsUnderAlpaca() throws {
        let got = try rows([
            #"{"prompt": "Say hi.", "response": "Hi."}"#,
            #"{"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]}"#,
            #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A?"}, {"role": "assistant", "content": "B."}, {"role": "user", "content": "C?"}, {"role": "assistant", "content": "D."}, {"role": "user", "content": "ignored"}]}"#,
        ])
        let hi = expected("### Instruction:\nSay hi.\n\n### Response:\n", "Hi.")
        XCTAssertEqual(got[0], hi)
        XCTAssertEqual(got[1], hi)
        XCTAssertEqual(got[2], expected("Be brief.\n\n### Instruction:\nA?\n\n### Response:\nB.\n\n### Instruction:\nC?\n\n### Response:\n", "D."))
    }

    // MARK: - chat templates

    private let chat = Conversation(system: "Be brief.",
                                    turns: [.init(role: "user", content: "A?"), .init(role: "assistant", content: "B."),
                                            .init(role: "user", content: "C?")],
                                    response: "D.")

    private func render(_ t: PromptTemplate, _ c: Conversation? = nil, special: SpecialTokens? = nil) -> (String, String) {
        let r = TemplateRenderer(template: t, tokenizer: tok, special: special ?? self.special).render(c ?? chat)
        return (r.prompt, r.response)
    }

    func testChatTemplatesRenderExactly() {
        XCTAssertTrue(render(.chatml) == (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nA?<|im_end|>\n<|im_start|>assistant\nB.<|im_end|>\n"
                + "<|im_start|>user\nC?<|im_end|>\n<|im_start|>assistant\n", "D.<|im_end|>"))
        XCTAssertTrue(render(.llama3) == (
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nA?<|eot_id|>"
                + "<|start_header_id|>assistant<|end_header_id|>\n\nB.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nC?<|eot_id|>"
                + "<|start_header_id|>assistant<|end_header_id|>\n\n", "D.<|eot_id|>"))
        XCTAssertTrue(render(.llama2) == ("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nA? [/INST] B. </s><s>[INST] C? [/INST]", "D."))
        XCTAssertTrue(render(.mistral) == ("[INST] Be brief.\n\nA? [/INST] B.</s>[INST] C? [/INST]", "D."))
        XCTAssertTrue(render(.alpaca) == ("Be brief.\n\n### Instruction:\nA?\n\n### Response:\nB.\n\n### Instruction:\nC?\n\n### Response:\n", "D."))
        // No system message, one turn.
        let single = Conversation(system: nil, turns: [.init(role: "user", content: "Q")], response: "R")
        XCTAssertTrue(render(.chatml, single) == ("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n", "R<|im_end|>"))
        XCTAssertTrue(render(.llama2, single) == ("[INST] Q [/INST]", "R"))
        XCTAssertTrue(render(.mistral, single) == ("[INST] Q [/INST]", "R"))
        // Alpaca input joins the instruction after a blank line in chat templates.
        let alpaca = Conversation(system: nil, turns: [.init(role: "user", content: "Q", input: "I")], response: "R")
        XCTAssertTrue(render(.mistral, alpaca) == ("[INST] Q\n\nI [/INST]", "R"))
        XCTAssertEqual(PromptTemplate(rawValue: "chatml"), .chatml)
        XCTAssertEqual(PromptTemplate.allCases.map(\.rawValue), ["alpaca", "chatml", "llama2", "llama3", "mistral"])
    }

    /// The fixture tokenizer plus `<|im_start|>` = 512 and `<|im_end|>` = 513 as added tokens.
    private func chatMLTokenizer() throws -> Tokenizer {
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: TokFixtures.tinyTokenizer))) as? [String: Any])
        var added = try XCTUnwrap(json["added_tokens"] as? [[String: Any]])
        for (id, content) in [(512, "<|im_start|>"), (513, "<|im_end|>")] {
            added.append(["id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": true])
        }
        json["added_tokens"] = added
        return try Tokenizer(path: TokFixtures.writeJSON(json, TokFixtures.tempDir(self)))
    }

    func testChatMLRowEndsWithTurnEndThenEOSUnlessTheyAreTheSame() throws {
        let chatTok = try chatMLTokenizer()
        let line = #"{"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]}"#
        let row = try rows([line], template: .chatml, tokenizer: chatTok)[0]
        let prompt = chatTok.encode("<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(prompt.first, 512)
        XCTAssertEqual(row.ids, [1] + prompt + chatTok.encode("Hi.") + [513, 2])
        XCTAssertEqual(row.labels, Array(repeating: -100, count: 1 + prompt.count) + chatTok.encode("Hi.") + [513, 2])
        // With <|im_end|> as EOS it appears once.
        let imEnd = SpecialTokens(bos: nil, eos: 513)
        let row2 = try rows([line], template: .chatml, special: imEnd, tokenizer: chatTok)[0]
        XCTAssertEqual(row2.ids, prompt + chatTok.encode("Hi.") + [513])
        XCTAssertEqual(row2.labels, Array(repeating: -100, count: prompt.count) + chatTok.encode("Hi.") + [513])
    }

    func testEveryTemplateTokenizesPromptAndResponseSeparately() throws {
        let line = #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A?"}, {"role": "assistant", "content": "B."}, {"role": "user", "content": "C?"}, {"role": "assistant", "content": "D."}]}"#
        for t in PromptTemplate.allCases {
            let (p, r) = render(t)
            XCTAssertEqual(try rows([line], template: t)[0], expected(p, r), t.rawValue)
        }
    }

    // MARK: - BOS/EOS and truncation

    func testWithoutBOSOrEOS() throws {
        let line = #"{"instruction": "Q", "output": "R"}"#
        let none = SpecialTokens(bos: nil, eos: nil)
        let row = try rows([line], special: none)[0]
        let p = tok.encode("### Instruction:\nQ\n\n### Response:\n"), r = tok.encode("R")
        XCTAssertEqual(row.ids, p + r)
        XCTAssertEqual(row.labels, Array(repeating: -100, count: p.count) + r)
    }

    func testTruncationToSeqLen() throws {
        let line = #"{"instruction": "Define the word \"fold\" in a long and careful way.", "output": "To fold is to bend."}"#
        let full = try rows([line])[0]
        XCTAssertGreaterThan(full.ids.count, 20)
        for n in [1, 5, 20, full.ids.count - 1, full.ids.count, full.ids.count + 10] {
            let cut = try rows([line], seqLen: n)[0]
            XCTAssertEqual(cut.ids, Array(full.ids.prefix(n)))
            XCTAssertEqual(cut.labels, Array(full.labels.prefix(n)))
        }
        // Cut inside the prompt: no loss token left, and the row is still kept.
        XCTAssertEqual(try rows([line], seqLen: 5)[0].lossTokens, 0)
        XCTAssertEqual(full.lossTokens, tok.encode("To fold is to bend.").count + 1)
    }

    // MARK: - pre-tokenized rows

    func testPreTokenizedRows() throws {
        let got = try rows([#"{"input_ids": [1, 5, 6, 7, 2], "labels": [-100, -100, 6, 7, 2]}"#,
                            #"{"input_ids": [1, 5, 6, 7, 2], "labels": [-100, -100, 6, 7, 2]}"#], seqLen: 3)
        XCTAssertEqual(got[0], TokenizedRow(ids: [1, 5, 6], labels: [-100, -100, 6]))
        XCTAssertEqual(got.count, 2)
        // Used as they are: no BOS/EOS added.
        XCTAssertEqual(try rows([#"{"input_ids": [5, 6], "labels": [5, 6]}"#])[0], TokenizedRow(ids: [5, 6], labels: [5, 6]))
    }

    func testPreTokenizedRowErrors() throws {
        expectError({ _ = try self.rows([#"{"input_ids": [1, 2, 3], "labels": [1, 2]}"#]) },
                    "train.jsonl:1: input_ids has 3 entries but labels has 2")
        expectError({ _ = try self.rows(["", #"{"input_ids": [1, 512], "labels": [1, 2]}"#]) },
                    "train.jsonl:2: input_ids[1] = 512 is outside the vocabulary (0..<512)")
        expectError({ _ = try self.rows([#"{"input_ids": [1, 2], "labels": [-1, 2]}"#]) },
                    "train.jsonl:1: labels[0] = -1 is neither -100 nor in the vocabulary (0..<512)")
        expectError({ _ = try self.rows([#"{"input_ids": [], "labels": []}"#]) }, "train.jsonl:1: input_ids is empty")
        expectError({ _ = try self.rows([#"{"input_ids": [1, "x"], "labels": [1, 2]}"#]) },
                    "train.jsonl:1: input_ids[1] is not an integer")
        expectError({ _ = try self.rows([#"{"input_ids": [1, 2.5], "labels": [1, 2]}"#]) },
                    "train.jsonl:1: input_ids[1] is not an integer")
        expectError({ _ = try self.rows([#"{"input_ids": [1, true], "labels": [1, 2]}"#]) },
                    "train.jsonl:1: input_ids[1] is not an integer")
        expectError({ _ = try self.rows([#"{"input_ids": [1, 2]}"#]) },
                    "train.jsonl:1: a pre-tokenized row needs both input_ids and labels")
        expectError({ _ = try self.rows([#"{"input_ids": 3, "labels": [1]}"#]) }, "train.jsonl:1: input_ids is not a list")
    }

    // MARK: - errors and reading

    func testRowErrorsNameFileAndLine() throws {
        let good = #"{"instruction": "Q", "output": "R"}"#
        expectError({ _ = try self.rows([good, "", #"{"text": "x"}"#]) },
                    "train.jsonl:3: row has neither instruction/output, messages, prompt/response nor input_ids/labels")
        expectError({ _ = try self.rows([good, "{not json"]) }, "train.jsonl:2: not valid JSON")
        expectError({ _ = try self.rows([good, #"{"instruction": "Q", "output": "R"} x"#]) }, "train.jsonl:2: not valid JSON")
        expectError({ _ = try self.rows(["[1, 2]"]) }, "train.jsonl:1: row is not a JSON object")
        expectError({ _ = try self.rows([#"{"instruction": "Q"}"#]) }, "train.jsonl:1: an Alpaca row needs both instruction and output")
        expectError({ _ = try self.rows([#"{"instruction": 3, "output": "R"}"#]) }, "train.jsonl:1: \"instruction\" is not a string")
        expectError({ _ = try self.rows([#"{"instruction": "Q", "input": 3, "output": "R"}"#]) }, "train.jsonl:1: \"input\" is not a string")
        expectError({ _ = try self.rows([#"{"prompt": "Q"}"#]) }, "train.jsonl:1: a prompt/response row needs both prompt and response")
        expectError({ _ = try self.rows([#"{"messages": [{"role": "user", "content": "Q"}]}"#]) },
                    "train.jsonl:1: messages has no assistant turn")
        expectError({ _ = try self.rows([#"{"messages": [{"role": "user"}]}"#]) }, "train.jsonl:1: messages[0].content is not a string")
        expectError({ _ = try self.rows([#"{"messages": "hi"}"#]) }, "train.jsonl:1: messages is not a list")
        expectError({ _ = try self.rows([#"{"messages": [3]}"#]) }, "train.jsonl:1: messages[0] is not an object")
    }

    func testFileErrors() throws {
        let dir = try TokFixtures.tempDir(self)
        let missing = dir.appendingPathComponent("none.jsonl").path
        expectError({ _ = try loadInstructionRows(path: missing, template: .alpaca, tokenizer: self.tok, special: self.special,
                                                  seqLen: 256, limit: nil) }, "none.jsonl: no such file")
        expectError({ _ = try loadInstructionRows(path: dir.path, template: .alpaca, tokenizer: self.tok, special: self.special,
                                                  seqLen: 256, limit: nil) }, "is a directory, not a JSONL file")
        expectError({ _ = try self.rows([]) }, "train.jsonl: has no rows")
        expectError({ _ = try self.rows(["", "  ", "\r"]) }, "train.jsonl: has no rows")
        expectError({ _ = try self.rows([#"{"instruction": "Q", "output": "R"}"#], seqLen: 0) }, "sequence length must be at least 1, not 0")
        expectError({ _ = try self.rows([#"{"instruction": "Q", "output": "R"}"#], limit: 0) }, "row limit must be at least 1, not 0")
    }

    func testLimitReadsOnlyTheLinesItNeeds() throws {
        let good = #"{"instruction": "Q", "output": "R"}"#
        let lines = [good, "", good, "{broken", good]
        XCTAssertEqual(try rows(lines, limit: 2).count, 2)  // never reaches the broken line
        expectError({ _ = try self.rows(lines, limit: 3) }, "train.jsonl:4: not valid JSON")
        XCTAssertEqual(try rows([good, good, "", good + "\r", good], limit: 100).count, 4)  // CRLF and no final newline
    }

    func testWholeFixtureFilesLoadQuickly() throws {
        let start = Date()
        var count = 0
        for dataset in ["define", "pyapi", "whatis"] {
            for split in ["train", "eval"] {
                let path = TokFixtures.root.appendingPathComponent("data/\(dataset).\(split).jsonl").path
                count += try loadInstructionRows(path: path, template: .alpaca, tokenizer: tok, special: special,
                                                 seqLen: 256, limit: nil).count
            }
        }
        XCTAssertGreaterThan(count, 100)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
    }
}
