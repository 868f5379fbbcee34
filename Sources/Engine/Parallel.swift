import Foundation
import ILABLAS

/// Number of worker threads for the engine's own loops (BLAS threads itself): the cores this
/// process may use, shared among the ranks an MPI launcher started on this machine (cores per rank).
let engineThreads = threadsPerProcess()

/// Cores divided among the processes of this host that a launcher started
/// (OMPI_COMM_WORLD_LOCAL_SIZE under Open MPI's mpirun; 1 otherwise), at least 1.
public func threadsPerProcess() -> Int {
    let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
    let env = ProcessInfo.processInfo.environment
    guard let text = env["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? env["MPI_LOCALNRANKS"], let local = Int(text), local > 1 else {
        return cores
    }
    // Bound to fewer cores than an even share (mpirun --bind-to core): the binding wins.
    return max(1, min(cores, ProcessInfo.processInfo.processorCount / local))
}

/// Lets a closure that only touches disjoint memory cross into concurrentPerform.
private struct UncheckedSendable<T>: @unchecked Sendable { let value: T }

/// Runs `body` over `0..<n` split into contiguous chunks on all cores. Callers guarantee the
/// chunks write disjoint memory; chunk boundaries depend on n alone, so results do not depend on
/// scheduling.
func parallelFor(_ n: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let chunks = min(engineThreads, max(1, n / max(minChunk, 1)))
    if chunks <= 1 { body(0..<n); return }
    withoutActuallyEscaping(body) { escapable in
        let box = UncheckedSendable(value: escapable)
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            box.value((c * n / chunks)..<((c + 1) * n / chunks))
        }
    }
}
