import ArgumentParser
import Foundation
import ILADiff

/// What the three commands share: DESIGN.md section 2's exit codes and one-line errors.
extension ParsableCommand {
    /// Parses the arguments and runs the command. Exit codes: 0 success (and --help), 1 a
    /// runtime or data error, 2 a usage error (ArgumentParser's own code for those is 64).
    /// With `cleanUpOnInterrupt`, SIGINT/SIGTERM/SIGHUP remove the temporary output file.
    public static func mainWithDesignExitCodes(cleanUpOnInterrupt: Bool = true) {
        if cleanUpOnInterrupt { AtomicOutput.installInterruptCleanup() }
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
public func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        endingRankIgnoresSignals()
        throw e
    } catch {
        endingRankIgnoresSignals()
        reportError(error)
        throw ExitCode.failure
    }
}
