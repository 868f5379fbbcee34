import ArgumentParser
import Foundation
import ILACommandLine
import ILADiff
import ILARanking
import ILATransfer

extension ExportFormat: ExpressibleByArgument {}

@main
struct ILATransferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ila-transfer",
        abstract: "Carry a layer ranking learned on one model over to the layers of another (or the same) model.",
        discussion: """
        RANKING is a ranking.json written by `ila-mask learn` on a source model S. TARGET is a \
        model T: a Hugging Face model directory (model.safetensors or shards with \
        model.safetensors.index.json) or one .safetensors file. T's linear layers come from the \
        tensor names in its safetensors headers; no weights are read, so a 70B target is as quick \
        as a small one.

        Each target layer of block j (of N_T) and kind k takes the score of S's kind-k layers at \
        the same relative depth: p = clamp((j + 0.5)·N_S/N_T − 0.5, 0, N_S − 1), \
        score = (1 − w)·s(⌊p⌋, k) + w·s(⌈p⌉, k) with w = p − ⌊p⌋. With equal block counts \
        (the same model, another data set) this is the identity. The target's layers are then \
        ranked by these scores (ties in canonical order) and the top fraction F selected: the \
        first ⌊F·N + 0.5⌋ layers, at least 1.

        Without -o the selected layers are printed as a table (--json: the selection as JSON, \
        --all: every layer). With -o the selection is written, atomically, in the --format of \
        `ila-mask export` (default json). --explain shows, for each target block, which source \
        blocks and weights produced its scores.

        Examples:
          ila-transfer ranking.json llama-70b/ --top 0.25
          ila-transfer ranking.json llama-70b/ --top 0.25 --explain
          ila-transfer ranking.json llama-70b/ --top 0.25 --all
          ila-transfer ranking.json llama-70b/ --top 0.25 --format peft -o lora.json
          ila-transfer ranking.json llama-70b/ --top 0.25 --format peft --lora-r 8 \\
              --lora-alpha 16 -o adapter_config.json
          ila-transfer ranking.json llama-70b/ --top 0.3 --format axolotl -o a.yaml
          ila-transfer ranking.json model.safetensors --top 0.5 --format svg -o f.svg
          ila-transfer ranking.json same-model/ --top 0.75   # equal depth: identity
        """)

    @Argument(help: ArgumentHelp("The source model's ranking.json (from `ila-mask learn`).",
                                 valueName: "ranking"))
    var ranking: String

    @Argument(help: ArgumentHelp("The target model: a model directory or a .safetensors file (e.g. llama-70b/).",
                                 valueName: "target"))
    var target: String

    @Option(help: ArgumentHelp("Fraction of the target's layers to select, 0 < F ≤ 1 (e.g. --top 0.25: the best quarter).",
                               valueName: "F"))
    var top: Double

    @Option(help: ArgumentHelp("""
        Output format with -o (default json): json, csv, peft (adapter_config.json fragment), axolotl \
        (unfrozen_parameters YAML), llama-factory (YAML note), freeze (parameters to freeze), svg \
        (the figure). Without -o the export is printed to stdout. E.g. --format peft -o adapter_config.json
        """, valueName: "format"))
    var format: ExportFormat?

    @Option(name: .shortAndLong, help: ArgumentHelp("Write the selection here, atomically (e.g. -o selection.json).",
                                                     valueName: "file"))
    var output: String?

    @Flag(help: "Print the selection as JSON: the json export plus a \"transfer\" object with the block map (with --explain also each layer's sources).")
    var json = false

    @Flag(help: "Show, for each target block, which source blocks and weights produced its scores (e.g. --top 0.25 --explain).")
    var explain = false

    @Flag(help: "List every target layer in the table, not just the selected ones.")
    var all = false

    @Option(name: .customLong("lora-r"), help: ArgumentHelp("LoRA rank r written by --format peft (e.g. --lora-r 8).", valueName: "r"))
    var loraR: Int = ExportOptions().loraR

    @Option(name: .customLong("lora-alpha"), help: ArgumentHelp("LoRA alpha written by --format peft (e.g. --lora-alpha 16).", valueName: "alpha"))
    var loraAlpha: Int = ExportOptions().loraAlpha

    @Option(help: ArgumentHelp("Title of the --format svg figure (default names the top fraction and the source).", valueName: "text"))
    var title: String?

    static func main() { mainWithDesignExitCodes() }

    func validate() throws {
        guard top.isFinite, top > 0, top <= 1 else { throw ValidationError("--top must be a fraction in (0, 1], got \(top)") }
        guard loraR >= 1 else { throw ValidationError("--lora-r must be a positive integer") }
        guard loraAlpha >= 1 else { throw ValidationError("--lora-alpha must be a positive integer") }
        if let output, output.isEmpty { throw ValidationError("--output must not be empty") }
        if output == nil, format != nil, json || explain || all {
            throw ValidationError("--format without -o prints the export itself; add -o FILE to combine it with --json, --explain or --all")
        }
    }

    func run() throws {
        try runReportingErrors(transfer)
    }

    var exportOptions: ExportOptions { ExportOptions(loraR: loraR, loraAlpha: loraAlpha, title: title) }

    func transfer() throws {
        if let output { try AtomicOutput(path: output).discard() }   // fail early on an unwritable destination
        let t = try RankingTransfer.load(rankingPath: ranking, targetPath: target)
        let selection = t.selection(top: top)

        if let output {
            let fmt = format ?? .json
            let data = try SelectionExporter.render(selection, format: fmt, options: exportOptions)
            // Everything that can fail happens before the file is written.
            let report = json
                ? try TransferReport.json(t, selection, exportOptions, details: explain)
                : TransferReport.headline(t, selection) + "\nwrote \(fmt.rawValue) to \(output)"
                    + (explain ? "\n\n" + TransferReport.explanation(t, selection) : "")
            try AtomicOutput.write(data, to: output)
            printOut(report)
        } else if let format {
            let data = try SelectionExporter.render(selection, format: format, options: exportOptions)
            FileHandle.standardOutput.write(data)
        } else if json {
            printOut(try TransferReport.json(t, selection, exportOptions, details: explain))
        } else {
            printOut(TransferReport.headline(t, selection) + "\n\n" + TransferReport.table(t, selection, all: all))
            if explain { printOut("\n" + TransferReport.explanation(t, selection)) }
        }
    }
}
