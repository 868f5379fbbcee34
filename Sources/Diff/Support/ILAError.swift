import Foundation

/// A user-facing failure: one line naming the file (or tensor/key) and what is wrong.
/// Every command prints `error: <description>` and exits 1 on it.
public struct ILAError: Error, CustomStringConvertible, Equatable, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    /// `<file name>: <problem>` — the shape every error line takes when a file is at fault.
    public init(file: String, _ problem: String) {
        self.message = "\(file): \(problem)"
    }
    public var description: String { message }
}
