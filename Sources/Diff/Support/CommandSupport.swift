import Foundation

/// Set on the ranks other than 0 of an MPI job: only rank 0 prints (results, progress, error lines).
nonisolated(unsafe) public var silentOutput = false

/// Set when the process is one rank of several (under mpirun).
nonisolated(unsafe) public var oneRankOfMany = false

/// A rank that is about to exit: the launcher's SIGTERM to the job's other ranks (sent as soon as
/// one rank exits with an error) must not turn their own exit into a second error line.
public func endingRankIgnoresSignals() {
    guard oneRankOfMany else { return }
    signal(SIGTERM, SIG_IGN)
    signal(SIGINT, SIG_IGN)
    signal(SIGHUP, SIG_IGN)
}

/// Prints a failure as the single line `error: …` on stderr.
public func reportError(_ error: Error) {
    if silentOutput { return }
    let text: String
    if let e = error as? ILAError { text = e.message } else { text = String(describing: error) }
    let line = "error: " + text.replacingOccurrences(of: "\n", with: " ") + "\n"
    FileHandle.standardError.write(Data(line.utf8))
}

/// Writes text to stdout without buffering surprises at exit.
public func printOut(_ text: String) {
    if silentOutput { return }
    FileHandle.standardOutput.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

/// Pretty-printed, key-sorted JSON for `--json` output.
public func jsonText(_ object: Any) throws -> String {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    return String(decoding: data, as: UTF8.self)
}

/// Renders rows as an aligned text table; columns whose header starts with a space are right-aligned.
public func renderTable(header: [String], rows: [[String]]) -> String {
    var widths = header.map { $0.trimmingCharacters(in: .whitespaces).count }
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            let pad = String(repeating: " ", count: max(0, widths[i] - c.count))
            return header[i].hasPrefix(" ") ? pad + c : c + pad
        }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
    }
    var out = [line(header.map { $0.trimmingCharacters(in: .whitespaces) })]
    out.append(widths.map { String(repeating: "─", count: $0) }.joined(separator: "  "))
    out += rows.map(line)
    return out.joined(separator: "\n")
}
