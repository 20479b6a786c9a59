/* normops C kernels: batch normalization and batch renormalization over a canonical
 * (outer, C, inner) view, float32, float64, float16 and bfloat16. Plain C99 with optional
 * OpenMP; no Python.
 *
 * Contract (the caller, normops' Python layer, guarantees all of it; nothing is checked
 * here):
 *   - x, y, dy, dx are C-contiguous arrays of outer * channels * inner elements, with
 *     outer >= 1, channels >= 1, inner >= 1; y and dx do not overlap any input.
 *   - inner <= 8 takes the "rows" path (NC, channels-last, and NCHW with planes of up to
 *     8 values): each of the outer rows holds channels * inner values contiguously, and
 *     the loops vectorize across them. Longer planes take the "planes" path (NCHW): each
 *     (outer, channel) pair is a contiguous plane.
 *   - nm_vec arrays hold `channels` elements of their dtype at data[c * stride] (stride
 *     in elements, may be negative or zero only for arrays that are only read): the
 *     data's dtype, or float32 for half data (mixed precision). A NULL data pointer means
 *     "absent" (gamma 1, beta 0, no running statistics).
 *   - double * per-channel arrays hold `channels` contiguous elements.
 *   - Statistics need a count outer * inner >= 1 (>= 2 for unbiased running variance).
 *
 * Numerics: sums are accumulated in double for both dtypes, shifted by the first value of
 * each block (a channel, or a chunk of rows) and merged with Chan's formula in a fixed
 * order: two passes (mean, then squares about it) for float64, one pass of shifted sums
 * for float32 and the half dtypes. Half data maps in double, each output rounded once
 * (half.h). Per-channel outputs (running statistics, dgamma, dbeta) are computed in
 * double and rounded once to their dtype. A constant channel has M2 == 0 and its exact mean, and the forward writes
 * (x - mean) * a + b, which is exactly beta there.
 * Determinism: every reduction order is fixed by the shape alone (chunks of a number of
 * rows set by C, or units of a channel's planes added in order), never by the thread
 * count.
 * Every function returns 0, or -1 when it could not allocate its scratch memory.
 */
#ifndef NORMOPS_H
#define NORMOPS_H

#include <stddef.h>

/* Rows per chunk of the rows path, the unit of the fixed reduction order, for 64 or more
 * channels (narrower rows take a multiple, see chunk_len in kernels.c). */
#define NM_ROW_CHUNK 64

typedef struct {
    ptrdiff_t outer, channels, inner;
} nm_shape;

/* element types of the data and of the per-channel arrays; float16 is IEEE binary16,
 * bfloat16 the upper 16 bits of a float32 (both stored as nm_half) */
typedef enum { NM_F32, NM_F64, NM_F16, NM_BF16 } nm_dtype;

typedef unsigned short nm_half;

typedef struct {
    void *data;
    ptrdiff_t stride;
    nm_dtype dtype;
} nm_vec;

typedef enum {
    NM_FWD_STATS,      /* batch_stats: mean and m2 out, no y */
    NM_FWD_AFFINE,     /* scale_shift: y = a * x + b from a_in, b_in */
    NM_FWD_BN_TRAIN,   /* batch norm with batch statistics; running stats updated */
    NM_FWD_BN_EVAL,    /* batch norm with running mean and variance */
    NM_FWD_BRN_TRAIN,  /* batch renorm with batch statistics, r and d; running updated */
    NM_FWD_BRN_EVAL    /* batch renorm with running mean and standard deviation */
} nm_forward_mode;

typedef struct {
    nm_forward_mode mode;
    nm_vec gamma, beta;
    /* running mean and running variance (BN) or standard deviation (BRN); written in the
     * train modes, read in the eval modes; may be absent in NM_FWD_BN_TRAIN only */
    nm_vec running_mean, running_spread;
    double eps, momentum, rmax, dmax;
    int unbiased;                 /* BN train: running variance receives m2 / (count - 1) */
    const double *a_in, *b_in;    /* NM_FWD_AFFINE only */
    /* outputs, per channel: mean (all modes but AFFINE), m2 (STATS), invstd (BN/BRN
     * modes; 1 / sigma for BRN eval), r and d (BRN train) */
    double *mean, *m2, *invstd, *r, *d;
    /* The epilogue of the modes that write y: y = act(t + residual), t the value written
     * without it, the sum in the maps' precision (the halves: in double) rounded once to
     * x's dtype; act(v) = (v < 0) ? +0 : v when relu (NaN and -0 stay), else v. So y is
     * bitwise NumPy's relu(add(t, residual)) in x's dtype. residual: NULL (none), or a
     * C-contiguous array of x's shape and dtype that y does not overlap. */
    const void *residual;
    int relu;
} nm_forward_args;

typedef enum {
    NM_BWD_GRAD_STATS,  /* grad_stats: sum_dy and sum_dy_xmu out, no dx */
    NM_BWD_GRAD_INPUT,  /* grad_input: dx = p * dy + q * x + s */
    NM_BWD_FUSED        /* BN/BRN backward from the forward's saved state */
} nm_backward_mode;

typedef struct {
    nm_backward_mode mode;
    int training;
    /* the forward's saved state (FUSED); mean also centres GRAD_STATS */
    const double *mean, *invstd, *r, *d;   /* r and d NULL for batch norm */
    nm_vec gamma;
    void *dgamma, *dbeta;                  /* FUSED outputs: contiguous, of grad_dtype */
    nm_dtype grad_dtype;
    double *sum_dy, *sum_dy_xmu;           /* GRAD_STATS outputs */
    const double *p, *q, *s;               /* GRAD_INPUT inputs */
} nm_backward_args;

int nm_forward_f32(nm_shape shape, const float *x, float *y, const nm_forward_args *args);
int nm_forward_f64(nm_shape shape, const double *x, double *y, const nm_forward_args *args);
int nm_backward_f32(nm_shape shape, const float *dy, const float *x, float *dx,
                    const nm_backward_args *args);
int nm_backward_f64(nm_shape shape, const double *dy, const double *x, double *dx,
                    const nm_backward_args *args);
int nm_forward_f16(nm_shape shape, const nm_half *x, nm_half *y, const nm_forward_args *args);
int nm_forward_bf16(nm_shape shape, const nm_half *x, nm_half *y, const nm_forward_args *args);
int nm_backward_f16(nm_shape shape, const nm_half *dy, const nm_half *x, nm_half *dx,
                    const nm_backward_args *args);
int nm_backward_bf16(nm_shape shape, const nm_half *dy, const nm_half *x, nm_half *dx,
                     const nm_backward_args *args);

/* The backward of the epilogue's ReLU over n contiguous values: out = (y <= 0) ? +0 : dy
 * (a NaN y passes dy, as PyTorch's threshold_backward); out does not overlap dy or y */
void nm_relu_mask_f32(ptrdiff_t n, const float *dy, const float *y, float *out);
void nm_relu_mask_f64(ptrdiff_t n, const double *dy, const double *y, double *out);
void nm_relu_mask_f16(ptrdiff_t n, const nm_half *dy, const nm_half *y, nm_half *out);
void nm_relu_mask_bf16(ptrdiff_t n, const nm_half *dy, const nm_half *y, nm_half *out);

/* Threads: OpenMP when built with it, else everything runs serially. */
int nm_openmp_enabled(void);
int nm_get_num_threads(void);     /* never above nm_max_threads(); 1 in a forked child */
void nm_set_num_threads(int n);   /* n <= 0: back to OpenMP's default */
/* The most threads an op runs on: 4 per processor OpenMP reports (see threads.c) */
int nm_max_threads(void);
/* 1 in a process forked (at any depth) from one whose kernels had started a team of
 * threads: OpenMP's workers do not exist there, so its kernels run on one thread */
int nm_forked_child(void);
/* An op uses at most one thread per this many values (its team is never larger than
 * nm_get_num_threads()); results do not depend on it. n <= 0: back to the default. */
#define NM_MIN_VALUES_PER_THREAD ((ptrdiff_t)32768)
ptrdiff_t nm_get_min_values_per_thread(void);
void nm_set_min_values_per_thread(ptrdiff_t n);
/* The team for an op over `values` values: nm_get_num_threads(), but no more threads than
 * nm_get_min_values_per_thread() values each. A small array runs on the calling thread:
 * waking a team costs more than it saves there, and idle OpenMP workers spinning between
 * calls would compete with other threads (NumPy's BLAS) for the cores. */
int nm_team_for(ptrdiff_t values);
/* The loops for AVX2 + FMA + F16C (float32 statistics and streamed maps, the half
 * dtypes' statistics and maps): used when the CPU has all three (1), else 0, and always 0
 * in builds for other architectures. They give bitwise the results of the portable loops;
 * nm_set_simd(0) turns them off (for tests that compare the two). */
int nm_simd_enabled(void);
void nm_set_simd(int on);
/* The bytes of an op's arrays (inputs and output) from which float32 outputs are written
 * with non-temporal stores when the AVX2 loops run (see simd.h); tests lower it */
size_t nm_stream_bytes(void);
void nm_set_stream_bytes(size_t nbytes);
size_t nm_streamed_ops(void);   /* how many ops have streamed their output so far */
size_t nm_pipelined_ops(void);  /* how many ops have taken the pipelined planes path */
/* memcpy split over the threads: the copy-bandwidth baseline of the benchmarks */
void nm_copy(void *dst, const void *src, size_t nbytes);
/* "<compiler and version>; flags: <compile flags>" */
const char *nm_build_info(void);

#endif
