/* The float32 and float64 kernels, instantiated from one template: rows.inc and
 * planes.inc are the two layout drivers, channel.inc the per-channel math, each
 * compiled once per dtype with NM_T set to the element type. */
#include <math.h>
#include <stdlib.h>

#include "normops.h"
#include "threads.h"

/* Bytes of one column block of the rows path: small enough that the normalizing pass
 * finds the block in cache after the statistics pass has read it. Only speed depends on
 * it: each column's reduction order is set by NM_ROW_CHUNK alone. */
#define NM_BLOCK_BYTES ((double)(4 << 20))
/* Columns of one tile of the rows path (the per-thread accumulators live on the stack). */
#define NM_TILE_COLS 64
/* Independent accumulators of the planes path's sums: lets the compiler vectorize
 * without reassociating, so the order is the same in every build. */
#define NM_LANES 8

typedef struct {
    double shift, a, b;       /* forward:  y = (x - shift) * a + b */
} nm_affine;

typedef struct {
    double centre, p, q, s;   /* backward: dx = p * dy + q * (x - centre) + s */
} nm_grad_affine;

static double lanes_total(const double *acc)
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static double clip(double v, double lo, double hi)
{
    return v < lo ? lo : (v > hi ? hi : v);   /* NaN passes through, as numpy.clip */
}

static ptrdiff_t block_width(ptrdiff_t rows, ptrdiff_t channels, size_t itemsize)
{
    ptrdiff_t w = (ptrdiff_t)(NM_BLOCK_BYTES / ((double)rows * (double)itemsize));
    w = w / NM_TILE_COLS * NM_TILE_COLS;
    if (w < NM_TILE_COLS)
        w = NM_TILE_COLS;
    return w < channels ? w : channels;
}

static ptrdiff_t chunk_rows(ptrdiff_t rows, ptrdiff_t k)
{
    ptrdiff_t left = rows - k * NM_ROW_CHUNK;
    return left < NM_ROW_CHUNK ? left : NM_ROW_CHUNK;
}

#define NM_T float
#define NM_SUF(name) name##_f32
#include "channel.inc"
#include "planes.inc"
#include "rows.inc"
#include "entry.inc"
#undef NM_T
#undef NM_SUF

#define NM_T double
#define NM_SUF(name) name##_f64
#include "channel.inc"
#include "planes.inc"
#include "rows.inc"
#include "entry.inc"
#undef NM_T
#undef NM_SUF
