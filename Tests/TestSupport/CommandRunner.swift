import Foundation
import XCTest

/// Paths of the repository, its fixtures and the optional shared test bed.
public enum RepoPaths {
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    public static var fixtures: URL { root.appendingPathComponent("fixtures") }
    /// ../shared/testbed beside the repository, or nil when absent.
    public static var sharedTestbed: URL? {
        let p = root.deletingLastPathComponent().appendingPathComponent("shared/testbed")
        return FileManager.default.fileExists(atPath: p.path) ? p : nil
    }
}

/// What a finished command printed and returned.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var stderrLines: [String] { stderr.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
    /// Lines starting `error:` (ours) or `Error:` (the argument parser's usage errors).
    public var errorLines: [String] { stderrLines.filter { $0.lowercased().hasPrefix("error:") } }
}

/// Runs the project's built executables (`ila-diff`, `ila-mask`, `ila-transfer`).
public enum CommandRunner {
    /// The executable built beside the test bundle (the build products directory).
    public static func binary(_ name: String) throws -> String {
        var candidates: [URL] = []
        for b in Bundle.allBundles {
            candidates.append(b.bundleURL.deletingLastPathComponent().appendingPathComponent(name))
        }
        candidates.append(RepoPaths.root.appendingPathComponent(".build/debug/\(name)"))
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) { return found.path }
        XCTFail("\(name) is not built (run `swift build`); looked in \(candidates.map(\.path))")
        throw CommandRunnerError.missing(name)
    }

    enum CommandRunnerError: Error { case missing(String) }

    /// Starts `name args`; stdout and stderr go to files so large output cannot block.
    public static func start(_ name: String, _ args: [String]) throws -> (Process, URL, URL) {
        try start(executable: try binary(name), args)
    }

    /// Starts any executable the same way (environment: the test runner's unless given).
    public static func start(executable: String, _ args: [String], environment: [String: String]? = nil) throws -> (Process, URL, URL) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        if let environment { p.environment = environment }
        let tmp = FileManager.default.temporaryDirectory
        let out = tmp.appendingPathComponent("ila-out-\(UUID().uuidString)")
        let err = tmp.appendingPathComponent("ila-err-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return (p, out, err)
    }

    /// Collects a started process's result and removes its output files.
    public static func finish(_ started: (Process, URL, URL)) -> CommandResult {
        let (p, out, err) = started
        p.waitUntilExit()
        defer { try? FileManager.default.removeItem(at: out); try? FileManager.default.removeItem(at: err) }
        return CommandResult(status: p.terminationStatus,
                             stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                             stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    }

    /// Runs `name args` to the end.
    public static func run(_ name: String, _ args: [String]) throws -> CommandResult {
        finish(try start(name, args))
    }
}

/// A fresh folder under the system temporary directory, removed by `remove()` or on deinit.
public final class TempDir {
    public let url: URL
    public init(_ label: String = "ila-tests") {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(label)-\(getpid())-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    public func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    /// A subfolder, created.
    public func sub(_ name: String) -> URL {
        let u = url.appendingPathComponent(name)
        try? FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        return u
    }
    /// Names in the folder (or a subfolder), hidden ones included, sorted.
    public func contents(_ sub: String? = nil) -> [String] {
        let u = sub.map { url.appendingPathComponent($0) } ?? url
        return ((try? FileManager.default.contentsOfDirectory(atPath: u.path)) ?? []).sorted()
    }
    public func remove() { try? FileManager.default.removeItem(at: url) }
    deinit { remove() }
}
