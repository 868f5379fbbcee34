import ArgumentParser
import Foundation
import ILADiff
import ILAMask

@main
struct ILAMaskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ila-mask",
        abstract: "Learn which layers an alignment used (ILA), and compare, evaluate and export the rankings.",
        subcommands: [LearnCommand.self, EvalCommand.self, CompareCommand.self, ExportCommand.self, BenchCommand.self])

    /// Exit codes of DESIGN.md section 2: usage errors exit 2 (ArgumentParser's own is 64).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// Runs a command body, turning any failure into one `error: …` line and exit code 1.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        reportError(error)
        throw ExitCode.failure
    }
}
