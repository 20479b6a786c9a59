/* Private: the pragmas every parallel loop uses, so that the team size and schedule are
 * chosen in one place. Without OpenMP the pragmas are ignored and the loops run serially.
 * Results never depend on the schedule: each iteration owns its outputs and every
 * reduction is merged afterwards in a fixed order. */
#ifndef NORMOPS_THREADS_H
#define NORMOPS_THREADS_H

#include <stddef.h>

/* The team for an op over `values` values: nm_get_num_threads(), but no more threads than
 * nm_get_min_values_per_thread() values each. A small array runs on the calling thread:
 * waking a team costs more than it saves there, and idle OpenMP workers spinning between
 * calls would compete with other threads (NumPy's BLAS) for the cores. */
int nm_team_for(ptrdiff_t values);

#define NM_PRAGMA(text) _Pragma(#text)
#define NM_PARALLEL_FOR_OVER(values) \
    NM_PRAGMA(omp parallel for schedule(static) num_threads(nm_team_for(values)))
#define NM_PARALLEL_OVER(values) NM_PRAGMA(omp parallel num_threads(nm_team_for(values)))
#define NM_FOR NM_PRAGMA(omp for schedule(static))
#define NM_SINGLE NM_PRAGMA(omp single)

#endif
