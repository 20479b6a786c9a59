/* The float32, float64, float16 and bfloat16 kernels, instantiated from one template:
 * rows.inc and planes.inc are the two layout drivers, channel.inc the per-channel math,
 * each compiled once per dtype with NM_T set to the element type, NM_M to the precision
 * of the elementwise maps and NM_LD / NM_ST to the loads and stores between them. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "half.h"
#include "normops.h"
#include "simd.h"
#include "threads.h"

/* Fewest values in one unit of the planes path's statistics: shorter planes are grouped,
 * so that adding up the lanes and storing the partials, once per unit, stays a small part
 * of the work. Larger units read more planes at once, C planes apart, which the
 * prefetcher follows less well (3.2M float32 values in planes of 196, statistics /
 * gradient sums in ms: units of one plane 0.38 / 0.57, of 768 values 0.23 / 0.39, of
 * 1024 0.23 / 0.48, of 4096 0.41 / 1.26). */
#define NM_UNIT_MIN 768
/* Channels whose per-channel math (and, on the rows path, whose merge of the chunk
 * partials) runs as one loop: enough for the vector units, few enough for the stack. */
#define NM_CHANNEL_BLOCK 64
/* Values of a piece of the forward's epilogue where it goes through a scratch (rows.inc
 * chunk_apply_epilogue): on each thread's stack, in L1 beside the lines of x, z and y in
 * flight. Fewer pay more calls per value, more gained nothing (bfloat16 eval forward
 * with a residual and relu, 1 thread, ms on NC-8192x2048 / NHWC-32x56x56x64 /
 * NCHW-32x64x56x56: pieces of 256 values 15.0 / 5.6 / 5.7, of 1024 14.1 / 5.5 / 5.3, of
 * 4096 13.8 / 5.9 / 5.0). A multiple of 16, so that the pieces of a streamed run start
 * on cache lines. */
#define NM_PIECE 1024
/* Values of a work item of nm_relu_mask_*: the pieces the team shares out in order */
#define NM_MASK_PIECE 16384
#if defined(__GNUC__)
#define NM_ALIGNED __attribute__((aligned(64)))
#else
#define NM_ALIGNED
#endif
/* The lane loops vectorize across the lanes (no reassociation), so the summation order
 * is the same in every build. */
#define NM_VECTOR NM_PRAGMA(omp simd)

/* Hot loops get an AVX2 clone picked at load time, so the default build runs on any
 * x86-64 and still uses the wide vectors where they exist. The build turns FMA
 * contraction off (-ffp-contract=off), so both clones give bitwise the same results. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(NM_NO_CLONES) \
    && (defined(__clang__) ? __clang_major__ >= 14 : __GNUC__ >= 6)
#define NM_HOT __attribute__((target_clones("avx2", "default")))
#else
#define NM_HOT
#endif

/* element i of a per-channel array of dtype t, in double (exact) */
static double get(const void *data, ptrdiff_t i, nm_dtype t)
{
    switch (t) {
    case NM_F32:
        return (double)((const float *)data)[i];
    case NM_F64:
        return ((const double *)data)[i];
    case NM_F16:
        return (double)nm_f16_to_f32(((const nm_half *)data)[i]);
    case NM_BF16:
    default:
        return (double)nm_bf16_to_f32(((const nm_half *)data)[i]);
    }
}

/* element i of a per-channel array of dtype t = v, rounded once */
static void put(void *data, ptrdiff_t i, nm_dtype t, double v)
{
    switch (t) {
    case NM_F32:
        ((float *)data)[i] = (float)v;
        break;
    case NM_F64:
        ((double *)data)[i] = v;
        break;
    case NM_F16:
        ((nm_half *)data)[i] = nm_f64_to_f16(v);
        break;
    case NM_BF16:
        ((nm_half *)data)[i] = nm_f64_to_bf16(v);
        break;
    }
}

/* v[c0 .. c0 + w) in double, or `absent` throughout when v is absent */
static void vec_load(nm_vec v, ptrdiff_t c0, ptrdiff_t w, double absent, double *out)
{
    ptrdiff_t i;
    for (i = 0; i < w; i++)
        out[i] = v.data ? get(v.data, (c0 + i) * v.stride, v.dtype) : absent;
}

/* running <- (1 - momentum) * running + momentum * batch, computed in double */
static void vec_blend(nm_vec v, ptrdiff_t c0, ptrdiff_t w, const double *batch, double momentum)
{
    ptrdiff_t i;
    for (i = 0; i < w; i++) {
        const ptrdiff_t at = (c0 + i) * v.stride;
        put(v.data, at, v.dtype, (1.0 - momentum) * get(v.data, at, v.dtype) + momentum * batch[i]);
    }
}

static double clip(double v, double lo, double hi)
{
    return v < lo ? lo : (v > hi ? hi : v);   /* NaN passes through, as numpy.clip */
}

/* wide_map: the maps run in the data's precision from coefficients rounded to it, which
 * is exact to that precision while the coefficients and the centre stay well inside the
 * dtype's normal range (NM_MAP_RANGE and NM_MAP_TINY, set per dtype below). At extreme
 * but finite scales they do not: a float32 channel of spread 1e25 has a gradient
 * coefficient q of order gamma dy / sigma^2 = 1e-50, which underflows float32 (dx 3 % off);
 * gamma 1e38 over a spread of 0.01 makes a = gamma invstd overflow; values near FLT_MAX of
 * both signs make x - mean overflow. Such a channel is mapped "wide": in double, from the
 * double coefficients, in a factored form whose every intermediate is of the size of a
 * result (y = (((x - m) - ml) k) g + b, dx = ((c1 dy + c2 ((x - m) - ml)) + c3) c4, with
 * the centre m + ml), rounded once. The
 * choice depends on the coefficients alone, so results stay bitwise the same for any
 * thread count. A NaN coefficient takes the ordinary map, which gives NaN too. */
/* (branch-free, as they run once per channel in loops that should vectorize) */
static inline int beyond_range(double v, double range, double tiny)
{
    const double mag = fabs(v);
    return (mag > range) | ((mag != 0.0) & (mag < tiny));
}

/* whether the product f1 f2 underflowed to 0 (a map without its term would be wrong) */
static inline int lost(double product, double f1, double f2)
{
    return (product == 0.0) & (f1 != 0.0) & (f2 != 0.0);
}

/* whether the gradient's map reads x: not in eval mode, whose dx = dy gamma invstd does not
 * depend on x (a NaN in x leaves dx alone there; only dgamma reads x) */
static int grad_reads_x(const nm_backward_args *A)
{
    return A->mode != NM_BWD_FUSED || A->training;
}

/* whether any of the C channels maps wide (wide_map): then the whole op does on the rows
 * path, whose loops run across the channels */
static int any_wide(const unsigned char *wide, ptrdiff_t C)
{
    unsigned char any = 0;
    ptrdiff_t c;
    for (c = 0; c < C; c++)   /* no early exit: it vectorizes, and wide channels are rare */
        any |= wide[c];
    return any != 0;
}

/* The coefficients of the elementwise maps of the rows path, spread from the channels to
 * the columns: col[j] = col[j / fold] for j < C fold (downwards, as col[j / fold] is then
 * still unread), then group - 1 more copies of those (row_group) */
#define NM_SPREAD_COLUMNS(col, C, fold, group)                                             \
    do {                                                                                   \
        ptrdiff_t j_;                                                                      \
        for (j_ = (C) * (fold) - 1; (fold) > 1 && j_ > 0; j_--)                            \
            (col)[j_] = (col)[j_ / (fold)];                                                \
        for (j_ = (C) * (fold); j_ < (group) * (C) * (fold); j_++)                         \
            (col)[j_] = (col)[j_ - (C) * (fold)];                                          \
    } while (0)

/* planes per unit of the planes path's statistics */
static ptrdiff_t plane_group(ptrdiff_t inner)
{
    return inner >= NM_UNIT_MIN ? 1 : (NM_UNIT_MIN + inner - 1) / inner;
}

/* the mean less `centre` and the m2 of values whose sums about `centre` are s1 (of
 * x - centre) and s2 (of its square), over n values */
static void shifted_moments(double s1, double s2, double n, double *delta, double *m2)
{
    const double sq = s2 - s1 * s1 / n;
    *delta = s1 / n;
    *m2 = sq < 0.0 ? 0.0 : sq;
}

/* The mean centre + delta as hi + lo, hi the double nearest to it: the rounding of hi,
 * offset / 2^53 spreads at an offset, is what lo keeps (float64 1e12 + N(0, 1) normalized
 * about hi alone came out 2e-5 off). At an offset delta is far below centre, and
 * centre - hi is exact (Fast2Sum); where it is not, there is no offset to lose and lo
 * is only a correction below the rounding of delta. */
static double mean_low(double centre, double delta, double hi)
{
    return (centre - hi) + delta;
}

/* The pipelined planes path (planes.inc) wants NM_PIPE_CHANNELS channels per thread or
 * more, as a range's first channel is summed, and its last one mapped, on its own; and
 * planes of NM_PIPE_PLANE_MIN values or more, as it reads a channel's planes one after
 * the other, C planes apart: shorter runs starve the prefetcher (6.4M values here, as
 * training forward / backward in ms against the other schedule: planes of 256 values
 * 2.1 / 3.8 against 2.0 / 2.7, and 2.65 / 4.5 against 1.70 / 2.76 once the other schedule
 * took units of 768 values, of 1024 values 1.6 / 2.6 against 1.9 / 2.9, of 3136
 * values 1.35 / 2.4 against 1.85 / 2.5). */
#define NM_PIPE_CHANNELS 4
#define NM_PIPE_PLANE_MIN 1024
#if NM_PIPE_PLANE_MIN < NM_UNIT_MIN
#error "the pipelined path sums whole units of one plane"
#endif

/* sums of channel c over the units (two per unit, starting at part[0] and part[1]) */
static void unit_totals(const double *part, ptrdiff_t units, ptrdiff_t channels, ptrdiff_t c,
                        double *t0, double *t1)
{
    double a = 0.0, b = 0.0;
    ptrdiff_t g;
    for (g = 0; g < units; g++) {
        a += part[2 * (g * channels + c)];
        b += part[2 * (g * channels + c) + 1];
    }
    *t0 = a, *t1 = b;
}

/* rows per chunk of the rows path, for rows of W values: NM_ROW_CHUNK, or a multiple of
 * it for rows of fewer than NM_ROW_CHUNK values, so that every chunk holds at least
 * NM_ROW_CHUNK^2 values and the per-chunk partials and merges stay a small part of the
 * work */
static ptrdiff_t chunk_len(ptrdiff_t W)
{
    return W >= NM_ROW_CHUNK ? NM_ROW_CHUNK : NM_ROW_CHUNK * ((NM_ROW_CHUNK + W - 1) / W);
}

/* Rows of fewer than NM_WIDE values are too short for the vector loops: the passes take
 * such a chunk NM_WIDE rows at a time, as one row of NM_WIDE W values (the maps with
 * coefficient columns that repeat the row's, so each value still gets its own column's
 * coefficients). Rows taken at a time: */
#define NM_WIDE 8
static ptrdiff_t row_group(ptrdiff_t W)
{
    return W < NM_WIDE ? NM_WIDE : 1;
}

/* The maps of the rows path take several rows per pass over the columns, so that each
 * column's coefficients are loaded once for several values, where a row is a run of its
 * own for the hardware prefetcher (a page or more), or where several rows together make
 * one short run. Rows in between interleave several short runs within a page, which the
 * prefetcher does not follow, and go one row at a time, one run through memory
 * (cache-resident 12 MB, 1 thread, ms of the map / of the gradient's map against a copy's
 * 0.8 to 1.0: float32 rows of 128 values 1.40 / 2.19 -> 1.17 / 1.52, of 256 values 1.55 /
 * 2.51 -> 1.32 / 1.72, float64 rows of 64 values 1.37 / 2.16 -> 1.06 / 1.49; float32
 * rows of 2048 values 0.81 / 1.47 several at a time, 1.28 / 1.73 one at a time; of 64
 * values 1.12 / 1.51 against 1.20 / 1.61). */
#define NM_RUN_BYTES_MIN 512
#define NM_RUN_BYTES_PAGE 4096
static int rows_together(ptrdiff_t row_bytes)
{
    return row_bytes < NM_RUN_BYTES_MIN || row_bytes >= NM_RUN_BYTES_PAGE;
}

/* Planes of at most this many values take the rows path, as rows of C planes: a plane
 * that short is no run of its own (6.4M values in planes of 2: training forward 32 -> 2 ms
 * here, of 8: 7.7 -> 2.7 ms; from 16 values on, planes and rows are about even) */
#define NM_FOLD_MAX 8
/* Work items (chunks x column blocks) the rows path wants at least, and the fewest
 * columns of a block (shorter segments of rows measured slower): a batch of 32 rows of
 * 4096 features is one chunk, which 8 column blocks then share out among the threads.
 * Blocks of 512 columns let a batch of one chunk of 1024 columns use 2 threads, not 1
 * (64 x 1024 float32, 2 threads, us per kernel call of the training forward / backward:
 * 46 / 60 -> 32 / 40; 16 x 2048: 63 / 81 -> 39 / 52); blocks of 256 gained nothing more. */
#define NM_ITEMS_MIN 16
#define NM_BLOCK_COLUMNS_MIN 512

static ptrdiff_t column_blocks(ptrdiff_t W, ptrdiff_t chunks)
{
    const ptrdiff_t want = (NM_ITEMS_MIN + chunks - 1) / chunks, most = W / NM_BLOCK_COLUMNS_MIN;
    return want < most ? want : most > 1 ? most : 1;
}

/* columns per block: a multiple of 16, so every block of a row of whole cache lines
 * starts on a line (streamed stores); the last block takes the rest */
static ptrdiff_t block_width(ptrdiff_t W, ptrdiff_t blocks)
{
    const ptrdiff_t per = (W + blocks - 1) / blocks;
    return blocks == 1 ? W : (per + 15) / 16 * 16;
}

/* rows of chunk k (of `len` rows each, the last one partial) */
static ptrdiff_t chunk_rows(ptrdiff_t rows, ptrdiff_t len, ptrdiff_t k)
{
    ptrdiff_t left = rows - k * len;
    return left < len ? left : len;
}

/* How the rows path lays out an input, fixed by its shape: `rows` rows of W = C fold
 * values, in `chunks` chunks of `len` rows, each cut into `blocks` column blocks of `bw`
 * columns (the last one shorter); narrow rows go `group` at a time (see rows.inc) */
typedef struct {
    ptrdiff_t rows, C, fold, W, len, chunks, blocks, bw, group;
} rows_plan;

static rows_plan plan_rows(nm_shape sh)
{
    rows_plan p;
    p.rows = sh.outer, p.C = sh.channels, p.fold = sh.inner, p.W = p.C * p.fold;
    p.len = chunk_len(p.W), p.chunks = (p.rows + p.len - 1) / p.len;
    p.blocks = column_blocks(p.W, p.chunks), p.bw = block_width(p.W, p.blocks);
    p.group = row_group(p.W);
    return p;
}

/* work item u: chunk *t, columns *j0 .. *j0 + *wj, whose first value is at offset *at */
static void plan_item(const rows_plan *p, ptrdiff_t u, ptrdiff_t *t, ptrdiff_t *j0,
                      ptrdiff_t *wj, ptrdiff_t *at)
{
    *t = u / p->blocks, *j0 = u % p->blocks * p->bw;
    *wj = p->W - *j0 < p->bw ? p->W - *j0 : p->bw;
    *at = *t * p->len * p->W + *j0;
}

/* float32: one pass of sums of d = x - k and d^2 in double, k a value of the block. d is
 * exact in double and the cancellation in sum d^2 - (sum d)^2 / n costs a relative
 * n * 2^-53 at worst (k an outlier), far below float32's 2^-24 for any real n. float64
 * has no such margin and takes the second pass about the mean. */
/* sums per column of the rows path's gradient: sum dy, sum dy (x - mean), and for float64
 * sum (x - mean) (backward_channels) */
#define NM_GRAD_SUMS (2 + NM_TWO_PASS)

/* The halves' maps run in float32 first (simd_half.inc): from float32 coefficients, and
 * with the terms of a bound on the result's error, which decides whether the float32
 * result rounds to the half dtype as the double map's does. The centre is rounded to
 * float32, fh, and what that moved goes into the offset (b - (hi - fh) a, exact in double
 * before its one rounding), so that x - fh is the map's only subtraction. Per column:
 * fh, a, b, 2 |a|, and the offset's share of the bound, |b| + 2^-50 |a| |fh| (NaN where
 * a float32 coefficient is neither within float32's normal range nor an exact 0: the
 * bound would not hold, so such columns map in double); for the gradient fh, p, q, s,
 * 3 |q|, 2 |s| + 2^-50 |q| |fh| and |p|; the bound's terms divided by the dtype's ratio
 * R (simd.h NM_HALF_R_*). */
#define NM_FAST_COEF 5
#define NM_FAST_GRAD_COEF 7
#define NM_FAST_EXP_MAX 0x1p100f

/* f is a float32 coefficient the bound can use for the double d */
static int trusted(float f, double d)
{
    const float mag = fabsf(f);
    return f == 0.0f ? d == 0.0 : mag >= FLT_MIN && mag <= NM_FAST_EXP_MAX;
}

/* (the bound's coefficients come divided by the ratio r: a power of two, so exactly) */
static void fast_coef(float *out, ptrdiff_t stride, double hi, double a, double b, float r)
{
    const float fh = (float)hi, fa = (float)a, fb = (float)(b - (hi - (double)fh) * a);
    const int ok = trusted(fh, hi) & trusted(fa, a) & trusted(fb, b - (hi - (double)fh) * a);
    out[0] = fh, out[stride] = fa, out[2 * stride] = fb, out[3 * stride] = 2.0f * fabsf(fa) / r;
    out[4 * stride] = ok ? (fabsf(fb) + 0x1p-50f * fabsf(fa) * fabsf(fh)) / r : NAN;
}

static void fast_grad_coef(float *out, ptrdiff_t stride, double hi, double p, double q, double s,
                           float r)
{
    const double s2 = s - (hi - (double)(float)hi) * q;
    const float fh = (float)hi, fp = (float)p, fq = (float)q, fs = (float)s2;
    const int ok = trusted(fh, hi) & trusted(fp, p) & trusted(fq, q) & trusted(fs, s2);
    out[0] = fh, out[stride] = fp, out[2 * stride] = fq, out[3 * stride] = fs;
    out[4 * stride] = 3.0f * fabsf(fq) / r;
    out[5 * stride] = ok ? (2.0f * fabsf(fs) + 0x1p-50f * fabsf(fq) * fabsf(fh)) / r : NAN;
    out[6 * stride] = fabsf(fp) / r;
}

/* The elementwise maps, y = ((x - hi) - lo) a + b and dx = p dy + q ((x - hi) - lo) + s:
 * float32 and float64 round each operation (in the data's precision, from the centre
 * split into hi + lo); the halves map in double with fused multiply-adds, lo folded into
 * b (b - lo a) and s (s - q lo) once per channel (NM_FOLD_LO): the same result to far
 * below a half ulp, in 2 and 3 operations instead of 4 and 6, which the double maps,
 * four values to a vector, are bound by (simd_half.inc). fma() is exact in every build,
 * so the portable loops give the AVX2 loops' bits. */
#define NM_AFFINE_SPLIT(x, h, l, a, b) ((((x) - (h)) - (l)) * (a) + (b))
#define NM_GRAD_SPLIT(dy, x, h, l, p, q, s) ((p) * (dy) + (q) * (((x) - (h)) - (l)) + (s))
#define NM_AFFINE_FUSED(x, h, l, a, b) ((void)(l), fma((x) - (h), (a), (b)))
#define NM_GRAD_FUSED(dy, x, h, l, p, q, s) ((void)(l), fma((p), (dy), fma((q), (x) - (h), (s))))

/* NM_SIMD: the statistics loops may hand their main part to simd.c (and streamed maps);
 * NM_SIMD_HALF: every map goes to simd.c's double maps, which convert the halves with
 * F16C or integer shifts, the portable conversions (half.h) being too slow for a pass
 * that should run at memory speed; NM_SIMD_F32: the pipelined planes path (planes.inc) */
#define NM_T float
#define NM_M float
#define NM_LD(v) (v)
#define NM_ST(v) ((float)(v))
#define NM_AFFINE NM_AFFINE_SPLIT
#define NM_GRAD NM_GRAD_SPLIT
#define NM_FOLD_LO 0
#define NM_FAST 0
#define NM_SUF(name) name##_f32
#define NM_TWO_PASS 0
#define NM_SIMD NM_SIMD_BUILD
#define NM_SIMD_HALF 0
#define NM_SIMD_F32 1
#define NM_EPILOGUE_SCRATCH 0
/* float32: 2^100 leaves 2^27 of headroom below FLT_MAX for a map's products with values of
 * the channel's spread and for their sums (dy near FLT_MAX and correlated with x can still
 * overflow p dy and q (x - m) on their own: left alone); from 2^-120 a coefficient has all its digits (denormals start at 2^-126), and a
 * product of it that comes out denormal is far below the other terms of a result that
 * float32 holds (wide_map) */
#define NM_MAP_RANGE 0x1p100
#define NM_MAP_TINY 0x1p-120
#define NM_NEGATIVE(v) ((v) < 0.0f)
#define NM_NOT_POSITIVE(v) ((v) <= 0.0f)
#include "channel.inc"
#include "planes.inc"
#include "rows.inc"
#include "entry.inc"
#include "undef.inc"

#define NM_T double
#define NM_M double
#define NM_LD(v) (v)
#define NM_ST(v) (v)
#define NM_AFFINE NM_AFFINE_SPLIT
#define NM_GRAD NM_GRAD_SPLIT
#define NM_FOLD_LO 0
#define NM_FAST 0
#define NM_SUF(name) name##_f64
#define NM_TWO_PASS 1
#define NM_SIMD 0
#define NM_SIMD_HALF 0
#define NM_SIMD_F32 0
#define NM_EPILOGUE_SCRATCH 0
#define NM_MAP_RANGE 0x1p900
#define NM_MAP_TINY 0x1p-1000
#define NM_NEGATIVE(v) ((v) < 0.0)
#define NM_NOT_POSITIVE(v) ((v) <= 0.0)
#include "channel.inc"
#include "planes.inc"
#include "rows.inc"
#include "entry.inc"
#include "undef.inc"

/* The half dtypes: statistics as for float32 (x - k is exact in double for float16, and as
 * close as for float32 for bfloat16, whose exponents are float32's), maps in double from
 * double coefficients, so each output is the double result rounded once (half.h). Their
 * ranges are far inside double's, so the wide map is for the same extremes as float64's. */
#define NM_SUF(name) name##_f16
#define NM_LD(v) ((double)nm_f16_to_f32(v))
#define NM_ST(v) nm_f64_to_f16(v)
#define NM_EPILOGUE_SCRATCH 0
#include "half_instance.inc"

#define NM_SUF(name) name##_bf16
#define NM_LD(v) ((double)nm_bf16_to_f32(v))
#define NM_ST(v) nm_f64_to_bf16(v)
/* bfloat16's AVX2 maps take the forward's epilogue through the scratch (rows.inc
 * chunk_apply_epilogue), and its training forward with one leaves the pipelined planes
 * path (planes.inc pipeline_ranges) for the other schedule, which has it so: its rounding
 * by integer operations, twice in one loop with the map, ran out of registers (1 thread,
 * 16.8M values, eval forward in ms: the map alone 8.9; with a residual 13.8 through the
 * scratch, 16.1 in one loop; float16, whose roundings are single instructions, 7.7 in
 * one loop against 8.8; training forward on NCHW-32x64x56x56 with a residual and relu,
 * in times the plain one and a read of z: pipelined 1.32 to 1.38, the other schedule
 * 1.09 to 1.20) */
#define NM_EPILOGUE_SCRATCH 1
#include "half_instance.inc"
