import ArgumentParser
import Foundation
import ILACommandLine
import ILACommandOptions
import ILADiff
import ILAMask
import ILAModel

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Token ids of a text, of many texts, or of data rows with their labels.",
        discussion: """
        --base is a folder with tokenizer.json (config.json is not needed) or a tokenizer.json \
        file. Texts are encoded exactly as Hugging Face tokenizers' \
        `tokenizer.encode(text, add_special_tokens=False)` encodes them: no BOS or EOS is added.

          --text S    the ids of S; the human view lists each token's id and vocabulary
                      spelling, --json prints the JSON array of ids
          --texts F   F holds one JSON string per line; prints one JSON array of ids per
                      line, in order (for comparing with other tools)
          --data D    JSONL rows as `ila-mask learn` and `eval` see them: BOS + prompt +
                      response + EOS under --template (with --template model, the
                      chat template's text as it is, labels on the trained turns), BOS/EOS from tokenizer_config.json /
                      config.json when present. The human view shows every token as
                      spelling(id, label), response tokens (label = id) in green on a
                      terminal, prompt tokens with label -100; --json prints one
                      {"ids", "labels"} object per line, one per row

        A tokenizer.json part that is not implemented is refused with one line naming it.

        Examples:
          ila-mask tokenize --base models/llama-3.2-1b --text "Hello, world!"
          ila-mask tokenize --base models/qwen2.5-0.5b --texts texts.jsonl > ids.jsonl
          ila-mask tokenize --base models/llama-3.2-1b --data train.jsonl --template llama3 --limit 2
          ila-mask tokenize --base base/ --data train.jsonl --seq-len 256 --json
        """)

    @Option(help: ArgumentHelp("A folder with tokenizer.json, or a tokenizer.json file. Example: --base models/llama-3.2-1b",
                               valueName: "dir"))
    var base: String

    @Option(help: ArgumentHelp("One text to encode. Example: --text \"Hello, world!\"", valueName: "text"))
    var text: String?

    @Option(help: ArgumentHelp("A file of one JSON string per line; prints one JSON array of ids per line. Example: --texts texts.jsonl",
                               valueName: "file"))
    var texts: String?

    @Option(help: ArgumentHelp("JSONL rows (alpaca, messages, prompt/response or input_ids/labels) to show as ids and labels. Example: --data train.jsonl",
                               valueName: "file"))
    var data: String?

    @OptionGroup var dataFormat: DataFormatOptions

    @Option(help: "With --data: only the first N rows. Example: --limit 5")
    var limit: Int?

    @Option(name: .customLong("seq-len"), help: "With --data: cut each row to this many tokens (default: no cut). Example: --seq-len 256")
    var seqLen: Int?

    @Flag(help: "--text: the ids as a JSON array; --data: one {\"ids\", \"labels\"} object per row and line. (--texts always prints JSON.)")
    var json = false

    func validate() throws {
        let sources = [text != nil, texts != nil, data != nil].filter { $0 }.count
        if sources != 1 { throw ValidationError("give exactly one of --text, --texts and --data") }
        if data == nil {
            if limit != nil { throw ValidationError("--limit needs --data") }
            if seqLen != nil { throw ValidationError("--seq-len needs --data") }
        }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1, got \(limit)") }
        if let seqLen, seqLen < 1 { throw ValidationError("--seq-len must be at least 1, got \(seqLen)") }
        if base.isEmpty { throw ValidationError("--base needs a folder") }
    }

    /// The tokenizer and the folder its tokenizer_config.json / config.json would be in.
    private func load() throws -> (Tokenizer, String) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: base, isDirectory: &isDir) else {
            throw ILAError(file: base, "no such folder")
        }
        let isFolder = isDir.boolValue
        let tok = try Tokenizer(path: base)
        return (tok, isFolder ? base : (base as NSString).deletingLastPathComponent)
    }

    func run() throws {
        try runReportingErrors {
            // Everything is computed before anything is printed: an error leaves no partial output.
            if let text {
                let (tok, _) = try load()
                let ids = tok.encode(text)
                if json {
                    printOut(Self.idList(ids))
                } else {
                    let rows = ids.enumerated().map { [String($0.offset), String($0.element), tok.displayToken($0.element)] }
                    var out = "\(ids.count) token\(ids.count == 1 ? "" : "s")\n"
                    if !ids.isEmpty { out += renderTable(header: [" #", " id", "token"], rows: rows) + "\n" }
                    out += "ids: " + Self.idList(ids)
                    printOut(out)
                }
            } else if let texts {
                let lines = try Tokenizer.readJSONStringLines(path: texts)
                let (tok, _) = try load()
                let all = tok.encodeAll(lines)
                var out = ""
                out.reserveCapacity(all.reduce(0) { $0 + $1.count * 6 + 3 })
                for ids in all {
                    out += Self.idList(ids)
                    out += "\n"
                }
                if !out.isEmpty { FileHandle.standardOutput.write(Data(out.utf8)) }
            } else if let data {
                let (tok, folder) = try load()
                let special = try SpecialTokens.resolve(directory: folder, tokenizer: tok)
                let chat = try ModelChatTemplate.load(directory: folder)
                let rows = try loadInstructionRows(path: data, format: try dataFormat.format(), chat: chat, tokenizer: tok,
                                                   special: special, seqLen: seqLen ?? Int.max, limit: limit)
                if json {
                    let out = rows.map { "{\"ids\":\(Self.idList($0.ids)),\"labels\":\(Self.idList($0.labels))}" }
                    printOut(out.joined(separator: "\n"))
                } else {
                    printOut(Self.humanRows(rows, tok, color: isatty(STDOUT_FILENO) != 0))
                }
            }
        }
    }

    static func idList(_ ids: [Int]) -> String {
        "[" + ids.map(String.init).joined(separator: ",") + "]"
    }

    /// Each row as `spelling(id, label)` tokens, response ones (in the loss) in green on a terminal.
    static func humanRows(_ rows: [TokenizedRow], _ tok: Tokenizer, color: Bool) -> String {
        var out: [String] = []
        for (n, row) in rows.enumerated() {
            let inLoss = row.labels.filter { $0 != -100 }.count
            out.append("row \(n + 1): \(row.ids.count) tokens, \(inLoss) with a label (response and EOS)")
            var line: [String] = []
            for (id, label) in zip(row.ids, row.labels) {
                let item = "\(tok.displayToken(id, quoted: false))(\(id), \(label))"
                line.append(color && label != -100 ? "\u{1B}[32m\(item)\u{1B}[0m" : item)
            }
            out.append(line.joined(separator: " "))
            out.append("")
        }
        if out.last == "" { out.removeLast() }
        return out.joined(separator: "\n")
    }
}
