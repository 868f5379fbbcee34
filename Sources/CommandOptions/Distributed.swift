import ArgumentParser
import Foundation
import ILABLAS
import ILACollective
import ILADiff
import ILAEngine
import ILAMask
import ILAModel

/// `--pipeline P`: the model's blocks split over P consecutive ranks (DESIGN.md section 12).
public struct PipelineOptions: ParsableArguments {
    public init() {}

    @Option(help: ArgumentHelp("Under mpirun: split the model's blocks into P consecutive stages on P ranks (the embedding with the first, the final norm and lm_head with the last), each loading only its own tensors, so a model larger than one machine's memory runs. The job's ranks are P × D: D data-parallel replicas of the pipeline.",
                               valueName: "P"))
    public var pipeline: Int = 1

    @Option(name: .customLong("token-budget"),
            help: ArgumentHelp("Tokens whose activations the engine holds at once (default: as many as fit the memory, at most 4096); a longer row still runs, alone. Under --pipeline a round of 2P micro-batches shares it.",
                               valueName: "N"))
    public var tokenBudget: Int?

    public func validate() throws {
        if pipeline < 1 { throw ValidationError("--pipeline must be at least 1") }
        if let t = tokenBudget, t < 1 { throw ValidationError("--token-budget must be at least 1") }
    }

    /// The memory plan's budget, capped by --token-budget.
    public func tokens(planned: Int) -> Int { min(planned, tokenBudget ?? planned) }
}

/// Joins the job a launcher started (DESIGN.md section 12) and returns its communicator: a single
/// process without mpirun (no MPI library is loaded then). Under mpirun, ranks other than 0
/// print nothing, and each rank runs BLAS and the engine on its share of this host's cores.
/// With `pipeline` P > 1, consecutive groups of P ranks are pipelines.
public func joinJob(pipeline: Int = 1) throws -> Communicator {
    let comm: Communicator
    do { comm = try Collective.world } catch let e as CollectiveError { throw ILAError(e.message) }
    if comm.size > 1 {
        silentOutput = comm.rank != 0
        oneRankOfMany = true
        BLAS.threads = threadsPerProcess()
        // Exiting (MPI_Finalize waits for the other ranks) is not interrupted by the launcher's SIGTERM.
        atexit { endingRankIgnoresSignals() }
    }
    if pipeline > 1 {
        guard let mpi = comm as? MPICommunicator else {
            throw ILAError("--pipeline \(pipeline) needs \(pipeline) ranks or a multiple under mpirun (e.g. mpirun -np \(pipeline) …); this process was started alone")
        }
        do { try mpi.configurePipeline(stages: pipeline) } catch let e as CollectiveError { throw ILAError(e.message) }
    }
    return comm
}

/// Rank 0's value of `body` on every rank (files only rank 0 reads: the resumable state).
public func fromRoot<T: Codable>(_ comm: Communicator, _ body: () throws -> T) throws -> T {
    do { return try Collective.fromRoot(comm, body) } catch is Collective.RootFailed { throw ExitCodeFailure() }
}

/// Runs `body` on every rank when its failure can differ between ranks (a pipeline stage reads
/// its own tensors), and agrees on the outcome: if it failed anywhere, the lowest failing rank
/// prints its error line (whatever its rank) and every rank ends with exit 1.
public func onEveryRank<T>(_ comm: Communicator, _ body: () throws -> T) throws -> T {
    var outcome: Result<T, Error>
    do { outcome = .success(try body()) } catch { outcome = .failure(error) }
    guard comm.size > 1 else { return try outcome.get() }
    var lowest: [Int64] = [0]
    if case .failure = outcome { lowest[0] = Int64(comm.size - comm.rank) }
    try comm.allreduceMax(&lowest)
    guard lowest[0] > 0 else { return try outcome.get() }
    if case .failure(let e) = outcome, comm.size - Int(lowest[0]) == comm.rank {
        if comm.isRoot { throw e }
        let silent = silentOutput
        silentOutput = false
        reportError(ILAError("rank \(comm.rank): " + ((e as? ILAError)?.message ?? "\(e)")))
        silentOutput = silent
    }
    throw ExitCode.failure
}

/// Every rank's `value`, in rank order (one allreduce; a single process: [value]).
public func gatherPerRank(_ value: Int, _ comm: Communicator) throws -> [Int] {
    guard comm.size > 1 else { return [value] }
    var v = [Int64](repeating: Int64.min, count: comm.size)
    v[comm.rank] = Int64(value)
    try comm.allreduceMax(&v)
    return v.map { Int($0) }
}

/// Per-rank figures of a job (`--json`): peak resident bytes, weight bytes held, and the payload
/// bytes each rank gave to collectives and sent to its pipeline neighbours.
public struct RankFigures {
    public var peakResident: [Int]
    public var weights: [Int]
    public var collectiveBytes: [Int]
    public var pipelineBytes: [Int]
    /// Milliseconds in collectives and waiting for pipeline messages.
    public var collectiveMilliseconds: [Int]
    public var receiveMilliseconds: [Int]
    public var stages: Int
    /// Gathers them from every rank (every rank must call it).
    public init(_ engine: TransformerEngine, _ comm: Communicator) throws {
        let traffic = comm.traffic, waiting = comm.waiting
        stages = comm.pipelineStages
        collectiveMilliseconds = try gatherPerRank(Int(waiting.collective * 1000), comm)
        receiveMilliseconds = try gatherPerRank(Int(waiting.receive * 1000), comm)
        collectiveBytes = try gatherPerRank(traffic.collective, comm)
        pipelineBytes = try gatherPerRank(traffic.pointToPoint, comm)
        peakResident = try gatherPerRank(MemoryPlan.peakResidentBytes(), comm)
        weights = try gatherPerRank(engine.weights.bytes, comm)
    }
    /// `--json`'s "mpi" object (nil for a single process).
    public var mpiReport: [String: Any]? {
        guard peakResident.count > 1 else { return nil }
        return ["ranks": peakResident.count, "pipeline_stages": stages, "collective_bytes_per_rank": collectiveBytes,
                "pipeline_bytes_per_rank": pipelineBytes, "collective_ms_per_rank": collectiveMilliseconds,
                "receive_wait_ms_per_rank": receiveMilliseconds]
    }
    /// The figures a report adds: per rank only when there are several.
    public var report: [String: Any] {
        peakResident.count > 1 ? ["peak_rss_bytes_per_rank": peakResident, "weights_bytes_per_rank": weights]
            : ["weights_bytes": weights[0]]
    }
}

/// Ends a rank whose rank 0 already reported the error.
public struct ExitCodeFailure: Error { public init() {} }

/// The pipeline link and part of this rank (nil and the whole model without `--pipeline`).
public func pipelineStage(_ comm: Communicator) -> PipelineLink? {
    comm.pipelineStages > 1 ? PipelineLink(comm: comm) : nil
}

/// The same token budget on every stage of a pipeline (the smallest): they cut the same micro-batches.
public func agreeOnTokenBudget(_ budget: Int, _ comm: Communicator) throws -> Int {
    guard comm.pipelineStages > 1 else { return budget }
    var v: [Int64] = [-Int64(budget)]
    try comm.allreduceMax(&v)
    return Int(-v[0])
}

/// Makes `engine` its rank's pipeline stage (nothing without a link): the stages agree on the
/// token budget and on recomputation (which changes no result, only memory).
public func attach(_ engine: TransformerEngine, to link: PipelineLink?, _ comm: Communicator) throws {
    guard let link else { return }
    engine.pipeline = link
    engine.tokenBudget = try agreeOnTokenBudget(engine.tokenBudget, comm)
    engine.recompute = try comm.any(engine.recompute)
}
