import Foundation

/// Writes an output file atomically: work happens on a temporary sibling
/// (`.<name>.tmp-<pid>`), which is renamed over the destination only on success.
/// A failed or killed run leaves no partial file under the final name: the destination holds
/// either nothing or the previous complete file. A temporary left by a killed run (SIGKILL cannot
/// be caught) is removed by the next run writing the same destination; with
/// `installInterruptCleanup()`, SIGINT/SIGTERM/SIGHUP remove it at once.
public struct AtomicOutput: Sendable {
    public let destination: URL
    public let temporary: URL

    /// Checks up front that the destination's folder exists and is writable, so a long run does
    /// not fail at the very end, and removes stale temporaries of this destination.
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
        temporary = dir.appendingPathComponent(Self.temporaryPrefix(dest.lastPathComponent) + "\(getpid())")
        Self.removeStaleTemporaries(of: dest)
        InterruptCleanup.register(temporary.path)
    }

    static func temporaryPrefix(_ name: String) -> String { ".\(name).tmp-" }

    /// Deletes `.<name>.tmp-<pid>` siblings whose process no longer runs (a killed earlier run).
    /// Temporaries of live processes are left alone: another run may be writing the same file.
    static func removeStaleTemporaries(of dest: URL) {
        let dir = dest.deletingLastPathComponent()
        let prefix = temporaryPrefix(dest.lastPathComponent)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { return }
        for name in names where name.hasPrefix(prefix) {
            guard let pid = pid_t(name.dropFirst(prefix.count)), pid > 0 else { continue }
            let dead = pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH)
            if dead { unlink(dir.appendingPathComponent(name).path) }
        }
    }

    /// Renames the finished temporary file over the destination.
    public func commit() throws {
        defer { InterruptCleanup.unregister(temporary.path) }
        if rename(temporary.path, destination.path) != 0 {
            let reason = String(cString: strerror(errno))
            discard()
            throw ILAError(file: destination.path, "cannot write: \(reason)")
        }
    }

    /// Removes the temporary file (after a failure).
    public func discard() {
        unlink(temporary.path)
        InterruptCleanup.unregister(temporary.path)
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

    /// Makes SIGINT, SIGTERM and SIGHUP delete every temporary in progress, print
    /// `error: interrupted (SIGINT); no output written` (or the like) and exit 1. For commands without their
    /// own interrupt handling (ila-diff, ila-transfer, ila-mask export); `learn` saves its state
    /// instead.
    public static func installInterruptCleanup() {
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, interruptHandler)
        }
    }
}

/// Temporaries currently being written, as C strings in fixed slots so that a signal handler can
/// read them without allocating or locking.
enum InterruptCleanup {
    static let capacity = 32
    nonisolated(unsafe) static let slots: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
        p.initialize(repeating: nil, count: capacity)
        return p
    }()
    static let lock = NSLock()

    static func register(_ path: String) {
        lock.lock()
        defer { lock.unlock() }
        for i in 0..<capacity where slots[i] == nil {
            slots[i] = strdup(path)
            return
        }
    }

    static func unregister(_ path: String) {
        lock.lock()
        defer { lock.unlock() }
        for i in 0..<capacity {
            if let p = slots[i], strcmp(p, path) == 0 {
                slots[i] = nil
                free(p)
                return
            }
        }
    }
}

private func interruptHandler(_ sig: Int32) {
    // Async-signal-safe only: unlink, write, _exit (no allocation).
    for i in 0..<InterruptCleanup.capacity {
        if let p = InterruptCleanup.slots[i] { unlink(p) }
    }
    let line: StaticString
    switch sig {
    case SIGINT: line = "error: interrupted (SIGINT); no output written\n"
    case SIGTERM: line = "error: terminated (SIGTERM); no output written\n"
    default: line = "error: hung up (SIGHUP); no output written\n"
    }
    _ = Foundation.write(2, line.utf8Start, line.utf8CodeUnitCount)
    _exit(1)
}
