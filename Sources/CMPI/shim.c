#define _GNU_SOURCE
#include "cmpi.h"
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

// Types only: mpi.h (Debian: /usr/include/<triplet>/mpi → openmpi/include) gives the prototypes
// the function pointers below are checked against; nothing from it is linked.
#include <mpi/mpi.h>

#ifndef OMPI_MAJOR_VERSION
#error "this shim is written for Open MPI's ABI (MPI_Comm etc. are pointers to library globals)"
#endif

static void *lib;
static int active;
static MPI_Comm comm_world;
static MPI_Datatype t_double, t_float, t_int64, t_byte;
static MPI_Op op_sum, op_max;

static __typeof__(MPI_Init_thread) *p_init_thread;
static __typeof__(MPI_Comm_rank) *p_comm_rank;
static __typeof__(MPI_Comm_size) *p_comm_size;
static __typeof__(MPI_Allreduce) *p_allreduce;
static __typeof__(MPI_Bcast) *p_bcast;
static __typeof__(MPI_Barrier) *p_barrier;
static __typeof__(MPI_Finalize) *p_finalize;
static __typeof__(MPI_Abort) *p_abort;
static __typeof__(MPI_Get_library_version) *p_library_version;
static __typeof__(MPI_Send) *p_send;
static __typeof__(MPI_Recv) *p_recv;
static __typeof__(MPI_Isend) *p_isend;
static __typeof__(MPI_Wait) *p_wait;
static __typeof__(MPI_Test) *p_test;
static MPI_Status *status_ignore = MPI_STATUS_IGNORE;

int ila_mpi_launched(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", NULL};
    for (int i = 0; vars[i]; i++) if (getenv(vars[i])) return 1;
    return 0;
}

static volatile pid_t supervised_worker;
static volatile sig_atomic_t forwarded_signal;

static void forward_signal(int sig) {
    forwarded_signal = sig;
    if (supervised_worker > 0) kill(supervised_worker, sig);
}

// The cores of one rank: this host's cores shared by its ranks, or fewer if the binding says so
// (the engine's threadsPerProcess, for OpenMP, which sizes its team when it loads).
static int rank_threads(void) {
    cpu_set_t set;
    int active = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    long total = sysconf(_SC_NPROCESSORS_ONLN);
    const char *l = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!l) l = getenv("MPI_LOCALNRANKS");
    int local = l ? atoi(l) : 1;
    if (local <= 1) return active > 0 ? active : 1;
    long share = total / local;
    int n = (int)(share < active ? share : active);
    return n > 0 ? n : 1;
}

void ila_supervise_rank(int argc, char **argv) {
    (void)argc;
    if (!ila_mpi_launched() || getenv("ILA_RANK_WORKER")) return;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return;  // cannot fork: the rank runs unsupervised
    if (pid == 0) {
        // The worker: it dies with its supervisor (mpirun's SIGKILL goes to the supervisor).
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        setenv("ILA_RANK_WORKER", "1", 1);
        // Started anew, so that OpenMP (oneDNN's threads) sizes its team for this rank's cores.
        char threads[16];
        snprintf(threads, sizeof threads, "%d", rank_threads());
        setenv("OMP_NUM_THREADS", threads, 0);
        execv("/proc/self/exe", argv);
        return;  // exec failed: go on in this process
    }
    supervised_worker = pid;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    static const int passed_on[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM};
    for (size_t i = 0; i < sizeof passed_on / sizeof passed_on[0]; i++) sigaction(passed_on[i], &sa, NULL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) _exit(1);
    }
    if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
    if (forwarded_signal) _exit(128 + sig);  // it ended on the signal the job was given
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    if (!rank) rank = getenv("PMIX_RANK");
    if (!rank) rank = getenv("PMI_RANK");
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char line[512];
    int n = snprintf(line, sizeof line, "error: rank %s (pid %d on %s) was killed by signal %d (%s); the job ends and writes nothing\n",
                     rank ? rank : "?", (int)pid, host, sig, strsignal(sig));
    if (n > 0) { ssize_t w = write(2, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1)); (void)w; }
    _exit(1);
}

#define SYM(var, name) do { *(void **)&(var) = dlsym(lib, name); \
    if (!(var)) { snprintf(err, (size_t)err_size, "%s has no symbol %s", libname, name); return -1; } } while (0)

int ila_mpi_init(char *err, int err_size) {
    if (active) return 0;
    static const char *names[] = {"libmpi.so.40", "libmpi.so", NULL};
    const char *libname = NULL;
    for (int i = 0; names[i] && !lib; i++) {
        // RTLD_GLOBAL: Open MPI's own plugins resolve libmpi's symbols.
        lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        libname = names[i];
    }
    if (!lib) {
        snprintf(err, (size_t)err_size, "cannot load Open MPI's libmpi.so.40 (install openmpi-bin / libopenmpi-dev): %s", dlerror());
        return -1;
    }
    SYM(p_init_thread, "MPI_Init_thread");
    SYM(p_comm_rank, "MPI_Comm_rank");
    SYM(p_comm_size, "MPI_Comm_size");
    SYM(p_allreduce, "MPI_Allreduce");
    SYM(p_bcast, "MPI_Bcast");
    SYM(p_barrier, "MPI_Barrier");
    SYM(p_finalize, "MPI_Finalize");
    SYM(p_abort, "MPI_Abort");
    SYM(p_library_version, "MPI_Get_library_version");
    SYM(p_send, "MPI_Send");
    SYM(p_recv, "MPI_Recv");
    SYM(p_isend, "MPI_Isend");
    SYM(p_wait, "MPI_Wait");
    SYM(p_test, "MPI_Test");
    // The predefined handles are the addresses of these globals (mpi.h's OMPI_PREDEFINED_GLOBAL).
    SYM(comm_world, "ompi_mpi_comm_world");
    SYM(t_double, "ompi_mpi_double");
    SYM(t_float, "ompi_mpi_float");
    SYM(t_int64, "ompi_mpi_int64_t");
    SYM(t_byte, "ompi_mpi_byte");
    SYM(op_sum, "ompi_mpi_op_sum");
    SYM(op_max, "ompi_mpi_op_max");
    int provided = 0;
    int rc = p_init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) { snprintf(err, (size_t)err_size, "MPI_Init_thread failed (code %d)", rc); return rc; }
    active = 1;
    return 0;
}

int ila_mpi_active(void) { return active; }

int ila_mpi_rank(int *rank) { if (!active) return -1; return p_comm_rank(comm_world, rank); }
int ila_mpi_size(int *size) { if (!active) return -1; return p_comm_size(comm_world, size); }

static const int64_t piece = (int64_t)1 << 30;

static int allreduce(void *buf, int64_t count, size_t elem, MPI_Datatype t, MPI_Op op) {
    if (!active) return -1;
    for (int64_t off = 0; off < count; off += piece) {
        int n = (int)(count - off < piece ? count - off : piece);
        int rc = p_allreduce(MPI_IN_PLACE, (char *)buf + (size_t)off * elem, n, t, op, comm_world);
        if (rc != MPI_SUCCESS) return rc;
    }
    return 0;
}

int ila_mpi_allreduce_sum_double(double *buf, int64_t count) { return allreduce(buf, count, sizeof(double), t_double, op_sum); }
int ila_mpi_allreduce_sum_float(float *buf, int64_t count) { return allreduce(buf, count, sizeof(float), t_float, op_sum); }
int ila_mpi_allreduce_max_int64(int64_t *buf, int64_t count) { return allreduce(buf, count, sizeof(int64_t), t_int64, op_max); }

int ila_mpi_bcast_bytes(void *buf, int64_t count, int root) {
    if (!active) return -1;
    for (int64_t off = 0; off < count; off += piece) {
        int n = (int)(count - off < piece ? count - off : piece);
        int rc = p_bcast((char *)buf + off, n, t_byte, root, comm_world);
        if (rc != MPI_SUCCESS) return rc;
    }
    return 0;
}

// Point-to-point floats (pipeline stages). A message longer than 2^30 floats is sent in pieces,
// each with the same tag; MPI keeps messages between two ranks with one tag in order.
int ila_mpi_recv_float(float *buf, int64_t count, int source, int tag) {
    if (!active) return -1;
    for (int64_t off = 0; off < count; off += piece) {
        int n = (int)(count - off < piece ? count - off : piece);
        int rc = p_recv(buf + off, n, t_float, source, tag, comm_world, status_ignore);
        if (rc != MPI_SUCCESS) return rc;
    }
    return 0;
}

int ila_mpi_isend_float(const float *buf, int64_t count, int dest, int tag, void **requests, int max_requests) {
    if (!active) return -1;
    int k = 0;
    for (int64_t off = 0; off < count || (count == 0 && k == 0); off += piece) {
        if (k >= max_requests) return -1;
        int n = (int)(count - off < piece ? count - off : piece);
        MPI_Request r;
        int rc = p_isend(buf + off, n, t_float, dest, tag, comm_world, &r);
        if (rc != MPI_SUCCESS) return rc;
        requests[k++] = (void *)r;
        if (count == 0) break;
    }
    for (; k < max_requests; k++) requests[k] = NULL;
    return 0;
}

int ila_mpi_wait(void **request) {
    if (!active) return -1;
    if (!*request) return 0;
    MPI_Request r = (MPI_Request)*request;
    int rc = p_wait(&r, status_ignore);
    *request = NULL;
    return rc;
}

int ila_mpi_test(void **request, int *done) {
    if (!active) return -1;
    if (!*request) { *done = 1; return 0; }
    MPI_Request r = (MPI_Request)*request;
    int rc = p_test(&r, done, status_ignore);
    if (*done) *request = NULL;
    return rc;
}

int ila_mpi_barrier(void) { if (!active) return -1; return p_barrier(comm_world); }

int ila_mpi_finalize(void) {
    if (!active) return 0;
    active = 0;
    return p_finalize();
}

void ila_mpi_abort(int code) { if (active) p_abort(comm_world, code); }

int ila_mpi_library_version(char *buf, int size) {
    if (!lib || size < 1) return -1;
    char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    int rc = p_library_version(text, &len);
    if (rc != MPI_SUCCESS) return rc;
    snprintf(buf, (size_t)size, "%.*s", len, text);
    return 0;
}
