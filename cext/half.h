/* Private: the scalar conversions between the half dtypes (IEEE binary16 "float16" and
 * bfloat16, the upper half of a float32) and float32/float64. Loads are exact. Stores
 * round a double once, to nearest, ties to even, as if the double's exact value were
 * rounded straight to the half dtype: first to float32 rounding to odd (an inexact result
 * keeps its lowest bit set, so it never lands on a tie of the coarser half grid), then to
 * the half dtype to nearest even, which gives the direct rounding whenever float32 has
 * two bits more than the half dtype (it has 13 and 16 more). Rounding to float32 to
 * nearest first would round 1 + 2^-8 + 2^-40 to 1 + 2^-8, a bfloat16 tie, and then to 1.
 * The AVX2 + F16C loops of simd.c do the same operations lane by lane, so both give the
 * same bits (a NaN keeps its sign and its upper payload bits and becomes quiet, as
 * vcvtps2ph does; which NaN a map's result carries where several of its operands are
 * NaN depends on the order the compiler gives a multiply-add's operands, as for float32:
 * simd.h). */
#ifndef NORMOPS_HALF_H
#define NORMOPS_HALF_H

#include <stdint.h>
#include <string.h>

#include "normops.h"

static inline uint32_t nm_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float nm_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* float16 -> float32, exact: the exponent and mantissa moved into place and scaled by
 * 2^112 (the difference of the exponent biases), which also normalizes subnormals; an
 * exponent of all ones (inf, NaN) gets float32's */
static inline float nm_f16_to_f32(nm_half h)
{
    const uint32_t magnitude = (uint32_t)(h & 0x7fff) << 13;
    const float scaled = nm_bits_f32(magnitude) * 0x1p112f;
    const uint32_t special = (h & 0x7c00) == 0x7c00 ? 0x7f800000u | magnitude : nm_f32_bits(scaled);
    return nm_bits_f32(special | ((uint32_t)(h & 0x8000) << 16));
}

static inline float nm_bf16_to_f32(nm_half h)
{
    return nm_bits_f32((uint32_t)h << 16);
}

/* double -> float32 rounded to odd: truncated towards zero, the lowest bit set when that
 * was inexact. Within float32's normal range on the double's bits: its mantissa cut to
 * float32's 24 bits, the lowest kept bit set when a dropped one was (a double that
 * float32 then holds exactly; five integer operations and the cast, the cheapest correct
 * rounding found here: comparing the cast back with the double took twice as long per
 * value). Below that range, where float32's spacing is fixed and fewer bits are kept, by
 * that comparison: the cast to nearest, one step back towards zero where it went away
 * from it, the lowest bit set (bfloat16's subnormals are rounded from these). Beyond
 * FLT_MAX the cast gives infinity, as the half rounding would. */
#define NM_DROPPED ((uint64_t)0x1fffffff)   /* the 29 mantissa bits float32 does not keep */
#define NM_F32_MIN_EXP ((uint64_t)(1023 - 126))   /* float32's smallest normal, as a double */

static inline float nm_f64_to_f32_odd(double d)
{
    uint64_t u;
    double cut;
    memcpy(&u, &d, sizeof u);
    if (((u >> 52) & 0x7ff) < NM_F32_MIN_EXP && (u << 1) != 0) {
        const float f = (float)d;
        const double back = (double)f;
        const uint32_t above = (back < 0 ? -back : back) > (d < 0 ? -d : d);
        return nm_bits_f32((nm_f32_bits(f) - above) | (uint32_t)(back != d));
    }
    u = (u & ~NM_DROPPED) | ((uint64_t)((u & NM_DROPPED) != 0) << 29);
    memcpy(&cut, &u, sizeof cut);
    return (float)cut;
}

/* float32 -> float16 to nearest even (vcvtps2ph with imm 0): normal results by adding
 * the rounding bias to the bits; results below 2^-14 by one float addition of 0.5, which
 * rounds the subnormal's bits into the low mantissa as the hardware would */
static inline nm_half nm_f32_to_f16(float f)
{
    const uint32_t u = nm_f32_bits(f), sign = (u >> 16) & 0x8000, a = u & 0x7fffffff;
    const uint32_t nan = 0x7e00 | ((a >> 13) & 0x3ff);
    const uint32_t normal = (a - ((uint32_t)(127 - 15) << 23) + 0xfff + ((a >> 13) & 1)) >> 13;
    const uint32_t tiny = nm_f32_bits(nm_bits_f32(a) + 0.5f) - nm_f32_bits(0.5f);
    const uint32_t h = a > 0x7f800000u ? nan
                       : a >= 0x477ff000u ? 0x7c00   /* 65520 and above: infinity */
                       : a < 0x38800000u ? tiny      /* below 2^-14 */
                       : normal;
    return (nm_half)(h | sign);
}

/* float32 -> bfloat16 to nearest even; a NaN stays NaN (quiet) */
static inline nm_half nm_f32_to_bf16(float f)
{
    const uint32_t u = nm_f32_bits(f);
    const uint32_t rounded = (u + 0x7fff + ((u >> 16) & 1)) >> 16;
    return (nm_half)((u & 0x7fffffff) > 0x7f800000u ? (u >> 16) | 0x40 : rounded);
}

static inline nm_half nm_f64_to_f16(double d)
{
    return nm_f32_to_f16(nm_f64_to_f32_odd(d));
}

static inline nm_half nm_f64_to_bf16(double d)
{
    return nm_f32_to_bf16(nm_f64_to_f32_odd(d));
}

#endif
