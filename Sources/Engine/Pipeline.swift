import Foundation
import ILACollective
import ILAModel

/// One pipeline stage's link to its neighbours (DESIGN.md section 12): stage s of a pipeline is
/// rank r of the job, s − 1 is r − 1 and s + 1 is r + 1. Forward, each micro-batch's residual
/// stream [T, H] goes from a stage to the next; backward, its gradient [T, H] comes back.
/// Sends are non-blocking (a stage goes on to its next micro-batch while the last one travels);
/// receives block. Every stage runs the same micro-batches in the same order, so each message is
/// matched by its order alone.
public final class PipelineLink {
    public let comm: Communicator
    public let stage: Int
    public let stages: Int
    /// Sends in flight (each owns its copy); at most `window` of them.
    private var pending: [PendingSend] = []
    private let window = 4

    static let activationTag = 11
    static let gradientTag = 12

    public init(comm: Communicator) {
        self.comm = comm
        stage = comm.stage
        stages = comm.pipelineStages
    }

    /// The part of `spec` this stage runs.
    public func part(of spec: TransformerSpec) -> ModelPart { ModelPart.stage(stage, of: stages, spec: spec) }

    var previous: Int { comm.rank - 1 }
    var next: Int { comm.rank + 1 }

    func send(_ values: UnsafePointer<Float>, count: Int, to rank: Int, tag: Int) throws {
        progress()
        while pending.count >= window { try pending.removeFirst().wait() }
        pending.append(try comm.send(UnsafeBufferPointer(start: values, count: count), to: rank, tag: tag))
    }

    func receive(_ values: UnsafeMutablePointer<Float>, count: Int, from rank: Int, tag: Int) throws {
        try comm.receive(into: UnsafeMutableBufferPointer(start: values, count: count), from: rank, tag: tag)
    }

    /// Lets MPI move the sends in flight along (it progresses only inside its calls) and drops
    /// the finished ones.
    func progress() {
        if !pending.isEmpty { pending.removeAll { $0.test() } }
    }

    /// Waits until every send has been delivered.
    func finish() throws {
        for s in pending { try s.wait() }
        pending.removeAll()
    }
}
