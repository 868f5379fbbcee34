import Foundation
import ILADiff
import ILAModel

/// Which assistant turns of a chat row are trained on (carry labels).
public enum TrainOn: String, CaseIterable, Sendable {
    /// The last assistant turn (DESIGN.md section 5).
    case last
    /// Every assistant turn (TRL's assistant-only loss, axolotl's `roles_to_train: [assistant]`).
    case allAssistant = "all-assistant"
}

/// How rows become tokens: the template (nil: `model` for `messages` rows when the tokenizer has
/// a chat template, `alpaca` otherwise), the turns trained on, and extra chat-template variables.
public struct DataFormat {
    public var template: PromptTemplate?
    public var trainOn: TrainOn
    /// Extra keyword arguments of apply_chat_template (e.g. `enable_thinking`, `date_string`).
    public var templateKwargs: [String: JValue]

    public init(template: PromptTemplate? = nil, trainOn: TrainOn = .last, templateKwargs: [String: JValue] = [:]) {
        self.template = template
        self.trainOn = trainOn
        self.templateKwargs = templateKwargs
    }

    /// The name recorded in ranking.json and learn's resume fingerprint.
    public var description: String {
        (template?.rawValue ?? "auto") + (trainOn == .last ? "" : "+" + trainOn.rawValue)
    }
}

/// Tokenized rows of `messages` (and other text rows) under the model's own chat template.
///
/// With the conversation cut after its last assistant turn (later turns are not part of the
/// example), `full = render(turns, add_generation_prompt=False)`. For each trained assistant turn
/// at index `a`: `P = render(turns[..<a], add_generation_prompt=True)` and
/// `F = render(turns[...a], add_generation_prompt=False)` (for the last turn F is `full`). P must
/// be a prefix of F. The turn spans `full` from `len(P)` to `E`, the length of the common prefix
/// of F and `full`; E must exceed len(P), and what F has after E must be the end of `full` (text
/// the template writes only when a conversation ends, like Phi-3's EOS). Otherwise the row is
/// refused: the template renders that turn differently once later turns follow (Qwen3 drops
/// earlier turns' `<think>` blocks, Mistral v0.3 moves the system prompt to the last user turn),
/// so no prefix difference labels it. Offsets count Unicode scalars (Python's str indices).
/// `full` is cut at the span boundaries, each piece tokenized on its own (as transformers
/// tokenizes a rendered chat: special tokens written in the text are matched, nothing is added),
/// the pieces inside spans labelled with their ids and the rest -100; all cut to `seqLen`.
/// `scripts/make-chat-template-fixtures.py` computes the same in Python.
///
/// Alpaca rows become `[user: instruction (+ "\n\n" + input), assistant: output]`, prompt/response
/// rows `[user: prompt, assistant: response]`. A row's `tools` (a list) and `chat_template_kwargs`
/// (an object) are passed to the template, as TRL passes them.
public final class ChatRowBuilder {
    let chat: ModelChatTemplate
    let tokenizer: Tokenizer
    let trainOn: TrainOn
    let kwargs: [String: JValue]
    private var compiled: [String: ChatTemplate] = [:]

    public init(chat: ModelChatTemplate, tokenizer: Tokenizer, trainOn: TrainOn, kwargs: [String: JValue] = [:]) throws {
        self.chat = chat
        self.tokenizer = tokenizer
        self.trainOn = trainOn
        self.kwargs = kwargs
        // Every template is parsed up front: an unsupported construct is refused before any row.
        for (name, source) in chat.templates {
            do {
                compiled[name] = try ChatTemplate(source: source, origin: chat.origin)
            } catch let e as JinjaError {
                throw ILAError(file: chat.origin, "chat template\(chat.templates.count > 1 ? " '\(name)'" : ""): \(Self.oneLine(e.description))")
            }
        }
    }

    static func oneLine(_ s: String) -> String {
        s.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// One JSONL row (its text `line`, already known to be an object `object`) as tokens.
    func row(line: [UInt8], object: [String: Any], seqLen: Int) throws -> TokenizedRow {
        let ordered: JValue
        do { ordered = try JValue.parseJSON(line) } catch { throw RowProblem("not valid JSON") }
        guard case .dict(let o) = ordered else { throw RowProblem("row is not a JSON object") }
        let messages = try Self.messages(o)
        var tools: JValue? = nil
        if let t = o["tools"], !t.isNone {
            guard case .list = t else { throw RowProblem("tools is not a list") }
            tools = t
        }
        var kw = kwargs
        if let k = o["chat_template_kwargs"], !k.isNone {
            guard case .dict(let d) = k else { throw RowProblem("chat_template_kwargs is not an object") }
            for (name, v) in d.pairs { kw[name] = v }
        }
        let (ids, labels) = try tokens(messages: messages, tools: tools, kwargs: kw)
        return TokenizedRow(ids: Array(ids.prefix(seqLen)), labels: Array(labels.prefix(seqLen)))
    }

    /// The messages of a row of any text shape.
    static func messages(_ o: JDict) throws -> [JValue] {
        func string(_ key: String) throws -> String {
            guard case .string(let s)? = o[key] else { throw RowProblem("\"\(key)\" is not a string") }
            return s
        }
        func turn(_ role: String, _ content: String) -> JValue { .dict(JDict([("role", .string(role)), ("content", .string(content))])) }
        if let m = o["messages"] {
            guard case .list(let list) = m else { throw RowProblem("messages is not a list") }
            for (i, x) in list.enumerated() {
                guard case .dict(let d) = x else { throw RowProblem("messages[\(i)] is not an object") }
                guard case .string? = d["role"] else { throw RowProblem("messages[\(i)].role is not a string") }
            }
            return list
        }
        if o["instruction"] != nil || o["output"] != nil {
            guard o["instruction"] != nil, o["output"] != nil else { throw RowProblem("an Alpaca row needs both instruction and output") }
            var user = try string("instruction")
            if let v = o["input"], !v.isNone {
                guard case .string(let input) = v else { throw RowProblem("\"input\" is not a string") }
                if !input.isEmpty { user += "\n\n" + input }
            }
            return [turn("user", user), turn("assistant", try string("output"))]
        }
        if o["prompt"] != nil || o["response"] != nil {
            guard o["prompt"] != nil, o["response"] != nil else { throw RowProblem("a prompt/response row needs both prompt and response") }
            return [turn("user", try string("prompt")), turn("assistant", try string("response"))]
        }
        throw RowProblem("row has neither instruction/output, messages, prompt/response nor input_ids/labels")
    }

    static func role(_ m: JValue) -> String? {
        if case .dict(let d) = m, case .string(let r)? = d["role"] { return r }
        return nil
    }

    func render(_ template: ChatTemplate, _ messages: ArraySlice<JValue>, _ tools: JValue?, _ agp: Bool,
                _ kwargs: [String: JValue]) throws -> [Unicode.Scalar] {
        do {
            let text = try template.apply(messages: Array(messages), tools: tools, addGenerationPrompt: agp,
                                          specialTokens: chat.specialTokens, kwargs: kwargs)
            return Array(text.unicodeScalars)
        } catch let e as JinjaError {
            throw RowProblem("chat template (\(chat.origin)) \(Self.oneLine(e.description))")
        }
    }

    /// The rendered text's pieces and whether each is trained on (see the type's description).
    public func pieces(messages: [JValue], tools: JValue?, kwargs: [String: JValue]) throws -> [(text: String, trained: Bool)] {
        let assistants = messages.indices.filter { Self.role(messages[$0]) == "assistant" }
        guard let last = assistants.last else { throw RowProblem("messages has no assistant turn") }
        let template = try compiledTemplate(hasTools: tools != nil)
        let conv = messages[...last]
        let full = try render(template, conv, tools, false, kwargs)
        let targets = trainOn == .last ? [last] : assistants
        var spans: [(Int, Int)] = []
        for a in targets {
            guard a > 0 else {
                throw RowProblem("assistant turn messages[0] has nothing before it: a chat template renders no prompt for it")
            }
            let p = try render(template, conv[..<a], tools, true, kwargs)
            let f = a == last ? full : try render(template, conv[...a], tools, false, kwargs)
            guard f.starts(with: p) else {
                throw RowProblem("the chat template's prompt for assistant turn messages[\(a)] (add_generation_prompt=True) is not the start of the text with that turn, so the turn's tokens cannot be told apart")
            }
            var end = 0
            while end < f.count && end < full.count && f[end] == full[end] { end += 1 }
            guard end > p.count, full.count >= f.count - end, full[(full.count - (f.count - end))...].elementsEqual(f[end...]) else {
                throw RowProblem("the chat template renders assistant turn messages[\(a)] differently when later turns follow it, so --train-on all-assistant cannot label it (use --train-on last)")
            }
            if let prev = spans.last, p.count < prev.1 {
                throw RowProblem("the chat template's text for assistant turn messages[\(a)] overlaps the previous turn's")
            }
            spans.append((p.count, end))
        }
        var out: [(String, Bool)] = []
        var at = 0
        for (s, e) in spans {
            if s > at { out.append((PyStr.s(full[at..<s]), false)) }
            if e > s { out.append((PyStr.s(full[s..<e]), true)) }
            at = e
        }
        if at < full.count { out.append((PyStr.s(full[at...]), false)) }
        return out
    }

    /// Ids and labels (-100 outside the trained turns) of a conversation, uncut.
    public func tokens(messages: [JValue], tools: JValue?, kwargs: [String: JValue]) throws -> (ids: [Int], labels: [Int]) {
        var ids: [Int] = []
        var labels: [Int] = []
        for (text, trained) in try pieces(messages: messages, tools: tools, kwargs: kwargs) {
            let t = tokenizer.encode(text)
            ids += t
            labels += trained ? t : [Int](repeating: -100, count: t.count)
        }
        return (ids, labels)
    }

    func compiledTemplate(hasTools: Bool) throws -> ChatTemplate {
        let name: String
        do { name = try chat.select(hasTools: hasTools).name } catch let e as ILAError { throw RowProblem(e.message) }
        guard let t = compiled[name] else { throw RowProblem("chat template \(name) is missing") }
        return t
    }
}

extension BaseModel {
    /// The chat template beside this model's tokenizer, if any.
    public func chatTemplate() throws -> ModelChatTemplate? {
        guard let dir = checkpoint.directory else { return nil }
        return try ModelChatTemplate.load(directory: dir)
    }

    /// Tokenized rows of a JSONL file for this model under `format`.
    public func rows(path: String, format: DataFormat, seqLen: Int, limit: Int? = nil) throws -> [TokenizedRow] {
        let (tok, special) = try tokenizer()
        let chat = try chatTemplate()
        let rows = try loadInstructionRows(path: path, format: format, chat: chat, tokenizer: tok, special: special,
                                           seqLen: seqLen, limit: limit)
        for (n, row) in rows.enumerated() {
            if let bad = (row.ids + row.labels.filter { $0 != -100 }).first(where: { $0 < 0 || $0 >= spec.vocabSize }) {
                throw ILAError(file: path, "row \(n + 1): token id \(bad) is outside the vocabulary of the model (\(spec.vocabSize) tokens)")
            }
        }
        return rows
    }
}
