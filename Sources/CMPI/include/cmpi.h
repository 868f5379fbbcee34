#ifndef ILA_CMPI_H
#define ILA_CMPI_H
#include <stdint.h>

// A small C face of Open MPI (Debian's libopenmpi-dev / openmpi-bin). MPI's handles and constants
// (MPI_COMM_WORLD, MPI_DOUBLE, MPI_SUM, MPI_IN_PLACE) are macros over library globals, which Swift
// cannot import; this shim keeps them on the C side. libmpi is not linked: it is loaded with
// dlopen by ila_mpi_init, which the tools call only when a launcher started them
// (ila_mpi_launched), so a run without mpirun neither needs the library nor pays its start-up.
// Every function returns 0 on success, otherwise an MPI error code (or -1: not initialised).

/// 1 when the environment says an MPI launcher (Open MPI's mpirun / prterun, or a PMIx/PMI
/// launcher such as srun) started this process, else 0.
int ila_mpi_launched(void);

/// Under a launcher (and not already a worker), forks: the child does the rank's work;
/// the parent stays a small supervisor that passes the job's signals on, exits with the child's
/// status, and when the child is killed by a signal it did not pass on (SIGKILL, the OOM killer, a
/// crash) prints one line naming the rank and exits 1, so mpirun reports exit status 1. Call it
/// first thing in main, before any thread starts.
/// The worker is this program started anew (argv) with ILA_RANK_WORKER=1 and, unless set,
/// OMP_NUM_THREADS = this rank's cores (OpenMP reads it once, when it loads).
void ila_supervise_rank(int argc, char **argv);

/// Loads libmpi and calls MPI_Init_thread (funneled). On failure writes a message into err.
int ila_mpi_init(char *err, int err_size);

/// Whether ila_mpi_init succeeded and MPI_Finalize has not run.
int ila_mpi_active(void);

int ila_mpi_rank(int *rank);
int ila_mpi_size(int *size);

/// In-place sums over MPI_COMM_WORLD (count elements; split into pieces of at most 2^30).
int ila_mpi_allreduce_sum_double(double *buf, int64_t count);
int ila_mpi_allreduce_sum_float(float *buf, int64_t count);
/// In-place maximum of int64 values.
int ila_mpi_allreduce_max_int64(int64_t *buf, int64_t count);

/// Broadcast count bytes from root.
int ila_mpi_bcast_bytes(void *buf, int64_t count, int root);

int ila_mpi_barrier(void);

/// Blocking receive of count floats from rank source with tag.
int ila_mpi_recv_float(float *buf, int64_t count, int source, int tag);
/// Non-blocking send of count floats to rank dest with tag: one request per piece of 2^30 floats
/// into requests (max_requests of them; unused ones NULL). buf must stay valid until each is waited.
int ila_mpi_isend_float(const float *buf, int64_t count, int dest, int tag, void **requests, int max_requests);
/// Waits for a request (NULL: done already) and sets it to NULL.
int ila_mpi_wait(void **request);
/// Whether a request has completed (drives MPI's progress); a completed one becomes NULL.
int ila_mpi_test(void **request, int *done);

/// MPI_Finalize (once; later calls do nothing).
int ila_mpi_finalize(void);

/// MPI_Abort(MPI_COMM_WORLD, code): ends every rank of the job.
void ila_mpi_abort(int code);

/// MPI_Get_library_version's text ("Open MPI v4.1.4, ...") into buf.
int ila_mpi_library_version(char *buf, int size);
#endif
