import Foundation
import ILACollective
import ILAEngine
import ILAModel

/// Data parallelism over the ranks of a job (DESIGN.md section 12): each rank runs the engine on
/// its contiguous share of a step's rows and the sums are added with one allreduce, so every rank
/// holds the whole step's Σ NLL, token count, row count and d Σ NLL / dγ.
public enum DataParallel {
    /// The rows of `rows` this rank runs: [r·n/P, (r+1)·n/P) by position in the step, a rule
    /// of the step's rows alone (the same on every rank, whatever the data).
    public static func localRows<T>(_ rows: [T], _ comm: Communicator) -> ArraySlice<T> {
        rows[comm.share(of: rows.count)]
    }

    /// Runs `run` on this rank's share of `rows` (nothing when the share is empty) and adds the
    /// results of every rank. `layers` is the γ count (the gradient's length when `gradient`).
    public static func run(rows: [TokenizedRow], layers: Int, gradient: Bool, comm: Communicator,
                           _ run: ([TokenizedRow]) throws -> EngineResult) throws -> EngineResult {
        let mine = Array(localRows(rows, comm))
        var r = mine.isEmpty
            ? EngineResult(nllSum: 0, tokens: 0, rows: 0, dNllSumDGamma: gradient ? [Double](repeating: 0, count: layers) : [])
            : try run(mine)
        try allreduce(&r, comm)
        return r
    }

    /// Adds every rank's result into `r` (identity in a single process).
    public static func allreduce(_ r: inout EngineResult, _ comm: Communicator) throws {
        guard comm.size > 1 else { return }
        var packed = [r.nllSum, Double(r.tokens), Double(r.rows)] + r.dNllSumDGamma
        try comm.allreduceSum(&packed)
        r.nllSum = packed[0]
        r.tokens = Int(packed[1])
        r.rows = Int(packed[2])
        r.dNllSumDGamma = Array(packed[3...])
    }
}
