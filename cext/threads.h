/* Private: the pragmas every parallel loop uses, so that the team size and schedule are
 * chosen in one place. Without OpenMP the pragmas are ignored and the loops run serially.
 * Results never depend on the schedule: each iteration owns its outputs and every
 * reduction is merged afterwards in a fixed order. */
#ifndef NORMOPS_THREADS_H
#define NORMOPS_THREADS_H

/* the number of values of an op over the nm_shape `sh`, which sizes its team (nm_team_for) */
#define NM_VALUES(sh) ((sh).outer * (sh).channels * (sh).inner)

#define NM_PRAGMA(text) _Pragma(#text)
#define NM_PARALLEL_FOR_OVER(values) \
    NM_PRAGMA(omp parallel for schedule(static) num_threads(nm_team_for(values)))
#define NM_PARALLEL_OVER(values) NM_PRAGMA(omp parallel num_threads(nm_team_for(values)))
#define NM_FOR NM_PRAGMA(omp for schedule(static))
#define NM_SINGLE NM_PRAGMA(omp single)

#endif
