import ArgumentParser
import Foundation
import ILACommandLine
import ILACommandOptions
import ILADiff
import ILAMask
import ILAModel
import ILAEngine
import ILARanking
import ILACollective

@main
struct ILAMaskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ila-mask",
        abstract: "Learn which layers an alignment used (ILA), and compare, evaluate and export the rankings.",
        subcommands: [LearnCommand.self, EvalCommand.self, CompareCommand.self, ExportCommand.self, BenchCommand.self,
                      TokenizeCommand.self, ScoreCommand.self, SelectReportCommand.self])

    static func main() {
        Collective.superviseRank()
        mainWithDesignExitCodes()
    }
}
