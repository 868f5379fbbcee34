import Foundation
import ILADiff

/// A model's chat template (Jinja), rendered as transformers' `apply_chat_template` renders it.
///
/// Variables, as transformers passes them: the tokenizer's special tokens (`bos_token`,
/// `eos_token`, `unk_token`, `pad_token` from tokenizer_config.json), then `messages` (each
/// message with its keys whose value is null dropped, and `reasoning_content` / `thinking` /
/// `reasoning` aliased to each other), `tools` (or none), `documents` (none),
/// `add_generation_prompt`, and any extra keyword arguments (which win over the special tokens).
/// Globals: `raise_exception`, `strftime_now`, `namespace`, `dict`, `range`.
public final class ChatTemplate {
    public let source: String
    /// Where the template came from, for error messages (e.g. `model/tokenizer_config.json`).
    public let origin: String
    let body: [JStmt]
    public var limits: JinjaLimits

    /// Parses `source`; a syntax error or a construct this renderer lacks is refused here, with its line.
    public init(source: String, origin: String = "chat template", limits: JinjaLimits = JinjaLimits()) throws {
        self.source = source
        self.origin = origin
        self.limits = limits
        body = try JinjaParser.parse(source)
        try ChatTemplate.validate(body)
    }

    /// Renders with jinja2's semantics; `variables` are the template's top-level names.
    public func render(variables: [String: JValue], now: Date = Date()) throws -> String {
        let interp = JinjaInterpreter(limits: limits, now: now)
        return try interp.render(body, variables: variables)
    }

    /// What `apply_chat_template(messages, tools=tools, add_generation_prompt=…, tokenize=False, **kwargs)`
    /// gives for a tokenizer whose special tokens are `specialTokens`.
    public func apply(messages: [JValue], tools: JValue? = nil, addGenerationPrompt: Bool,
                      specialTokens: [String: String] = [:], kwargs: [String: JValue] = [:], now: Date = Date()) throws -> String {
        var vars: [String: JValue] = [:]
        for (k, v) in specialTokens { vars[k] = .string(v) }
        vars["messages"] = .list(messages.map(ChatTemplate.normalizeMessage))
        vars["tools"] = tools ?? JValue.none
        vars["documents"] = JValue.none
        vars["add_generation_prompt"] = .bool(addGenerationPrompt)
        for (k, v) in kwargs { vars[k] = v }
        return try render(variables: vars, now: now)
    }

    /// transformers' `_normalize_chat_messages` and `_alias_reasoning_fields`.
    static func normalizeMessage(_ m: JValue) -> JValue {
        guard case .dict(var d) = m else { return m }
        for k in d.keys where d[k]?.isNone == true { d[k] = nil }
        var reasoning: JValue?
        for k in ["reasoning_content", "thinking", "reasoning"] {
            if let v = d[k] { reasoning = v; break }
        }
        if let reasoning {
            var out = JDict()
            out["thinking"] = reasoning
            for (k, v) in d.pairs { out[k] = v }
            out["reasoning_content"] = reasoning
            d = out
        }
        return .dict(d)
    }

    // MARK: validation: filters and tests are known names (jinja2 refuses unknown ones when compiling)

    static func validate(_ body: [JStmt]) throws {
        for s in body { try validate(s) }
    }

    static func validate(_ s: JStmt) throws {
        switch s {
        case .text, .breakLoop, .continueLoop: break
        case .output(let e, let l): try validate(e, l)
        case .ifChain(let branches, let otherwise, let l):
            for (c, b) in branches {
                try validate(c, l)
                try validate(b)
            }
            try validate(otherwise)
        case .forLoop(_, let it, let cond, let b, let o, let l):
            try validate(it, l)
            if let cond { try validate(cond, l) }
            try validate(b)
            try validate(o)
        case .set(_, let e, let l): try validate(e, l)
        case .setBlock(_, let b, let filters, let l):
            for f in filters { try validateFilter(f.0, l) }
            try validate(b)
        case .macro(_, let params, let b, let l):
            for case let (_, d?) in params { try validate(d, l) }
            try validate(b)
        case .callBlock(let c, _, let b, let l):
            try validate(c, l)
            try validate(b)
        case .filterBlock(let filters, let b, let l):
            for f in filters { try validateFilter(f.0, l) }
            try validate(b)
        case .generation(let b): try validate(b)
        }
    }

    static func validateFilter(_ name: String, _ line: Int) throws {
        if JinjaInterpreter.filterNames.contains(name) { return }
        if JinjaInterpreter.knownUnsupportedFilters.contains(name) { throw JinjaError(.unsupported, line: line, "filter '\(name)'") }
        throw JinjaError(.syntax, line: line, "no filter named '\(name)'")
    }

    static func validate(_ e: JExpr, _ l: Int) throws {
        switch e {
        case .literal, .name: break
        case .list(let items), .tuple(let items): for x in items { try validate(x, l) }
        case .dict(let pairs): for (k, v) in pairs { try validate(k, l); try validate(v, l) }
        case .attr(let b, _): try validate(b, l)
        case .item(let b, let i): try validate(b, l); try validate(i, l)
        case .slice(let b, let x, let y, let z):
            try validate(b, l)
            for p in [x, y, z] { if let p { try validate(p, l) } }
        case .call(let c, let args, let kwargs):
            try validate(c, l)
            for a in args { try validate(a, l) }
            for (_, v) in kwargs { try validate(v, l) }
        case .filter(let b, let name, let args, let kwargs):
            try validateFilter(name, l)
            try validate(b, l)
            for a in args { try validate(a, l) }
            for (_, v) in kwargs { try validate(v, l) }
        case .test(let b, let name, let args, _):
            if !JinjaInterpreter.testNames.contains(name) { throw JinjaError(.syntax, line: l, "no test named '\(name)'") }
            try validate(b, l)
            for a in args { try validate(a, l) }
        case .unary(_, let x), .not(let x): try validate(x, l)
        case .binary(_, let a, let b), .and(let a, let b), .or(let a, let b): try validate(a, l); try validate(b, l)
        case .compare(let a, let ops):
            try validate(a, l)
            for (_, x) in ops { try validate(x, l) }
        case .condition(let c, let t, let o):
            try validate(c, l)
            try validate(t, l)
            if let o { try validate(o, l) }
        }
    }
}

/// The chat template(s) of a tokenizer folder and its special-token strings.
public struct ModelChatTemplate {
    /// Named templates ("default" for a single one).
    public var templates: [String: String]
    /// Where they were read from, for messages.
    public var origin: String
    /// bos_token, eos_token, unk_token, pad_token as strings.
    public var specialTokens: [String: String]

    /// Reads `chat_template.jinja` (newer transformers) or tokenizer_config.json's `chat_template`
    /// (a string, or a list of `{name, template}`), plus `additional_chat_templates/*.jinja`.
    /// nil when the folder has no chat template.
    public static func load(directory: String) throws -> ModelChatTemplate? {
        let fm = FileManager.default
        let configPath = (directory as NSString).appendingPathComponent("tokenizer_config.json")
        let jinjaPath = (directory as NSString).appendingPathComponent("chat_template.jinja")
        var config: JDict = JDict()
        if fm.fileExists(atPath: configPath) {
            guard let data = fm.contents(atPath: configPath) else { throw ILAError(file: configPath, "cannot read") }
            let v: JValue
            do { v = try JValue.parseJSON(Array(data)) } catch let e as OrderedJSONParser.Failure {
                throw ILAError(file: configPath, "not valid JSON (\(e.message))")
            }
            guard case .dict(let d) = v else { throw ILAError(file: configPath, "top level is not a JSON object") }
            config = d
        }
        var templates: [String: String] = [:]
        var origin = configPath
        if let ct = config["chat_template"], !ct.isNone {
            switch ct {
            case .string(let s): templates["default"] = s
            case .list(let l):
                for (i, item) in l.enumerated() {
                    guard case .dict(let d) = item, case .string(let name)? = d["name"], case .string(let t)? = d["template"] else {
                        throw ILAError(file: configPath, "chat_template[\(i)] is not {\"name\": string, \"template\": string}")
                    }
                    templates[name] = t
                }
            default:
                throw ILAError(file: configPath, "chat_template is neither a string nor a list of {name, template}")
            }
        }
        if fm.fileExists(atPath: jinjaPath) {
            guard let data = fm.contents(atPath: jinjaPath) else { throw ILAError(file: jinjaPath, "cannot read") }
            guard let s = String(data: data, encoding: .utf8) else { throw ILAError(file: jinjaPath, "is not UTF-8 text") }
            // transformers: chat_template.jinja replaces tokenizer_config.json's template(s)
            templates = ["default": s]
            origin = jinjaPath
        }
        let extraDir = (directory as NSString).appendingPathComponent("additional_chat_templates")
        if let names = try? fm.contentsOfDirectory(atPath: extraDir) {
            for n in names.sorted() where n.hasSuffix(".jinja") {
                let p = (extraDir as NSString).appendingPathComponent(n)
                guard let data = fm.contents(atPath: p), let s = String(data: data, encoding: .utf8) else {
                    throw ILAError(file: p, "cannot read as UTF-8 text")
                }
                templates[String(n.dropLast(6))] = s
            }
        }
        if templates.isEmpty { return nil }
        var special: [String: String] = [:]
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            switch config[key] {
            case .string(let s)?: special[key] = s
            case .dict(let d)?:
                if case .string(let s)? = d["content"] { special[key] = s }
            default: break
            }
        }
        return ModelChatTemplate(templates: templates, origin: origin, specialTokens: special)
    }

    /// The template transformers' `get_chat_template` picks: the only one, "tool_use" when tools
    /// are given and it exists, else "default".
    public func select(hasTools: Bool) throws -> (name: String, source: String) {
        if templates.count == 1, let only = templates.first { return (only.key, only.value) }
        if hasTools, let t = templates["tool_use"] { return ("tool_use", t) }
        if let t = templates["default"] { return ("default", t) }
        throw ILAError(file: origin, "has several chat templates (\(templates.keys.sorted().joined(separator: ", "))) and none named default")
    }
}
