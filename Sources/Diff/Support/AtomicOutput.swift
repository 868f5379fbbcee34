import Foundation

/// Writes an output file atomically: work happens on a temporary sibling
/// (`.<name>.tmp-<pid>`), which is renamed over the destination only on success.
/// A failed or killed run leaves no partial file under the final name.
public struct AtomicOutput: Sendable {
    public let destination: URL
    public let temporary: URL

    /// Checks up front that the destination's folder exists and is writable, so a long run does
    /// not fail at the very end.
    public init(path: String) throws {
        let dest = URL(fileURLWithPath: path)
        let dir = dest.deletingLastPathComponent()
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw ILAError(file: path, "output folder \(dir.path) does not exist")
        }
        if FileManager.default.fileExists(atPath: dest.path, isDirectory: &isDir), isDir.boolValue {
            throw ILAError(file: path, "output path is a directory")
        }
        guard access(dir.path, W_OK) == 0 else {
            throw ILAError(file: path, "output folder \(dir.path) is not writable")
        }
        destination = dest
        temporary = dir.appendingPathComponent(".\(dest.lastPathComponent).tmp-\(getpid())")
    }

    /// Renames the finished temporary file over the destination.
    public func commit() throws {
        if rename(temporary.path, destination.path) != 0 {
            let reason = String(cString: strerror(errno))
            discard()
            throw ILAError(file: destination.path, "cannot write: \(reason)")
        }
    }

    /// Removes the temporary file (after a failure).
    public func discard() {
        unlink(temporary.path)
    }

    /// Writes `data` atomically in one go.
    public static func write(_ data: Data, to path: String) throws {
        let out = try AtomicOutput(path: path)
        do {
            try data.write(to: out.temporary)
        } catch {
            out.discard()
            throw ILAError(file: path, "cannot write: \(error.localizedDescription)")
        }
        try out.commit()
    }
}
