/* OpenMP in one place: the kernels' parallel regions ask nm_get_num_threads() for their
 * team size, and a build without OpenMP runs every region on one thread. */
#include <string.h>

#include "normops.h"
#include "threads.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* 0: follow OpenMP's default (OMP_NUM_THREADS, omp_set_num_threads, threadpoolctl) */
static volatile int requested_threads = 0;
static volatile ptrdiff_t min_values_per_thread = NM_MIN_VALUES_PER_THREAD;

int nm_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int nm_get_num_threads(void)
{
#ifdef _OPENMP
    int n = requested_threads;
    return n > 0 ? n : omp_get_max_threads();
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
