import ArgumentParser
import Foundation
import ILACommandLine
import ILACommandOptions
import ILADiff
import ILAMask
import ILAModel
import ILAEngine
import ILARanking

extension ExportFormat: ExpressibleByArgument {}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Turn a ranking's top layers into a fine-tuning plan or a figure.",
        discussion: """
        Formats:
          json           every layer: name, block, kind, score, gamma, rank, selected
          csv            the same columns as json
          peft           adapter_config.json fragment: target_modules is one regex
                         that re.fullmatches exactly the selected modules
          axolotl        YAML unfrozen_parameters, one ^<layer>\\.weight$ per layer
          llama-factory  YAML: closest freeze-mode setting + the exact list (its
                         freeze mode cannot express arbitrary layer sets)
          freeze         JSON list of the parameters to set requires_grad=False
          svg            figure: blocks x kinds coloured by score, selected outlined

        The output is written atomically: after an error no file is left behind.

        Examples:
          ila-mask export ranking.json --top 0.3 --format peft -o adapter_config.json
          ila-mask export ranking.json --top 0.3 --format peft --lora-r 8 \\
              --lora-alpha 16 -o adapter_config.json
          ila-mask export ranking.json --top 0.75 --format svg -o figure1.svg
          ila-mask export ranking.json --top 0.25 --format axolotl -o unfrozen.yaml
        """)

    @Argument(help: ArgumentHelp("A ranking.json from `ila-mask learn`.", valueName: "ranking"))
    var ranking: String

    @Option(help: "Fraction of layers to select (most important first), in (0, 1]. Example: --top 0.3")
    var top: Double

    @Option(help: ArgumentHelp("Output format. Example: --format peft", valueName: "format"))
    var format: ExportFormat

    @Option(name: .shortAndLong, help: ArgumentHelp("The file to write. Example: -o adapter_config.json", valueName: "file"))
    var output: String

    @Option(name: .customLong("lora-r"), help: "peft: LoRA rank r. Example: --lora-r 8")
    var loraR: Int = 16

    @Option(name: .customLong("lora-alpha"), help: "peft: LoRA alpha. Example: --lora-alpha 16")
    var loraAlpha: Int = 32

    @Option(help: "svg: the figure's title (default names the top fraction and the ranking). Example: --title \"Llama-2 7B, Alpaca\"")
    var title: String?

    func validate() throws {
        if !(top > 0 && top <= 1) { throw ValidationError("--top must be in (0, 1], got \(top)") }
        if loraR < 1 { throw ValidationError("--lora-r must be at least 1") }
        if loraAlpha < 1 { throw ValidationError("--lora-alpha must be at least 1") }
        if output.isEmpty { throw ValidationError("-o needs a file name") }
    }

    func run() throws {
        try runReportingErrors {
            let r = try Ranking.load(path: ranking)
            let selection = Selection(ranking: r, top: top, source: ranking)
            let data = try SelectionExporter.render(selection, format: format,
                                                    options: ExportOptions(loraR: loraR, loraAlpha: loraAlpha, title: title))
            try AtomicOutput.write(data, to: output)
            let n = selection.selectedNames.count
            FileHandle.standardError.write(Data("wrote \(output): \(format.rawValue), \(n) of \(selection.layers.count) layers selected\n".utf8))
        }
    }
}
