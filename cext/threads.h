/* Private: the pragmas every parallel loop uses, so that the team size and schedule are
 * chosen in one place. Without OpenMP the pragmas are ignored and the loops run serially.
 * Results never depend on the schedule: each iteration owns its outputs and every
 * reduction is merged afterwards in a fixed order. */
#ifndef NORMOPS_THREADS_H
#define NORMOPS_THREADS_H

#include <stddef.h>

/* the number of values of an op over the nm_shape `sh`, which sizes its team (nm_team_for) */
#define NM_VALUES(sh) ((sh).outer * (sh).channels * (sh).inner)

/* nm_team_for(values), for a team about to start: a team of more than one thread makes
 * this process's forked children run their kernels on one thread (threads.c) */
int nm_start_team(ptrdiff_t values);

#define NM_PRAGMA(text) _Pragma(#text)
#define NM_PARALLEL_FOR_OVER(values) \
    NM_PRAGMA(omp parallel for schedule(static) num_threads(nm_start_team(values)))
#define NM_PARALLEL_OVER(values) NM_PRAGMA(omp parallel num_threads(nm_start_team(values)))
/* Inside a parallel region, a loop or single statement ends without a barrier of its
 * own: NM_SYNC after it is the barrier, in a team of more than one thread only. libgomp
 * ends every barrier with a system call (a futex wake), a team of one's too: a training
 * forward on 4x8 float32 values made four, 0.8 us of the 2.8 us its binding took. */
#define NM_FOR NM_PRAGMA(omp for schedule(static) nowait)
#define NM_SINGLE NM_PRAGMA(omp single nowait)
#ifdef _OPENMP
#include <omp.h>
#define NM_SYNC do { if (omp_get_num_threads() > 1) { NM_PRAGMA(omp barrier) } } while (0)
#else
#define NM_SYNC ((void)0)
#endif

#endif
