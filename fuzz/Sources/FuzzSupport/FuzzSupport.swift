import Foundation

/// Shared pieces of the harnesses: fixture paths, a per-process scratch folder for inputs that
/// must be files, and a reader that turns fuzz bytes into choices.
public enum Fuzz {
    /// The repository's fixtures/ folder.
    public static let fixtures: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures").path

    public static func fixture(_ relative: String) -> String { fixtures + "/" + relative }

    /// A folder private to this process (in /dev/shm when present: inputs are rewritten per run).
    public static let scratch: String = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let dir = "\(base)/ila-fuzz-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: "\(FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory())/ila-fuzz-\(getpid())") }
        return dir
    }()

    /// `relative` inside the scratch folder, its parent folders created.
    public static func path(_ relative: String) -> String {
        let p = scratch + "/" + relative
        let dir = (p as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: dir) {
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        return p
    }

    /// Writes `size` bytes to `relative` in the scratch folder and returns its path.
    @discardableResult
    public static func write(_ data: UnsafePointer<UInt8>?, _ size: Int, to relative: String) -> String {
        let p = path(relative)
        let fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        precondition(fd >= 0, "cannot write \(p)")
        var done = 0
        while done < size, let data {
            let n = Foundation.write(fd, data + done, size - done)
            precondition(n > 0, "cannot write \(p)")
            done += n
        }
        close(fd)
        return p
    }

    /// Copies a fixture into the scratch folder once (e.g. a fixed companion file).
    public static func install(fixture: String, as relative: String) {
        let p = path(relative)
        if FileManager.default.fileExists(atPath: p) { return }
        try? FileManager.default.copyItem(atPath: Self.fixture(fixture), toPath: p)
    }
}

/// Consumes fuzz bytes as choices; once exhausted every choice is 0 (the "valid" default).
public struct FuzzedData {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var i = 0

    public init(_ data: UnsafePointer<UInt8>?, _ size: Int) { bytes = UnsafeBufferPointer(start: data, count: size) }

    public var isEmpty: Bool { i >= bytes.count }

    public mutating func byte() -> UInt8 {
        guard i < bytes.count else { return 0 }
        defer { i += 1 }
        return bytes[i]
    }

    /// 0..<n
    public mutating func choice(_ n: Int) -> Int { n <= 1 ? 0 : Int(byte()) % n }

    public mutating func pick<T>(_ options: [T]) -> T { options[choice(options.count)] }

    public mutating func uint64() -> UInt64 {
        var v: UInt64 = 0
        for _ in 0..<8 { v = v << 8 | UInt64(byte()) }
        return v
    }

    /// An "interesting" integer: small values, boundaries, or raw bytes.
    public mutating func interestingInt() -> Int64 {
        switch choice(12) {
        case 0: return Int64(choice(8))
        case 1: return -1
        case 2: return Int64(Int32.max)
        case 3: return Int64.max
        case 4: return Int64.min
        case 5: return 1 << 31
        case 6: return 1 << 32
        case 7: return 1 << 40
        case 8: return Int64(bitPattern: uint64())
        case 9: return 0
        case 10: return Int64(choice(256)) - 128
        default: return Int64(choice(65536))
        }
    }

    public mutating func interestingDouble() -> Double {
        switch choice(8) {
        case 0: return Double(choice(100)) / 10
        case 1: return .nan
        case 2: return .infinity
        case 3: return -.infinity
        case 4: return -1
        case 5: return 0
        case 6: return Double(bitPattern: uint64())
        default: return 1e300
        }
    }

    /// A short string from the remaining bytes (lossy UTF-8).
    public mutating func string(max: Int = 24) -> String {
        let n = choice(max + 1)
        var b: [UInt8] = []
        for _ in 0..<n { b.append(byte()) }
        return String(decoding: b, as: UTF8.self)
    }
}

/// libFuzzer's entry point for programs that have their own `main` (SwiftPM links every executable
/// with `main` aliased to the target's top-level code, so libFuzzer's own `main` is not used).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

extension Fuzz {
    /// Runs libFuzzer with the process's arguments on `harness` and exits with its status.
    public static func run(_ harness: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, harness))
    }
}
