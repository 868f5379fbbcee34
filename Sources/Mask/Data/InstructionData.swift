import Foundation
import ILAModel
import ILADiff
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a row's text becomes a prompt and a response (DESIGN.md section 5).
///
/// - `alpaca` (default): `### Instruction:\n{instruction}\n\n[### Input:\n{input}\n\n]### Response:\n`.
///   A chat's earlier turns become repeated instruction/response blocks; a system message is
///   put first, followed by a blank line.
/// - `chatml`: `<|im_start|>{role}\n{content}<|im_end|>\n` per turn (system first if present),
///   the prompt ending in `<|im_start|>assistant\n`; the response is `{content}<|im_end|>`.
/// - `llama2`: `[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]`; earlier answers are
///   followed by ` </s><s>`. The prompt ends at `[/INST]`: the response is tokenized on its
///   own, and a SentencePiece-style tokenizer's `▁` prefix supplies the separating space.
/// - `llama3`: `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>` per turn,
///   the prompt ending in `<|start_header_id|>assistant<|end_header_id|>\n\n`; the response
///   is `{content}<|eot_id|>`.
/// - `mistral`: `[INST] {user} [/INST]`, earlier answers followed by `</s>`; a system message
///   is put before the first user message, followed by a blank line.
///
/// A turn-end marker (`<|im_end|>`, `<|eot_id|>`) is left out of the response when it is the
/// EOS token itself, which is appended anyway.
///
/// - `model`: the tokenizer's own chat template (tokenizer_config.json's `chat_template` or
///   chat_template.jinja), rendered as transformers' `apply_chat_template` renders it; see
///   `ChatRowBuilder` (ChatData.swift). Nothing is added around the rendered text.
public enum PromptTemplate: String, CaseIterable, Sendable {
    case alpaca, chatml, llama2, llama3, mistral, model

    /// The hand-written templates, which need nothing but a tokenizer. `model` is left out: it
    /// needs the tokenizer's chat template and is chosen by name (`PromptTemplate(rawValue:)`).
    public static var allCases: [PromptTemplate] { [.alpaca, .chatml, .llama2, .llama3, .mistral] }
    /// Every template name, `model` included.
    public static var allNames: [String] { allCases.map(\.rawValue) + [PromptTemplate.model.rawValue] }
}

extension TokenizedRow {
    /// `[BOS] + prompt + response + [EOS]`, labelled only on response and EOS, both cut to `seqLen`.
    /// BOS/EOS are left out when `special` has none.
    public init(promptIDs: [Int], responseIDs: [Int], special: SpecialTokens, seqLen: Int) {
        var ids: [Int] = []
        var labels: [Int] = []
        ids.reserveCapacity(promptIDs.count + responseIDs.count + 2)
        labels.reserveCapacity(ids.capacity)
        if let bos = special.bos {
            ids.append(bos)
            labels.append(-100)
        }
        ids.append(contentsOf: promptIDs)
        labels.append(contentsOf: repeatElement(-100, count: promptIDs.count))
        ids.append(contentsOf: responseIDs)
        labels.append(contentsOf: responseIDs)
        if let eos = special.eos {
            ids.append(eos)
            labels.append(eos)
        }
        self.init(ids: Array(ids.prefix(seqLen)), labels: Array(labels.prefix(seqLen)))
    }
}

/// Reads and tokenizes the JSONL rows of `path` (DESIGN.md section 5).
///
/// Accepted rows: `{"instruction", "input"?, "output"}`, `{"messages": [{"role", "content"}…]}`
/// (the last assistant turn is the response, the turns before it the prompt, a leading system
/// message the system prompt), `{"prompt", "response"}` (the prompt is the user's message and
/// is templated like an instruction), and pre-tokenized `{"input_ids", "labels"}` (used as
/// they are, only cut to `seqLen`). Blank lines are skipped; with `limit`, reading stops after
/// that many rows. Errors name the file and line: `train.jsonl:17: not valid JSON`.
public func loadInstructionRows(path: String, template: PromptTemplate, tokenizer: Tokenizer,
                                special: SpecialTokens, seqLen: Int, limit: Int?) throws -> [TokenizedRow] {
    try loadInstructionRows(path: path, format: DataFormat(template: template), chat: nil, tokenizer: tokenizer,
                            special: special, seqLen: seqLen, limit: limit)
}

/// Reads and tokenizes the JSONL rows of `path` under `format`; `chat` is the tokenizer's chat
/// template (for `--template model`, and the default for `messages` rows when present).
public func loadInstructionRows(path: String, format: DataFormat, chat: ModelChatTemplate?, tokenizer: Tokenizer,
                                special: SpecialTokens, seqLen: Int, limit: Int?) throws -> [TokenizedRow] {
    guard seqLen >= 1 else { throw ILAError("sequence length must be at least 1, not \(seqLen)") }
    if let limit, limit < 1 { throw ILAError("row limit must be at least 1, not \(limit)") }
    let name = path
    let reader = try LineReader(path: path)
    if format.template == .model && chat == nil {
        throw ILAError("--template model: the tokenizer has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja)")
    }
    let chatRows = try chat.map { try ChatRowBuilder(chat: $0, tokenizer: tokenizer, trainOn: format.trainOn, kwargs: format.templateKwargs) }
    let renderer = TemplateRenderer(template: format.template ?? .alpaca, tokenizer: tokenizer, special: special)
    var rows: [TokenizedRow] = []
    var lineNumber = 0
    while let line = try reader.next() {
        lineNumber += 1
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D || $0 == 0x0A }) { continue }
        let at = "\(name):\(lineNumber)"
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(line))
        } catch {
            throw ILAError(file: at, "not valid JSON")
        }
        guard let dict = object as? [String: Any] else { throw ILAError(file: at, "row is not a JSON object") }
        do {
            let useModel = format.template == .model || (format.template == nil && dict["messages"] != nil && chatRows != nil)
            if useModel, let chatRows, dict["input_ids"] == nil && dict["labels"] == nil {
                rows.append(try chatRows.row(line: line, object: dict, seqLen: seqLen))
            } else {
                if format.trainOn == .allAssistant, let m = dict["messages"] as? [Any],
                   m.filter({ (($0 as? [String: Any])?["role"] as? String) == "assistant" }).count > 1 {
                    throw RowProblem("--train-on all-assistant needs --template model (the row has several assistant turns and template \(format.template?.rawValue ?? "alpaca") labels only the last)")
                }
                rows.append(try renderer.row(dict, seqLen: seqLen))
            }
        } catch let p as RowProblem {
            throw ILAError(file: at, p.message)
        }
        if let limit, rows.count >= limit { break }
    }
    if rows.isEmpty { throw ILAError(file: name, "has no rows") }
    return rows
}

// MARK: - rows to text

/// What is wrong with one row; the caller adds file and line.
struct RowProblem: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// A text row before templating.
struct Conversation {
    struct Turn {
        var role: String
        var content: String
        /// Alpaca's `input`, kept apart so the alpaca template can give it its own section.
        var input: String? = nil

        /// The content with Alpaca's input appended, for templates without an input section.
        var mergedContent: String {
            guard let input, !input.isEmpty else { return content }
            return content + "\n\n" + input
        }
    }

    var system: String?
    /// The turns before the response.
    var turns: [Turn]
    var response: String
}

/// The shape of one JSONL row.
enum ParsedRow {
    case text(Conversation)
    case tokens(ids: [Int], labels: [Int])

    /// Recognises the row's shape, checking its fields' types.
    init(_ o: [String: Any]) throws {
        func string(_ key: String) throws -> String {
            guard let s = o[key] as? String else { throw RowProblem("\"\(key)\" is not a string") }
            return s
        }
        if o["input_ids"] != nil || o["labels"] != nil {
            guard o["input_ids"] != nil, o["labels"] != nil else {
                throw RowProblem("a pre-tokenized row needs both input_ids and labels")
            }
            self = .tokens(ids: try Self.ints(o["input_ids"], "input_ids"), labels: try Self.ints(o["labels"], "labels"))
        } else if let m = o["messages"] {
            self = .text(try Self.chat(m))
        } else if o["instruction"] != nil || o["output"] != nil {
            guard o["instruction"] != nil, o["output"] != nil else {
                throw RowProblem("an Alpaca row needs both instruction and output")
            }
            var input: String?
            if let v = o["input"], !(v is NSNull) {
                guard let s = v as? String else { throw RowProblem("\"input\" is not a string") }
                input = s
            }
            self = .text(Conversation(system: nil,
                                      turns: [.init(role: "user", content: try string("instruction"), input: input)],
                                      response: try string("output")))
        } else if o["prompt"] != nil || o["response"] != nil {
            guard o["prompt"] != nil, o["response"] != nil else {
                throw RowProblem("a prompt/response row needs both prompt and response")
            }
            self = .text(Conversation(system: nil, turns: [.init(role: "user", content: try string("prompt"))],
                                      response: try string("response")))
        } else {
            throw RowProblem("row has neither instruction/output, messages, prompt/response nor input_ids/labels")
        }
    }

    private static func ints(_ v: Any?, _ key: String) throws -> [Int] {
        guard let list = v as? [Any] else { throw RowProblem("\(key) is not a list") }
        var out: [Int] = []
        out.reserveCapacity(list.count)
        for (i, x) in list.enumerated() {
            guard let n = jsonInt(x) else { throw RowProblem("\(key)[\(i)] is not an integer") }
            out.append(n)
        }
        return out
    }

    private static func chat(_ v: Any) throws -> Conversation {
        guard let list = v as? [Any] else { throw RowProblem("messages is not a list") }
        var turns: [Conversation.Turn] = []
        for (i, m) in list.enumerated() {
            guard let o = m as? [String: Any] else { throw RowProblem("messages[\(i)] is not an object") }
            guard let role = o["role"] as? String else { throw RowProblem("messages[\(i)].role is not a string") }
            guard let content = o["content"] as? String else { throw RowProblem("messages[\(i)].content is not a string") }
            turns.append(.init(role: role, content: content))
        }
        guard let last = turns.lastIndex(where: { $0.role == "assistant" }) else {
            throw RowProblem("messages has no assistant turn")
        }
        // Turns after the last assistant turn are not part of the example.
        var before = Array(turns[..<last])
        var system: String?
        if let first = before.first, first.role == "system" {
            system = first.content
            before.removeFirst()
        }
        return Conversation(system: system, turns: before, response: turns[last].content)
    }
}

/// Turns rows into token rows under one template.
struct TemplateRenderer {
    let template: PromptTemplate
    let tokenizer: Tokenizer
    let special: SpecialTokens

    func row(_ o: [String: Any], seqLen: Int) throws -> TokenizedRow {
        switch try ParsedRow(o) {
        case .tokens(let ids, let labels):
            guard ids.count == labels.count else {
                throw RowProblem("input_ids has \(ids.count) entries but labels has \(labels.count)")
            }
            guard !ids.isEmpty else { throw RowProblem("input_ids is empty") }
            let n = tokenizer.vocabSize
            if let i = ids.firstIndex(where: { $0 < 0 || $0 >= n }) {
                throw RowProblem("input_ids[\(i)] = \(ids[i]) is outside the vocabulary (0..<\(n))")
            }
            if let i = labels.firstIndex(where: { $0 != -100 && ($0 < 0 || $0 >= n) }) {
                throw RowProblem("labels[\(i)] = \(labels[i]) is neither -100 nor in the vocabulary (0..<\(n))")
            }
            return TokenizedRow(ids: Array(ids.prefix(seqLen)), labels: Array(labels.prefix(seqLen)))
        case .text(let c):
            guard template != .model else { throw RowProblem("--template model needs the tokenizer's chat template") }
            let (prompt, response) = render(c)
            return TokenizedRow(promptIDs: tokenizer.encode(prompt), responseIDs: tokenizer.encode(response),
                                special: special, seqLen: seqLen)
        }
    }

    /// A turn-end marker, unless it is the EOS token (appended anyway).
    private func turnEnd(_ marker: String) -> String {
        if let eos = special.eos, tokenizer.tokenID(for: marker) == eos { return "" }
        return marker
    }

    /// The spelling of the BOS/EOS tokens for templates that write them between turns.
    private var bosText: String { special.bos.flatMap(tokenizer.token(for:)) ?? "<s>" }
    private var eosText: String { special.eos.flatMap(tokenizer.token(for:)) ?? "</s>" }

    /// The prompt and response text of `c` under the template.
    func render(_ c: Conversation) -> (prompt: String, response: String) {
        var p = ""
        switch template {
        case .alpaca:
            if let s = c.system { p += s + "\n\n" }
            for t in c.turns {
                if t.role == "assistant" {
                    p += t.content + "\n\n"
                } else {
                    p += "### Instruction:\n" + t.content + "\n\n"
                    if let input = t.input, !input.isEmpty { p += "### Input:\n" + input + "\n\n" }
                    p += "### Response:\n"
                }
            }
            return (p, c.response)
        case .chatml:
            if let s = c.system { p += "<|im_start|>system\n" + s + "<|im_end|>\n" }
            for t in c.turns { p += "<|im_start|>" + t.role + "\n" + t.mergedContent + "<|im_end|>\n" }
            p += "<|im_start|>assistant\n"
            return (p, c.response + turnEnd("<|im_end|>"))
        case .llama3:
            if let s = c.system { p += "<|start_header_id|>system<|end_header_id|>\n\n" + s + "<|eot_id|>" }
            for t in c.turns {
                p += "<|start_header_id|>" + t.role + "<|end_header_id|>\n\n" + t.mergedContent + "<|eot_id|>"
            }
            p += "<|start_header_id|>assistant<|end_header_id|>\n\n"
            return (p, c.response + turnEnd("<|eot_id|>"))
        case .llama2, .mistral:
            var system = c.system
            var users = 0
            for t in c.turns {
                if t.role == "assistant" {
                    p += template == .llama2 ? " " + t.content + " " + eosText + bosText : " " + t.content + eosText
                    continue
                }
                var content = t.mergedContent
                if let s = system {
                    content = template == .llama2 ? "<<SYS>>\n" + s + "\n<</SYS>>\n\n" + content : s + "\n\n" + content
                    system = nil
                }
                p += "[INST] " + content + " [/INST]"
                users += 1
            }
            if users == 0, let s = system {
                // A system message with no user turn still gets its own instruction block.
                p += template == .llama2 ? "[INST] <<SYS>>\n" + s + "\n<</SYS>>\n\n [/INST]" : "[INST] " + s + " [/INST]"
            }
            return (p, c.response)
        case .model:
            return ("", c.response)
        }
    }
}

/// An integral number from JSONSerialization (NSNumber, Int or integral Double), or nil;
/// JSON `true`/`false` (NSNumbers of type "c") are not numbers here.
func jsonInt(_ v: Any?) -> Int? {
    guard let v else { return nil }
    if let n = v as? NSNumber, n.objCType.pointee == CChar(UInt8(ascii: "c")) { return nil }
    if let i = v as? Int { return i }
    if let d = v as? Double, d.rounded() == d, abs(d) < 9e15 { return Int(d) }
    return nil
}

// MARK: - reading lines

/// Reads a file line by line (without the newline), so `limit` need not read it all.
final class LineReader {
    private let file: UnsafeMutablePointer<FILE>
    private var buffer: UnsafeMutablePointer<CChar>?
    private var capacity = 0
    private let path: String

    init(path: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            throw ILAError(file: path, "is a directory, not a JSONL file")
        }
        guard let f = fopen(path, "r") else {
            throw ILAError(file: path, FileManager.default.fileExists(atPath: path) ? "cannot read" : "no such file")
        }
        file = f
        self.path = path
    }

    deinit {
        free(buffer)
        fclose(file)
    }

    /// The next line's bytes, or nil at the end of the file.
    func next() throws -> [UInt8]? {
        let n = getline(&buffer, &capacity, file)
        if n < 0 {
            if ferror(file) != 0 { throw ILAError(file: path, "read error") }
            return nil
        }
        guard let buffer else { return nil }
        var len = n
        if len > 0 && buffer[len - 1] == 0x0A { len -= 1 }
        return buffer.withMemoryRebound(to: UInt8.self, capacity: len) { Array(UnsafeBufferPointer(start: $0, count: len)) }
    }
}
