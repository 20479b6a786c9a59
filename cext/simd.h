/* Private: the loops written for AVX2 + FMA + F16C (simd.c), which the portable loops of
 * planes.inc and rows.inc hand their work to when the CPU has all three: float32's and
 * the halves' statistics, float32's streamed maps and the halves' maps. Each gives bitwise
 * the results of the portable loop it replaces: the same lanes and the same order of
 * operations (a NaN result may differ in its sign or payload bits, which depend on the
 * operand order the compiler picks). The statistics loops use fused multiply-adds only
 * where one rounds exactly like the plain operation (fma(v, 1, acc) is acc + v), which
 * moves additions from the adders to the multiply-add units: the float32 sums are bound
 * by the FP pipes, not by memory, and the conversions to double keep the adders busy.
 * The maps of large ops write around the cache. */
#ifndef NORMOPS_SIMD_H
#define NORMOPS_SIMD_H

/* The match needs every multiply and add rounded on its own in both kinds of loop: no
 * contraction into fused multiply-adds, whatever the build flags say. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <stddef.h>

#include "normops.h"

/* Independent accumulators of the planes path's sums (lane j takes the values i with
 * i % NM_LANES == j): enough to hide the adders' latency. */
#define NM_LANES 16

static inline double nm_lanes_total(const double *acc)
{
    double pair[NM_LANES / 2];
    int j, w;
    for (j = 0; j < NM_LANES / 2; j++)
        pair[j] = acc[2 * j] + acc[2 * j + 1];
    for (w = NM_LANES / 4; w >= 1; w /= 2)
        for (j = 0; j < w; j++)
            pair[j] = pair[2 * j] + pair[2 * j + 1];
    return pair[0];
}

/* Whether this build has the AVX2 loops (x86-64 with GCC or clang); the kernels call
 * none of them otherwise */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(NM_NO_SIMD) \
    && (defined(__clang__) ? __clang_major__ >= 8 : __GNUC__ >= 6)
#define NM_SIMD_BUILD 1
#else
#define NM_SIMD_BUILD 0
#endif

/* The statistics loops, one of each per element type (float32: f32, the halves: f16 and
 * bf16, loaded exactly into double):
 * nm_unit_sums_simd_*: what unit_sums_portable (planes.inc) computes, whole: with
 * u = dy (or x - centre when dy is NULL) and v = x - centre, *su += sum u and
 * *sv += sum u v over `count` planes of n values, `step` elements apart (NM_LANES lanes
 * shared by the planes, each plane's tail in lanes 0 .., then one nm_lanes_total).
 * The main part of a block of rows (C columns, rows ld elements apart); each returns how
 * many rows it took (whole groups), and the portable loop does the rest:
 * nm_chunk_moments_simd_*: adds, per column j of whole groups of 4 rows: s1[j] += sum of d,
 * s2[j] += sum of d^2 with d = x[r][j] - centre[j], as ((d0 + d1) + (d2 + d3));
 * nm_chunk_grad_sums_simd_*: adds, per column j of whole pairs of rows: s0[j] += dy0 + dy1
 * and s1[j] += dy0 (x0 - centre[j]) + dy1 (x1 - centre[j]). */
#define NM_SIMD_SUMS(suffix, T)                                                            \
    void nm_unit_sums_simd_##suffix(const T *dy, const T *x, ptrdiff_t count, ptrdiff_t step, \
                                    ptrdiff_t n, double centre, double *su, double *sv);    \
    ptrdiff_t nm_chunk_moments_simd_##suffix(const T *x, ptrdiff_t C, ptrdiff_t ld,        \
                                             ptrdiff_t nrows, const double *centre,         \
                                             double *s1, double *s2);                       \
    ptrdiff_t nm_chunk_grad_sums_simd_##suffix(const T *dy, const T *x, ptrdiff_t C,       \
                                               ptrdiff_t ld, ptrdiff_t nrows,               \
                                               const double *centre, double *s0, double *s1);
NM_SIMD_SUMS(f32, float)
NM_SIMD_SUMS(f16, nm_half)
NM_SIMD_SUMS(bf16, nm_half)

/* The maps of the halves, in double from double coefficients, each output rounded once
 * (half.h), in the operations of the portable maps (kernels.c NM_AFFINE_FUSED,
 * NM_GRAD_FUSED): y = fma(x - hi, a, b) and dx = fma(p, dy, fma(q, x - hi, s)), computed
 * in float32 first from the float32 coefficients `fast` (kernels.c NM_FAST_COEF: a
 * channel's coefficient i at fast[i] on a plane, a column j's at fast[i * stride + j] on
 * rows) wherever that rounds alike (simd_half.inc), over one plane with
 * scalar coefficients or over nrows rows of C columns (ld elements apart) with per-column
 * ones; `stream`: with non-temporal stores (each run then starts on a cache line and is
 * whole lines, nm_stream); and the pipelined planes path's sums and maps in one loop, as
 * nm_plane_sums_apply_f32 and nm_plane_grad_sums_apply_f32 below, the coefficients in
 * double */
#define NM_SIMD_HALF_MAPS(suffix)                                                          \
    void nm_plane_apply_simd_##suffix(const nm_half *x, nm_half *y, ptrdiff_t n, double hi, \
                                      double a, double b, const float *fast, int stream);   \
    void nm_plane_grad_apply_simd_##suffix(const nm_half *dy, const nm_half *x, nm_half *dx, \
                                           ptrdiff_t n, double hi, double p, double q,       \
                                           double s, const float *fast, int stream);         \
    void nm_rows_apply_simd_##suffix(const nm_half *x, nm_half *y, ptrdiff_t C, ptrdiff_t ld, \
                                     ptrdiff_t nrows, const double *hi, const double *a,     \
                                     const double *b, const float *fast, ptrdiff_t stride,   \
                                     int stream);                                           \
    void nm_rows_grad_apply_simd_##suffix(const nm_half *dy, const nm_half *x, nm_half *dx, \
                                          ptrdiff_t C, ptrdiff_t ld, ptrdiff_t nrows,        \
                                          const double *hi, const double *p, const double *q, \
                                          const double *s, const float *fast,               \
                                          ptrdiff_t stride, int stream);                    \
    void nm_plane_sums_apply_simd_##suffix(const nm_half *x, double centre, double *su,     \
                                           double *sv, const nm_half *xm, nm_half *y,       \
                                           ptrdiff_t n, const double *coef,                 \
                                           const float *fast, int stream);                  \
    void nm_plane_grad_sums_apply_simd_##suffix(const nm_half *dy, const nm_half *x,         \
                                                double centre, double *su, double *sv,       \
                                                const nm_half *dym, const nm_half *xm,       \
                                                nm_half *dx, ptrdiff_t n, const double *coef, \
                                                const float *fast, int stream);              \
    void nm_epilogue_simd_##suffix(const nm_half *t, const nm_half *z, nm_half *y,           \
                                   ptrdiff_t n, int relu, int stream);                      \
    void nm_plane_apply_epilogue_simd_##suffix(const nm_half *x, const nm_half *z, nm_half *y, \
                                               ptrdiff_t n, double hi, double a, double b,  \
                                               const float *fast, int relu, int stream);    \
    void nm_rows_apply_epilogue_simd_##suffix(const nm_half *x, const nm_half *z, nm_half *y, \
                                              ptrdiff_t C, ptrdiff_t ld, ptrdiff_t nrows,    \
                                              const double *hi, const double *a,            \
                                              const double *b, const float *fast,           \
                                              ptrdiff_t stride, int relu, int stream);      \
    void nm_plane_sums_epilogue_simd_##suffix(const nm_half *x, double centre, double *su,  \
                                              double *sv, const nm_half *xm,                \
                                              const nm_half *z, nm_half *y, ptrdiff_t n,    \
                                              const double *coef, const float *fast,        \
                                              int relu, int stream);
/* The forward's epilogue (normops.h: residual, relu; channel.inc NM_SUF(epilogue)) on
 * the halves: y = act(t + z) over n values (z NULL: act(t)), and the maps above and the
 * pipelined forward's sums and map with it (y = act(map(x) + z)). The sum is taken in
 * float32 and rounded to the half dtype to nearest even: float32's 24 bits are at least
 * twice the half dtype's 11 (8) plus 2, so rounding the sum of two halves first to
 * float32 and then to the half dtype gives the one rounding of the exact sum (as the
 * portable loop's double sum does, and NumPy's half add, which takes the same float32
 * steps). act on t alone works on the bits, below zero being a sign bit with a magnitude
 * from 1 up to infinity's (NM_HALF_NEG_INF); on a sum, on the float32 sum
 * (simd_half.inc epilogue8). */
#define NM_HALF_NEG_INF_f16 0xfc00
#define NM_HALF_NEG_INF_bf16 0xff80

/* The halves' rounding in float32 terms (simd_half.inc, kernels.c fast_coef): the
 * dropped bits of a float32 at a tie between two half values, the ratio R of the error
 * bound, and the smallest result the float32 map gives (below it, float16's subnormals,
 * and results that may round to a zero of either sign) */
#define NM_HALF_TIE_f16 0x1000
#define NM_HALF_R_f16 32
#define NM_HALF_LOWEST_f16 0x1p-14f
#define NM_HALF_TIE_bf16 0x8000
#define NM_HALF_R_bf16 64
#define NM_HALF_LOWEST_bf16 0x1p-133f

NM_SIMD_HALF_MAPS(f16)
NM_SIMD_HALF_MAPS(bf16)

/* An op whose arrays (its inputs and its output, each counted once) hold at least this
 * many bytes writes its float32 output with non-temporal stores when the AVX2 loops run.
 * Such arrays do not fit together in a last-level cache of usual size (32 MiB here), so
 * the output would not stay cached for its next reader anyway; writing it around the cache
 * saves reading every output line before it is overwritten and leaves the cache to the
 * inputs that a second pass reads again. Measured here on the 26 MB benchmark shapes:
 * inference 15 to 30 % faster streamed. Smaller ops store normally, so an output that
 * fits in the cache with its inputs stays there. */
#define NM_STREAM_BYTES ((size_t)32 << 20)

#define NM_LINE 64   /* bytes of a cache line */

/* 1 when an op whose arrays hold `footprint` bytes streams its output `out`, whose runs
 * (planes, rows) are `run_bytes` long: only when each run is whole cache lines, since a
 * line written partly by non-temporal stores costs a read-modify-write in memory */
int nm_stream(size_t footprint, const void *out, size_t run_bytes);

/* after a thread's last streamed map: its lines reach memory before the others read them */
void nm_stream_fence(void);

/* The maps, in the float operations of the portable loops, streamed (see simd.c):
 * y = ((x - hi) - lo) a + b and dx = p dy + q ((x - hi) - lo) + s, over one plane with
 * scalar coefficients or over nrows rows of C columns (ld elements apart) with per-column
 * ones. Each run (a plane, a row's C columns) starts on a cache line and is a whole
 * number of lines (nm_stream). */
void nm_plane_apply_f32_stream(const float *x, float *y, ptrdiff_t n, float hi, float lo,
                               float a, float b);
void nm_plane_grad_apply_f32_stream(const float *dy, const float *x, float *dx, ptrdiff_t n,
                                    float hi, float lo, float p, float q, float s);
void nm_rows_apply_f32_stream(const float *x, float *y, ptrdiff_t C, ptrdiff_t ld,
                              ptrdiff_t nrows, const float *hi, const float *lo, const float *a,
                              const float *b);
void nm_rows_grad_apply_f32_stream(const float *dy, const float *x, float *dx, ptrdiff_t C,
                                   ptrdiff_t ld, ptrdiff_t nrows, const float *hi,
                                   const float *lo, const float *p, const float *q,
                                   const float *s);

/* The pipelined planes path (planes.inc): while a thread maps one channel it sums the
 * next. Each of these gives, in one loop, what nm_unit_sums_f32_simd gives for the plane
 * x (and dy) about `centre`, and the map of another plane of n values: y = ((xm - hi) - lo)
 * a + b with coef = {hi, lo, a, b}, or dx = p dym + q ((xm - hi) - lo) + s with
 * coef = {hi, lo, p, q, s}, in the float operations of the portable maps; `stream`: with
 * non-temporal stores (then the plane is whole cache lines and starts on one). The sums
 * are bound by the conversions to double and the map by memory, so together they take
 * about as long as the map alone. */
void nm_count_pipelined(void);   /* one more op took the pipelined path */
void nm_plane_sums_apply_f32(const float *x, double centre, double *su, double *sv,
                             const float *xm, float *y, ptrdiff_t n, const float *coef,
                             int stream);
void nm_plane_grad_sums_apply_f32(const float *dy, const float *x, double centre, double *su,
                                  double *sv, const float *dym, const float *xm, float *dx,
                                  ptrdiff_t n, const float *coef, int stream);

/* The forward's epilogue (normops.h: residual, relu) in float32: y = act(t + z) over n
 * values (z NULL: act(t)), streamed (y starts on a cache line and n is whole lines), as
 * channel.inc's portable loop computes it (act(v) = max(0, v), which is 0 > v ? 0 : v:
 * NaN and -0 stay); the streamed maps above with it, y = act(map(x) + z), in one loop
 * (rows.inc, planes.inc: no scratch between them); and the pipelined forward's sums and
 * map with it, streamed or not */
void nm_epilogue_f32_stream(const float *t, const float *z, float *y, ptrdiff_t n, int relu);
void nm_plane_apply_epilogue_f32_stream(const float *x, const float *z, float *y, ptrdiff_t n,
                                        float hi, float lo, float a, float b, int relu);
void nm_rows_apply_epilogue_f32_stream(const float *x, const float *z, float *y, ptrdiff_t C,
                                       ptrdiff_t ld, ptrdiff_t nrows, const float *hi,
                                       const float *lo, const float *a, const float *b,
                                       int relu);
void nm_plane_sums_epilogue_f32(const float *x, double centre, double *su, double *sv,
                                const float *xm, const float *z, float *y, ptrdiff_t n,
                                const float *coef, int relu, int stream);

/* The backward of the epilogue's ReLU (nm_relu_mask_*), streamed: out = (y <= 0) ? +0 : dy
 * over n values, whole cache lines from one on (the halves by their bits, as
 * half_instance.inc NM_NOT_POSITIVE) */
void nm_relu_mask_stream_f32(const float *dy, const float *y, float *out, ptrdiff_t n);
void nm_relu_mask_stream_f16(const nm_half *dy, const nm_half *y, nm_half *out, ptrdiff_t n);
void nm_relu_mask_stream_bf16(const nm_half *dy, const nm_half *y, nm_half *out, ptrdiff_t n);

/* CALL(z, relu) for the three epilogues (with z and relu, z alone, relu alone), each
 * with its arguments known (calls of always-inline loops: a loop of its own each); z
 * of elements T */
#define NM_EPILOGUES(T, z, relu, CALL)                                                     \
    do {                                                                                   \
        if ((z) && (relu))                                                                 \
            CALL(z, 1);                                                                    \
        else if (z)                                                                        \
            CALL(z, 0);                                                                    \
        else                                                                               \
            CALL((const T *)NULL, 1);                                                      \
    } while (0)

#endif
