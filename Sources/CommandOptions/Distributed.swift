import Foundation
import ILABLAS
import ILACollective
import ILADiff
import ILAEngine

/// Joins the job a launcher started (DESIGN.md section 12) and returns its communicator: a single
/// process without mpirun (no MPI library is loaded then). Under mpirun, ranks other than 0
/// print nothing, and each rank runs BLAS and the engine on its share of this host's cores.
public func joinJob() throws -> Communicator {
    let comm: Communicator
    do { comm = try Collective.world } catch let e as CollectiveError { throw ILAError(e.message) }
    if comm.size > 1 {
        silentOutput = comm.rank != 0
        BLAS.threads = threadsPerProcess()
    }
    return comm
}

/// Rank 0's value of `body` on every rank (files only rank 0 reads: the resumable state).
public func fromRoot<T: Codable>(_ comm: Communicator, _ body: () throws -> T) throws -> T {
    do { return try Collective.fromRoot(comm, body) } catch is Collective.RootFailed { throw ExitCodeFailure() }
}

/// Ends a rank whose rank 0 already reported the error.
public struct ExitCodeFailure: Error { public init() {} }
