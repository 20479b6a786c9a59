/* OpenMP in one place: the kernels' parallel regions ask nm_start_team() for their team
 * size, and a build without OpenMP runs every region on one thread. */
#include <string.h>

#include "normops.h"
#include "threads.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* fork() exists: a child of a process whose teams started is watched for (see below) */
#if defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
#define NM_WATCH_FORKS 1
#include <pthread.h>
#endif

/* 0: follow OpenMP's default (OMP_NUM_THREADS, omp_set_num_threads, threadpoolctl) */
static volatile int requested_threads = 0;
static volatile ptrdiff_t min_values_per_thread = NM_MIN_VALUES_PER_THREAD;
static volatile int max_threads = 0;    /* nm_max_threads(), once computed */
static volatile int forked_child = 0;

int nm_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* 4 threads per processor. The kernels are bound by memory bandwidth, which the cores
 * saturate by themselves; extra threads only add wake-ups and time slices (training
 * forward on NCHW-32x64x56x56 float32 on 2 cores: 1.50 ms with 2 threads, 1.77 ms with 8,
 * 4.1 ms with 64, 7.7 ms with 196), and each one reserves a stack (8 MiB of address space
 * with glibc's default: 196 threads took 1.6 GB, so a request of thousands made libgomp's
 * thread creation fail under a memory limit). The factor leaves room to oversubscribe on
 * purpose (tests compare teams of 1 to 4 on 2 cores). omp_get_num_procs() counts the
 * processors of the affinity mask; it is read once, as it costs a system call. A serial
 * build runs on one processor. */
int nm_max_threads(void)
{
    int n = max_threads;
    if (n == 0) {
#ifdef _OPENMP
        n = 4 * omp_get_num_procs();
#else
        n = 4;
#endif
        max_threads = n;
    }
    return n;
}

int nm_get_num_threads(void)
{
#ifdef _OPENMP
    int n;
    if (forked_child)
        return 1;
    n = requested_threads;
    if (n <= 0)
        n = omp_get_max_threads();   /* OMP_NUM_THREADS=100000 is clamped here too */
    return n < nm_max_threads() ? n : nm_max_threads();
#else
    return 1;
#endif
}

void nm_set_num_threads(int n)
{
    requested_threads = n > 0 ? n : 0;
}

ptrdiff_t nm_get_min_values_per_thread(void)
{
    return min_values_per_thread;
}

void nm_set_min_values_per_thread(ptrdiff_t n)
{
    min_values_per_thread = n > 0 ? n : NM_MIN_VALUES_PER_THREAD;
}

int nm_team_for(ptrdiff_t values)
{
    const int threads = nm_get_num_threads();
    const ptrdiff_t by_work = values / min_values_per_thread;
    return by_work < 1 ? 1 : (by_work < threads ? (int)by_work : threads);
}

/* Forks. A child process has only the thread that called fork(), but libgomp still
 * believes the calling thread's pool of workers exists, and the child's next team waits
 * for them forever. A team of one runs on the calling thread alone, without the pool
 * (measured with GCC 12's libgomp: such a child and its own children complete every op).
 * So once this process starts a team, a handler marks its forked children, whose
 * kernels then run on one thread; results do not depend on the team. */
#ifdef NM_WATCH_FORKS
static pthread_once_t fork_watch = PTHREAD_ONCE_INIT;

static void mark_forked_child(void)
{
    forked_child = 1;
}

static void watch_forks(void)
{
    pthread_atfork(NULL, NULL, mark_forked_child);
}
#endif

int nm_forked_child(void)
{
    return forked_child;
}

int nm_start_team(ptrdiff_t values)
{
    const int team = nm_team_for(values);
#ifdef NM_WATCH_FORKS
    if (team > 1)
        /* before the team starts, so that a fork from any thread from now on is seen */
        pthread_once(&fork_watch, watch_forks);
#endif
    return team;
}

void nm_copy(void *dst, const void *src, size_t nbytes)
{
    const size_t piece = (size_t)1 << 20;
    const ptrdiff_t pieces = (ptrdiff_t)((nbytes + piece - 1) / piece);
    ptrdiff_t k;
    NM_PARALLEL_FOR_OVER((ptrdiff_t)(nbytes / sizeof(float)))
    for (k = 0; k < pieces; k++) {
        size_t start = (size_t)k * piece;
        size_t len = nbytes - start < piece ? nbytes - start : piece;
        memcpy((char *)dst + start, (const char *)src + start, len);
    }
}
