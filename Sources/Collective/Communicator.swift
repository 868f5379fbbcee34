import CMPI
import Foundation

/// What a command that runs the model needs from the other processes of its job (DESIGN.md
/// section 12): who it is, how many there are, sums, broadcasts and a barrier. Started without a
/// launcher, `Collective.world` is `SingleProcess` (rank 0 of 1; every operation the identity);
/// started under `mpirun` it is the MPI job. Every rank must call the same operations in the
/// same order with the same counts.
public protocol Communicator: AnyObject, Sendable {
    var rank: Int { get }
    var size: Int { get }
    /// Element-wise sum over the ranks, in place (every rank ends with the same values).
    func allreduceSum(_ values: inout [Double]) throws
    func allreduceSum(_ values: inout [Float]) throws
    /// Element-wise maximum over the ranks, in place.
    func allreduceMax(_ values: inout [Int64]) throws
    /// Root's bytes to every rank (counts must agree).
    func broadcast(_ bytes: inout [UInt8], root: Int) throws
    func barrier() throws
    /// Starts sending a copy of `values` to rank `to` (pipeline stages); the copy lives in the
    /// returned request until it completes.
    func send(_ values: UnsafeBufferPointer<Float>, to: Int, tag: Int) throws -> PendingSend
    /// Receives exactly `into.count` floats from rank `from`.
    func receive(into: UnsafeMutableBufferPointer<Float>, from: Int, tag: Int) throws
    /// Consecutive ranks that form one pipeline (`--pipeline P`; 1: every rank holds the whole model).
    var pipelineStages: Int { get }
    /// Payload bytes this rank has given to collectives and sent to its pipeline neighbours.
    var traffic: (collective: Int, pointToPoint: Int) { get }
    /// Seconds this rank spent inside collectives and waiting for its neighbours' messages
    /// (transfer plus waiting for slower ranks: what is not compute).
    var waiting: (collective: Double, receive: Double) { get }
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    /// Root's doubles to every rank.
    public func broadcast(_ values: inout [Double], root: Int) throws {
        var bytes = values.withUnsafeBytes { [UInt8]($0) }
        try broadcast(&bytes, root: root)
        values = bytes.withUnsafeBytes { raw in Array(raw.bindMemory(to: Double.self)) }
    }

    /// Whether any rank says true (e.g. "a stop signal arrived"), the same answer everywhere.
    public func any(_ flag: Bool) throws -> Bool {
        if size == 1 { return flag }
        var v: [Int64] = [flag ? 1 : 0]
        try allreduceMax(&v)
        return v[0] != 0
    }

    /// This rank's share of `count` items: the contiguous range [d·n/D, (d+1)·n/D) of its
    /// replica d of D (D = ranks / pipeline stages; every stage of a pipeline runs the same rows).
    /// It depends on the count, the rank and the number of ranks alone, so every rank knows every share.
    public func share(of count: Int) -> Range<Int> { Collective.share(of: count, rank: replica, size: replicas) }

    /// Pipeline layout: rank = replica · P + stage, so a pipeline's stages are consecutive ranks.
    public var stage: Int { rank % pipelineStages }
    public var replica: Int { rank / pipelineStages }
    public var replicas: Int { size / pipelineStages }
}

/// A send in flight: the copy of the values it owns and MPI's requests (one per 2^30 floats).
public final class PendingSend {
    private let buffer: UnsafeMutableBufferPointer<Float>
    private var requests: [UnsafeMutableRawPointer?]
    public let bytes: Int

    init(copying values: UnsafeBufferPointer<Float>, start: (UnsafePointer<Float>, inout [UnsafeMutableRawPointer?]) -> Int32) throws {
        buffer = .allocate(capacity: max(values.count, 1))
        if let base = values.baseAddress { buffer.baseAddress!.update(from: base, count: values.count) }
        bytes = 4 * values.count
        requests = [UnsafeMutableRawPointer?](repeating: nil, count: values.count / (1 << 30) + 1)
        let rc = start(UnsafePointer(buffer.baseAddress!), &requests)
        if rc != 0 {
            for i in requests.indices { _ = ila_mpi_wait(&requests[i]) }
            buffer.deallocate()
            throw CollectiveError("MPI_Isend failed (MPI error \(rc))")
        }
    }

    /// Whether it has completed; also lets MPI move it along while the caller computes.
    public func test() -> Bool {
        var all = true
        for i in requests.indices where requests[i] != nil {
            var done: Int32 = 0
            if ila_mpi_test(&requests[i], &done) != 0 || done == 0 { all = false }
        }
        return all
    }

    public func wait() throws {
        for i in requests.indices where requests[i] != nil {
            let rc = ila_mpi_wait(&requests[i])
            if rc != 0 { throw CollectiveError("MPI_Wait failed (MPI error \(rc))") }
        }
    }

    deinit {
        // The buffer must outlive the transfer.
        for i in requests.indices where requests[i] != nil { _ = ila_mpi_wait(&requests[i]) }
        buffer.deallocate()
    }
}

public struct CollectiveError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(_ message: String) { self.message = message }
}

public enum Collective {
    /// The job this process belongs to: MPI when a launcher started it, a single process otherwise.
    /// Initialised on first use; `MPI_Finalize` runs at exit.
    public static var world: Communicator {
        get throws {
            switch worldResult {
            case .success(let c): return c
            case .failure(let e): throw e
            }
        }
    }

    /// The world when it could be set up, else a single process (for code that only asks the rank).
    public static var worldOrSingle: Communicator { (try? world) ?? SingleProcess.shared }

    /// Whether an MPI launcher started this process (the environment says so).
    public static var launched: Bool { ila_mpi_launched() != 0 }

    /// Under a launcher, leaves a small supervisor process between mpirun and the rank's work
    /// (`ila_supervise_rank`): a rank killed by a signal ends the job with exit 1 and one line
    /// naming it. Call first thing in main; without a launcher it does nothing.
    public static func superviseRank() { ila_supervise_rank(CommandLine.argc, CommandLine.unsafeArgv) }

    private static let worldResult: Result<Communicator, CollectiveError> = {
        guard launched else { return .success(SingleProcess.shared) }
        do { return .success(try MPICommunicator()) } catch let e as CollectiveError { return .failure(e) } catch {
            return .failure(CollectiveError("\(error)"))
        }
    }()

    /// Items [r·n/P, (r+1)·n/P) of `count` for rank r of P.
    public static func share(of count: Int, rank: Int, size: Int) -> Range<Int> {
        precondition(size >= 1 && rank >= 0 && rank < size)
        return (rank * count / size)..<((rank + 1) * count / size)
    }
}

/// One process: rank 0 of 1; sums, broadcasts and barriers leave everything as it is.
public final class SingleProcess: Communicator {
    public static let shared = SingleProcess()
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ values: inout [Double]) throws {}
    public func allreduceSum(_ values: inout [Float]) throws {}
    public func allreduceMax(_ values: inout [Int64]) throws {}
    public func broadcast(_ bytes: inout [UInt8], root: Int) throws {}
    public func barrier() throws {}
    public var pipelineStages: Int { 1 }
    public var traffic: (collective: Int, pointToPoint: Int) { (0, 0) }
    public var waiting: (collective: Double, receive: Double) { (0, 0) }
    public func send(_ values: UnsafeBufferPointer<Float>, to: Int, tag: Int) throws -> PendingSend {
        throw CollectiveError("a single process has no rank \(to) to send to")
    }
    public func receive(into: UnsafeMutableBufferPointer<Float>, from: Int, tag: Int) throws {
        throw CollectiveError("a single process has no rank \(from) to receive from")
    }
}

/// MPI_COMM_WORLD through the CMPI shim (libmpi loaded at run time).
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    /// Bytes this process sent into collectives (payload, not MPI's own traffic).
    nonisolated(unsafe) public private(set) var bytesReduced: Int = 0

    init() throws {
        var err = [CChar](repeating: 0, count: 512)
        let rc = ila_mpi_init(&err, Int32(err.count))
        guard rc == 0 else { throw CollectiveError(cText(err)) }
        var r: Int32 = 0, s: Int32 = 0
        guard ila_mpi_rank(&r) == 0, ila_mpi_size(&s) == 0 else { throw CollectiveError("MPI_Comm_rank/size failed") }
        rank = Int(r)
        size = Int(s)
        atexit { _ = ila_mpi_finalize() }
    }

    private func check(_ rc: Int32, _ what: String) throws {
        if rc != 0 { throw CollectiveError("\(what) failed (MPI error \(rc)) on rank \(rank)") }
    }

    public func allreduceSum(_ values: inout [Double]) throws {
        bytesReduced += values.count * 8
        let n = Int64(values.count)
        try check(timed(&collectiveSeconds) { values.withUnsafeMutableBufferPointer { ila_mpi_allreduce_sum_double($0.baseAddress, n) } },
                  "MPI_Allreduce")
    }

    public func allreduceSum(_ values: inout [Float]) throws {
        bytesReduced += values.count * 4
        let n = Int64(values.count)
        try check(timed(&collectiveSeconds) { values.withUnsafeMutableBufferPointer { ila_mpi_allreduce_sum_float($0.baseAddress, n) } },
                  "MPI_Allreduce")
    }

    public func allreduceMax(_ values: inout [Int64]) throws {
        bytesReduced += values.count * 8
        let n = Int64(values.count)
        try check(timed(&collectiveSeconds) { values.withUnsafeMutableBufferPointer { ila_mpi_allreduce_max_int64($0.baseAddress, n) } },
                  "MPI_Allreduce")
    }

    public func broadcast(_ bytes: inout [UInt8], root: Int) throws {
        bytesReduced += bytes.count
        let n = Int64(bytes.count)
        try check(timed(&collectiveSeconds) { bytes.withUnsafeMutableBufferPointer { ila_mpi_bcast_bytes($0.baseAddress, n, Int32(root)) } },
                  "MPI_Bcast")
    }

    public func barrier() throws { try check(ila_mpi_barrier(), "MPI_Barrier") }

    nonisolated(unsafe) public private(set) var pipelineStages = 1
    /// Bytes this process sent to its pipeline neighbours.
    nonisolated(unsafe) public private(set) var bytesSent: Int = 0
    public var traffic: (collective: Int, pointToPoint: Int) { (bytesReduced, bytesSent) }
    nonisolated(unsafe) private var collectiveSeconds = 0.0, receiveSeconds = 0.0
    public var waiting: (collective: Double, receive: Double) { (collectiveSeconds, receiveSeconds) }

    /// Runs an MPI call, adding its duration to `seconds`.
    private func timed(_ seconds: inout Double, _ body: () -> Int32) -> Int32 {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let rc = body()
        seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return rc
    }

    /// Makes consecutive groups of `stages` ranks pipelines (the job's size must be a multiple).
    public func configurePipeline(stages: Int) throws {
        guard stages >= 1, size % stages == 0 else {
            throw CollectiveError("--pipeline \(stages) does not divide the job's \(size) ranks (ranks = pipeline stages × data-parallel replicas)")
        }
        pipelineStages = stages
    }

    public func send(_ values: UnsafeBufferPointer<Float>, to: Int, tag: Int) throws -> PendingSend {
        bytesSent += 4 * values.count
        let n = Int64(values.count), max = Int32(values.count / (1 << 30) + 1)
        return try PendingSend(copying: values) { p, requests in
            requests.withUnsafeMutableBufferPointer { ila_mpi_isend_float(p, n, Int32(to), Int32(tag), $0.baseAddress, max) }
        }
    }

    public func receive(into: UnsafeMutableBufferPointer<Float>, from: Int, tag: Int) throws {
        try check(timed(&receiveSeconds) { ila_mpi_recv_float(into.baseAddress, Int64(into.count), Int32(from), Int32(tag)) },
                  "MPI_Recv from rank \(from)")
    }

    /// Ends every rank of the job (MPI_Abort).
    public func abort(code: Int32) -> Never {
        ila_mpi_abort(code)
        exit(code)
    }

    /// "Open MPI v4.1.4, ..." of the loaded library.
    public var libraryVersion: String {
        var buf = [CChar](repeating: 0, count: 512)
        return ila_mpi_library_version(&buf, Int32(buf.count)) == 0 ? cText(buf) : "unknown"
    }
}

extension Collective {
    /// Ranks the launcher started on this host (OMPI_COMM_WORLD_LOCAL_SIZE; 1 without a launcher).
    public static var localSize: Int {
        let env = ProcessInfo.processInfo.environment
        return max(1, Int(env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? env["MPI_LOCALNRANKS"] ?? "") ?? 1)
    }

    /// Runs `body` on rank 0 alone and gives its value to every rank (JSON over a broadcast). When
    /// rank 0 fails, its error is rethrown there and every other rank throws `RootFailed`, so the
    /// whole job ends the same way (rank 0 prints the one error line).
    public static func fromRoot<T: Codable>(_ comm: Communicator, _ body: () throws -> T) throws -> T {
        if comm.size == 1 { return try body() }
        var outcome: Result<T, Error> = .failure(RootFailed())
        var bytes: [UInt8] = []
        if comm.isRoot {
            do {
                let v = try body()
                bytes = [UInt8](try JSONEncoder().encode(v))
                outcome = .success(v)
            } catch { outcome = .failure(error) }
        }
        var length: [Int64] = [comm.isRoot && outcome.isSuccess ? Int64(bytes.count) : -1]
        try comm.allreduceMax(&length)
        if length[0] < 0 {
            if case .failure(let e) = outcome { throw e }
            throw RootFailed()
        }
        if !comm.isRoot { bytes = [UInt8](repeating: 0, count: Int(length[0])) }
        try comm.broadcast(&bytes, root: 0)
        if comm.isRoot { return try outcome.get() }
        return try JSONDecoder().decode(T.self, from: Data(bytes))
    }

    /// What ranks other than 0 throw when rank 0 failed in `fromRoot` (rank 0 reports the error).
    public struct RootFailed: Error, CustomStringConvertible {
        public init() {}
        public var description: String { "rank 0 failed" }
    }
}

extension Result {
    fileprivate var isSuccess: Bool { if case .success = self { return true } else { return false } }
}

/// A NUL-terminated C buffer as text.
private func cText(_ buf: [CChar]) -> String {
    String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
