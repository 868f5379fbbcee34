import Foundation

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
public final class ProgressBar: @unchecked Sendable {
    private let total: Int
    private let label: String
    private let enabled: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var current = 0

    public init(total: Int, label: String, enabled: Bool = isatty(STDERR_FILENO) != 0) {
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled && !silentOutput
    }

    /// Advances to `done` items; `detail` is shown after the bar (e.g. "nll 1.84").
    public func update(_ done: Int, detail: String = "") {
        current = done
        guard enabled else { return }
        let now = Date()
        if done < total && now.timeIntervalSince(lastDraw) < 0.1 { return }
        lastDraw = now
        let width = 28
        let filled = min(width, width * done / total)
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let elapsed = now.timeIntervalSince(start)
        var eta = ""
        if done > 0 && done < total {
            eta = " eta " + Self.format(elapsed / Double(done) * Double(total - done))
        }
        let line = "\r\(label) \(bar) \(done)/\(total) \(detail)\(eta)\u{1B}[K"
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Clears the line.
    public func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    static func format(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
            : String(format: "%dm%02ds", s / 60, s % 60)
    }
}
