import Foundation
import ILABLAS

/// Number of worker threads for the engine's own loops (BLAS threads itself).
let engineThreads = max(1, ProcessInfo.processInfo.activeProcessorCount)

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
