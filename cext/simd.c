/* The float32 loops with AVX2 + FMA: the statistics and the streaming maps (see simd.h
 * for what each computes and why it matches the portable loop bit for bit). Compiled for
 * any x86-64: only these functions are built for AVX2, and nothing calls them on a CPU
 * without it. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "half.h"
#include "normops.h"
#include "simd.h"

#if NM_SIMD_BUILD

#include <immintrin.h>

#define NM_AVX2 __attribute__((target("avx2,fma,f16c")))

static int cpu_has_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
           && __builtin_cpu_supports("f16c");
}

/* -1: not asked yet. Threads asking at once all store the same answer; a reader only ever
 * returns the value it read itself, never the -1. */
static volatile int simd_state = -1;

int nm_simd_enabled(void)
{
    int state = simd_state;
    if (state < 0)
        simd_state = state = cpu_has_avx2_fma();
    return state;
}

void nm_set_simd(int on)
{
    simd_state = on ? cpu_has_avx2_fma() : 0;
}

static volatile size_t stream_bytes = NM_STREAM_BYTES;
static size_t streamed_ops;   /* updated atomically: ops may run in several Python threads */

int nm_stream(size_t footprint, const void *out, size_t run_bytes)
{
    /* a partly streamed cache line costs a read-modify-write in memory: whole lines only */
    const int stream = footprint >= stream_bytes && (size_t)out % NM_LINE == 0
                       && run_bytes % NM_LINE == 0 && nm_simd_enabled();
    if (stream)
        __atomic_fetch_add(&streamed_ops, 1, __ATOMIC_RELAXED);
    return stream;
}

size_t nm_streamed_ops(void)
{
    return __atomic_load_n(&streamed_ops, __ATOMIC_RELAXED);
}

/* the pipelined planes path runs only with the AVX2 loops, so its count lives here */
static size_t pipelined_ops;

void nm_count_pipelined(void)
{
    __atomic_fetch_add(&pipelined_ops, 1, __ATOMIC_RELAXED);
}

size_t nm_pipelined_ops(void)
{
    return __atomic_load_n(&pipelined_ops, __ATOMIC_RELAXED);
}

void nm_stream_fence(void)
{
    _mm_sfence();
}

size_t nm_stream_bytes(void)
{
    return stream_bytes;
}

void nm_set_stream_bytes(size_t nbytes)
{
    stream_bytes = nbytes;
}

/* 1.0 hidden from the optimizer, which would otherwise turn fma(v, 1, acc) back into an
 * addition on the adders */
NM_AVX2 static __m256d opaque_one(void)
{
    __m256d one = _mm256_set1_pd(1.0);
    __asm__("" : "+x"(one));
    return one;
}

/* lanes 0 .. w-1 of four (0 < w < 4): the masks of the last columns of a row */
NM_AVX2 static __m128i mask_ps(ptrdiff_t w)
{
    return _mm_cmpgt_epi32(_mm_set1_epi32((int)w), _mm_setr_epi32(0, 1, 2, 3));
}

NM_AVX2 static __m256i mask_pd(ptrdiff_t w)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(w), _mm256_setr_epi64x(0, 1, 2, 3));
}

/* lane-wise acc + v in the first w lanes, acc in the others */
NM_AVX2 static __m256d add_part(__m256d acc, __m256d v, ptrdiff_t w)
{
    return _mm256_blendv_pd(acc, _mm256_add_pd(acc, v), _mm256_castsi256_pd(mask_pd(w)));
}

/* nm_lanes_total of the 16 lanes in s[0..3] (lane 4q + j in s[q][j]), the same tree of
 * additions: pairs of neighbours, then pairs of those, and so on */
NM_AVX2 static double lanes_total16(__m256d s0, __m256d s1, __m256d s2, __m256d s3)
{
    /* hadd gives (l0 + l1, l4 + l5, l2 + l3, l6 + l7); 0xd8 puts the pairs in order */
    const __m256d p03 = _mm256_permute4x64_pd(_mm256_hadd_pd(s0, s1), 0xd8);
    const __m256d p47 = _mm256_permute4x64_pd(_mm256_hadd_pd(s2, s3), 0xd8);
    const __m256d q = _mm256_hadd_pd(p03, p47);   /* (P0, P2, P1, P3) */
    const __m128d r = _mm_add_pd(_mm256_castpd256_pd128(q), _mm256_extractf128_pd(q, 1));
    return _mm_cvtsd_f64(_mm_hadd_pd(r, r));
}

/* The accumulators of the planes path's sums: lane 4q + j of the sums of u in a[q][j],
 * of u v in b[q][j] */
typedef struct {
    __m256d a[4], b[4];
} plane_acc;

NM_AVX2 static inline void acc_zero(plane_acc *s)
{
    int j;
    for (j = 0; j < 4; j++)
        s->a[j] = s->b[j] = _mm256_setzero_pd();
}

/* the lane totals into *su, *sv */
NM_AVX2 static inline void acc_totals(const plane_acc *s, double *su, double *sv)
{
    *su += lanes_total16(s->a[0], s->a[1], s->a[2], s->a[3]);
    *sv += lanes_total16(s->b[0], s->b[1], s->b[2], s->b[3]);
}

/* s[0 .. w) += v[0 .. w) for two pairs, as fma(v, 1, s) (w <= 4 columns of a row) */
NM_AVX2 static void add_columns(double *s0, __m256d v0, double *s1, __m256d v1, ptrdiff_t w,
                                __m256d one)
{
    if (w >= 4) {
        _mm256_storeu_pd(s0, _mm256_fmadd_pd(v0, one, _mm256_loadu_pd(s0)));
        _mm256_storeu_pd(s1, _mm256_fmadd_pd(v1, one, _mm256_loadu_pd(s1)));
    } else {
        const __m256i m = mask_pd(w);
        _mm256_maskstore_pd(s0, m, _mm256_fmadd_pd(v0, one, _mm256_maskload_pd(s0, m)));
        _mm256_maskstore_pd(s1, m, _mm256_fmadd_pd(v1, one, _mm256_maskload_pd(s1, m)));
    }
}

/* The statistics read a chunk's rows a few at a time, each row a run of its own. Rows
 * of 128 to 512 values are runs too short for the hardware prefetcher to get going, and
 * these loops prefetch the next rows themselves, ahead of the rows they sum (67 MB, 2
 * threads, statistics / gradient sums in ms: rows of 128 values 5.4 / 8.5 -> 4.3 / 6.5,
 * of 512 values 4.1 / 8.1 -> 3.1 / 6.2). Shorter rows make one run of several rows,
 * and longer ones a run the prefetcher follows: there prefetching only cost time. */
#define NM_PREFETCH_LD_MIN 128
#define NM_PREFETCH_LD_MAX 512

static int prefetched(ptrdiff_t ld)
{
    return ld >= NM_PREFETCH_LD_MIN && ld <= NM_PREFETCH_LD_MAX;
}

/* the first w values of p (0 < w <= 4); the others 0 */
NM_AVX2 static __m256d load_f64_part(const double *p, ptrdiff_t w)
{
    return w >= 4 ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, mask_pd(w));
}

/* the four values at p of each element type in double, exactly; and the first w of them
 * (0 <= w <= 4), the others 0 */
NM_AVX2 static __m256d load4_f32(const float *p)
{
    return _mm256_cvtps_pd(_mm_loadu_ps(p));
}

NM_AVX2 static __m256d load4_part_f32(const float *p, ptrdiff_t w)
{
    return w >= 4 ? load4_f32(p) : _mm256_cvtps_pd(_mm_maskload_ps(p, mask_ps(w)));
}

NM_AVX2 static __m256d load4_f16(const nm_half *p)
{
    return _mm256_cvtps_pd(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)p)));
}

NM_AVX2 static __m256d load4_bf16(const nm_half *p)
{
    const __m128i wide = _mm_cvtepu16_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_cvtps_pd(_mm_castsi128_ps(_mm_slli_epi32(wide, 16)));
}

/* (the halves have no masked loads of 16-bit values: the tail goes through a copy) */
#define NM_HALF_PART(suffix)                                                               \
    NM_AVX2 static __m256d load4_part_##suffix(const nm_half *p, ptrdiff_t w)               \
    {                                                                                      \
        nm_half t[4] = {0, 0, 0, 0};                                                       \
        if (w >= 4)                                                                        \
            return load4_##suffix(p);                                                      \
        memcpy(t, p, sizeof(nm_half) * (size_t)(w > 0 ? w : 0));                           \
        return load4_##suffix(t);                                                          \
    }
NM_HALF_PART(f16)
NM_HALF_PART(bf16)

/* eight halves into float32, exactly */
NM_AVX2 static inline __m256 load8_f16(const nm_half *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

NM_AVX2 static inline __m256 load8_bf16(const nm_half *p)
{
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

/* eight halves in a register into float32, exactly */
NM_AVX2 static inline __m256 widen8_f16(__m128i h)
{
    return _mm256_cvtph_ps(h);
}

NM_AVX2 static inline __m256 widen8_bf16(__m128i h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* eight float32 to the half dtype, to nearest even (half.h: nm_f32_to_f16, nm_f32_to_bf16) */
NM_AVX2 static inline __m128i pack8_f16(__m256 v)
{
    return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

NM_AVX2 static inline __m128i pack8_bf16(__m256 v)
{
    const __m256i u = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), 16);
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    const __m256i h = _mm256_blendv_epi8(rounded, quiet, nan);
    /* 32 -> 16 bits within each 128-bit lane, then the two lanes' halves together */
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(h, h), 0x08));
}

/* four doubles to float32 rounded to odd (half.h: nm_f64_to_f32_odd, lane by lane) */
NM_AVX2 static inline __m128 f32_odd(__m256d d)
{
    const __m256i dropped = _mm256_set1_epi64x((long long)NM_DROPPED);
    const __m256i u = _mm256_castpd_si256(d);
    const __m256i exact = _mm256_cmpeq_epi64(_mm256_and_si256(u, dropped), _mm256_setzero_si256());
    const __m256i sticky = _mm256_andnot_si256(exact, _mm256_set1_epi64x(1LL << 29));
    const __m256i cut = _mm256_or_si256(_mm256_andnot_si256(dropped, u), sticky);
    /* below float32's normal range (not 0): rare, by the comparison */
    const __m256i magnitude = _mm256_srli_epi64(_mm256_slli_epi64(u, 1), 53);
    const __m256i tiny = _mm256_andnot_si256(
        _mm256_cmpeq_epi64(_mm256_slli_epi64(u, 1), _mm256_setzero_si256()),
        _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)NM_F32_MIN_EXP), magnitude));
    __m128 f = _mm256_cvtpd_ps(_mm256_castsi256_pd(cut));
    if (!_mm256_testz_si256(tiny, tiny)) {
        const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        const __m128 near = _mm256_cvtpd_ps(d);
        const __m256d back = _mm256_cvtps_pd(near), sign = _mm256_set1_pd(-0.0);
        const __m256d inexact = _mm256_cmp_pd(back, d, _CMP_NEQ_OQ);
        const __m256d above = _mm256_cmp_pd(_mm256_andnot_pd(sign, back),
                                            _mm256_andnot_pd(sign, d), _CMP_GT_OQ);
        const __m128i above32 = _mm256_castsi256_si128(
            _mm256_permutevar8x32_epi32(_mm256_castpd_si256(above), pick));
        const __m128i inexact32 = _mm256_castsi256_si128(
            _mm256_permutevar8x32_epi32(_mm256_castpd_si256(inexact), pick));
        const __m128i tiny32 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(tiny, pick));
        const __m128i odd = _mm_or_si128(_mm_add_epi32(_mm_castps_si128(near), above32),
                                         _mm_srli_epi32(inexact32, 31));
        f = _mm_blendv_ps(f, _mm_castsi128_ps(odd), _mm_castsi128_ps(tiny32));
    }
    return f;
}

#define nm_to_f32_f16 nm_f16_to_f32
#define nm_to_f32_bf16 nm_bf16_to_f32
#define nm_from_f64_f16 nm_f64_to_f16
#define nm_from_f64_bf16 nm_f64_to_bf16

#define NM_E float
#define NM_ESUF(name) name##_f32
#include "simd_sums.inc"
#undef NM_E
#undef NM_ESUF

#define NM_E nm_half
#define NM_ESUF(name) name##_f16
#include "simd_sums.inc"
#include "simd_half.inc"
#undef NM_ESUF

#define NM_ESUF(name) name##_bf16
#include "simd_sums.inc"
#include "simd_half.inc"
#undef NM_E
#undef NM_ESUF

/* The maps of plane_apply / chunk_apply and their gradient versions, in the same float
 * operations, written by non-temporal stores (runs of whole cache lines, see simd.h); each
 * thread calls nm_stream_fence once after its last one */
NM_AVX2 static __m256 affine8(__m256 x, __m256 hi, __m256 lo, __m256 a, __m256 b)
{
    return _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(x, hi), lo), a), b);
}

NM_AVX2 static __m256 grad8(__m256 dy, __m256 x, __m256 hi, __m256 lo, __m256 p, __m256 q,
                            __m256 s)
{
    return _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, dy),
                                       _mm256_mul_ps(q, _mm256_sub_ps(_mm256_sub_ps(x, hi), lo))),
                         s);
}

/* out[i .. i + 8) = VECTOR for every i < n in steps of 8 */
#define NM_STREAM_RUN(out, n, VECTOR)                                                      \
    do {                                                                                   \
        ptrdiff_t i;                                                                       \
        for (i = 0; i < (n); i += 8)                                                       \
            _mm256_stream_ps((out) + i, VECTOR);                                           \
    } while (0)

#define NM_LD(p) _mm256_loadu_ps(p)
#define NM_SET(v) _mm256_set1_ps(v)

/* The epilogue of 8 values, and of one, as channel.inc's portable loop: act(t + z) (z NULL:
 * act(t)), act(v) = max(0, v) with relu (maxps gives its second operand unless the first
 * is greater: NaN and -0 stay), v otherwise. Always inlined with z and relu known, so
 * each combination is a loop of its own. */
NM_AVX2 static inline __attribute__((always_inline)) __m256 epilogue8(__m256 t, const float *z,
                                                                      int relu)
{
    const __m256 v = z ? _mm256_add_ps(t, _mm256_loadu_ps(z)) : t;
    return relu ? _mm256_max_ps(_mm256_setzero_ps(), v) : v;
}

static inline __attribute__((always_inline)) float epilogue1(float t, const float *z, int relu)
{
    const float v = z ? t + *z : t;
    return relu && v < 0.0f ? 0.0f : v;
}

NM_AVX2 void nm_epilogue_f32_stream(const float *t, const float *z, float *y, ptrdiff_t n,
                                    int relu)
{
#define NM_RUN(zz, rr) NM_STREAM_RUN(y, n, epilogue8(NM_LD(t + i), (zz) ? (zz) + i : NULL, rr))
    NM_EPILOGUES(float, z, relu, NM_RUN);
#undef NM_RUN
}

NM_AVX2 void nm_relu_mask_stream_f32(const float *dy, const float *y, float *out, ptrdiff_t n)
{
    /* (cmpleps is false for NaN: dy passes) */
    NM_STREAM_RUN(out, n, _mm256_andnot_ps(_mm256_cmp_ps(NM_LD(y + i), _mm256_setzero_ps(),
                                                         _CMP_LE_OQ),
                                           NM_LD(dy + i)));
}

NM_AVX2 void nm_plane_apply_f32_stream(const float *x, float *y, ptrdiff_t n, float hi,
                                       float lo, float a, float b)
{
    NM_STREAM_RUN(y, n, affine8(NM_LD(x + i), NM_SET(hi), NM_SET(lo), NM_SET(a), NM_SET(b)));
}

NM_AVX2 void nm_plane_grad_apply_f32_stream(const float *dy, const float *x, float *dx,
                                            ptrdiff_t n, float hi, float lo, float p, float q,
                                            float s)
{
    NM_STREAM_RUN(dx, n, grad8(NM_LD(dy + i), NM_LD(x + i), NM_SET(hi), NM_SET(lo), NM_SET(p),
                               NM_SET(q), NM_SET(s)));
}

NM_AVX2 void nm_rows_apply_f32_stream(const float *x, float *y, ptrdiff_t C, ptrdiff_t ld,
                                      ptrdiff_t nrows, const float *hi, const float *lo,
                                      const float *a, const float *b)
{
    ptrdiff_t r;
    for (r = 0; r < nrows; r++, x += ld, y += ld)
        NM_STREAM_RUN(y, C, affine8(NM_LD(x + i), NM_LD(hi + i), NM_LD(lo + i), NM_LD(a + i),
                                    NM_LD(b + i)));
}

NM_AVX2 void nm_rows_grad_apply_f32_stream(const float *dy, const float *x, float *dx,
                                           ptrdiff_t C, ptrdiff_t ld, ptrdiff_t nrows,
                                           const float *hi, const float *lo, const float *p,
                                           const float *q, const float *s)
{
    ptrdiff_t r;
    for (r = 0; r < nrows; r++, dy += ld, x += ld, dx += ld)
        NM_STREAM_RUN(dx, C, grad8(NM_LD(dy + i), NM_LD(x + i), NM_LD(hi + i), NM_LD(lo + i),
                                   NM_LD(p + i), NM_LD(q + i), NM_LD(s + i)));
}

/* the forward's streamed maps with the epilogue (simd.h) */
NM_AVX2 void nm_plane_apply_epilogue_f32_stream(const float *x, const float *z, float *y,
                                                ptrdiff_t n, float hi, float lo, float a,
                                                float b, int relu)
{
#define NM_RUN(zz, rr)                                                                     \
    NM_STREAM_RUN(y, n, epilogue8(affine8(NM_LD(x + i), NM_SET(hi), NM_SET(lo), NM_SET(a),  \
                                          NM_SET(b)),                                      \
                                  (zz) ? (zz) + i : NULL, rr))
    NM_EPILOGUES(float, z, relu, NM_RUN);
#undef NM_RUN
}

NM_AVX2 void nm_rows_apply_epilogue_f32_stream(const float *x, const float *z, float *y,
                                               ptrdiff_t C, ptrdiff_t ld, ptrdiff_t nrows,
                                               const float *hi, const float *lo,
                                               const float *a, const float *b, int relu)
{
    ptrdiff_t r;
#define NM_RUN(zz, rr)                                                                     \
    for (r = 0; r < nrows; r++)                                                            \
        NM_STREAM_RUN(y + r * ld, C,                                                       \
                      epilogue8(affine8(NM_LD(x + r * ld + i), NM_LD(hi + i), NM_LD(lo + i), \
                                        NM_LD(a + i), NM_LD(b + i)),                       \
                                (zz) ? (zz) + r * ld + i : NULL, rr))
    NM_EPILOGUES(float, z, relu, NM_RUN);
#undef NM_RUN
}

/* The pipelined passes (simd.h): one plane's sums and another plane's map in one loop */

NM_AVX2 static inline __attribute__((always_inline)) void store8(float *out, __m256 v, int stream)
{
    if (stream)
        _mm256_stream_ps(out, v);
    else
        _mm256_storeu_ps(out, v);
}

/* the map of 8 values: the forward's of xm (k = hi, lo, a, b) or, with dym, the
 * gradient's (k = hi, lo, p, q, s) */
NM_AVX2 static inline __attribute__((always_inline)) __m256 map8(const float *dym,
                                                                 const float *xm,
                                                                 const __m256 *k)
{
    return dym ? grad8(NM_LD(dym), NM_LD(xm), k[0], k[1], k[2], k[3], k[4])
               : affine8(NM_LD(xm), k[0], k[1], k[2], k[3]);
}

/* the same map of one value, in the same float operations */
static inline __attribute__((always_inline)) float map1(const float *dym, const float *xm,
                                                        const float *k)
{
    return dym ? k[2] * *dym + k[3] * ((*xm - k[0]) - k[1]) + k[4]
               : ((*xm - k[0]) - k[1]) * k[2] + k[3];
}

/* (the forward's map with the epilogue act(map + z) where z or relu is given, see
 * epilogue8) */
NM_AVX2 static inline __attribute__((always_inline)) void sums_and_map(
    const float *dy, const float *x, double centre, double *su, double *sv, const float *dym,
    const float *xm, float *out, ptrdiff_t n, const float *coef, int stream, const float *z,
    int relu)
{
    const __m256d one = opaque_one(), c = _mm256_set1_pd(centre);
    __m256 k[5];
    plane_acc s;
    ptrdiff_t i;
    int j;
    for (j = 0; j < (dym ? 5 : 4); j++)
        k[j] = _mm256_set1_ps(coef[j]);
    acc_zero(&s);
    for (i = 0; i + NM_LANES <= n; i += NM_LANES) {
        acc_add16_f32(&s, dy ? dy + i : NULL, x + i, c, one);
        store8(out + i, epilogue8(map8(dym ? dym + i : NULL, xm + i, k), z ? z + i : NULL, relu),
               stream);
        store8(out + i + 8, epilogue8(map8(dym ? dym + i + 8 : NULL, xm + i + 8, k),
                                      z ? z + i + 8 : NULL, relu), stream);
    }
    acc_tail_f32(&s, dy ? dy + i : NULL, x + i, n - i, c);
    acc_totals(&s, su, sv);
    for (; i + 8 <= n; i += 8)   /* (a streamed plane is whole lines: no tail) */
        _mm256_storeu_ps(out + i, epilogue8(map8(dym ? dym + i : NULL, xm + i, k),
                                            z ? z + i : NULL, relu));
    for (; i < n; i++)
        out[i] = epilogue1(map1(dym ? dym + i : NULL, xm + i, coef), z ? z + i : NULL, relu);
}

NM_AVX2 void nm_plane_sums_apply_f32(const float *x, double centre, double *su, double *sv,
                                     const float *xm, float *y, ptrdiff_t n, const float *coef,
                                     int stream)
{
    if (stream)
        sums_and_map(NULL, x, centre, su, sv, NULL, xm, y, n, coef, 1, NULL, 0);
    else
        sums_and_map(NULL, x, centre, su, sv, NULL, xm, y, n, coef, 0, NULL, 0);
}

NM_AVX2 void nm_plane_sums_epilogue_f32(const float *x, double centre, double *su, double *sv,
                                        const float *xm, const float *z, float *y, ptrdiff_t n,
                                        const float *coef, int relu, int stream)
{
#define NM_RUN(zz, rr)                                                                     \
    do {                                                                                   \
        if (stream)                                                                        \
            sums_and_map(NULL, x, centre, su, sv, NULL, xm, y, n, coef, 1, zz, rr);        \
        else                                                                               \
            sums_and_map(NULL, x, centre, su, sv, NULL, xm, y, n, coef, 0, zz, rr);        \
    } while (0)
    NM_EPILOGUES(float, z, relu, NM_RUN);
#undef NM_RUN
}

NM_AVX2 void nm_plane_grad_sums_apply_f32(const float *dy, const float *x, double centre,
                                          double *su, double *sv, const float *dym,
                                          const float *xm, float *dx, ptrdiff_t n,
                                          const float *coef, int stream)
{
    if (stream)
        sums_and_map(dy, x, centre, su, sv, dym, xm, dx, n, coef, 1, NULL, 0);
    else
        sums_and_map(dy, x, centre, su, sv, dym, xm, dx, n, coef, 0, NULL, 0);
}

#undef NM_LD
#undef NM_SET
#undef NM_STREAM_RUN

#else /* no AVX2 build: the portable loops do everything */

int nm_simd_enabled(void)
{
    return 0;
}

void nm_set_simd(int on)
{
    (void)on;
}

int nm_stream(size_t footprint, const void *out, size_t run_bytes)
{
    (void)footprint, (void)out, (void)run_bytes;
    return 0;
}

size_t nm_streamed_ops(void)
{
    return 0;
}

void nm_count_pipelined(void)
{
}

size_t nm_pipelined_ops(void)
{
    return 0;
}

void nm_stream_fence(void)
{
}

size_t nm_stream_bytes(void)
{
    return NM_STREAM_BYTES;
}

void nm_set_stream_bytes(size_t nbytes)
{
    (void)nbytes;
}

void nm_plane_sums_apply_f32(const float *x, double centre, double *su, double *sv,
                             const float *xm, float *y, ptrdiff_t n, const float *coef,
                             int stream)
{
    (void)x, (void)centre, (void)su, (void)sv, (void)xm, (void)y, (void)n, (void)coef,
        (void)stream;
}

void nm_plane_grad_sums_apply_f32(const float *dy, const float *x, double centre, double *su,
                                  double *sv, const float *dym, const float *xm, float *dx,
                                  ptrdiff_t n, const float *coef, int stream)
{
    (void)dy, (void)x, (void)centre, (void)su, (void)sv, (void)dym, (void)xm, (void)dx, (void)n,
        (void)coef, (void)stream;
}

void nm_plane_sums_epilogue_f32(const float *x, double centre, double *su, double *sv,
                                const float *xm, const float *z, float *y, ptrdiff_t n,
                                const float *coef, int relu, int stream)
{
    (void)x, (void)centre, (void)su, (void)sv, (void)xm, (void)z, (void)y, (void)n, (void)coef,
        (void)relu, (void)stream;
}

#endif
