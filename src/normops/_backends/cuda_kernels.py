"""The CUDA kernels of the fused cupy backend, written once with numba-cuda.

The same functions run on a GPU (compiled by numba-cuda, launched on CuPy arrays) and,
in CI, on NumPy arrays in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which
executes every thread of every block, ``syncthreads`` included. So the code keeps to
what the simulator has: shared-memory reductions, no warp shuffles, and each
``cuda.shared.array`` on a line of its own (two on one line alias in the simulator).

Every kernel walks the canonical (outer, C, inner) view with one mapping: block (bx, by)
of grid (ceil(C / bx), chunks); thread (tx, ty) serves channel ``blockIdx.x * bx + tx``
and the positions q = n * inner + i of its chunk from ``ty`` in steps of ``by``. With
channels apart in memory (NCHW) the launch takes bx = 1, so a warp reads consecutive i
of one channel; with channels adjacent (NHWC, NC) bx spans channels, so a warp reads
consecutive channels of one position. Either way loads are coalesced and each thread
keeps its channel's parameters in registers. (cuda_launch picks the shapes.)

Each kernel is compiled (``compiled(name)``, on first use) for its signatures alone:
x-shaped arrays of float16, float32 or float64 in any layout ("A": contiguous arrays
convert to it), per-channel vectors and partial sums in float64. So a process compiles
each kernel three times at most, whatever layouts it meets, and CI compiles the same
list to PTX (tests/cuda_compile.py).

Sums are in float64, whatever x's dtype. Batch statistics are shifted sums per thread,
turned into (count, mean, M2) and merged with Chan's formula: across a block by a tree
in shared memory, across blocks by a second kernel in chunk order. The shift is the
thread's first value: a value among those summed is within sqrt(n) standard deviations
of their mean, so the one-pass M2 = S2 - S1^2 / n loses at most about n^2 ulps to
cancellation, whatever the offset (an outlier shift included). Means are kept relative
to the channel's first value, which bounds the error of the merges the same way.
Where the shifted squares overflow (values near 1e154 in float64) a thread redoes its
values with Welford's updates, so statistics are NaN only where M2 itself overflows or
a value is NaN or inf. No floating-point atomics: for one shape and layout the order of
every operation is fixed, so results are the same bit for bit from run to run.
"""
import functools
import math

from numba import cuda, float64, types

from .cuda_fused import MAX_THREADS   # the size of the kernels' shared arrays


@cuda.jit(device=True, inline="always")
def _position(q, inner):
    """(n, i) of position q = n * inner + i."""
    if inner == 1:
        return q, 0
    n = q // inner
    return n, q - n * inner


@cuda.jit(device=True, inline="always")
def _span(shape, per_chunk):
    """This thread's channel c, its first position (n, i), how many positions it visits
    (0 for a channel past C), and its step blockDim.y as (dn, di): the positions first,
    first + step, ... of its chunk, walked by _advance without a division per element."""
    inner = shape[2]
    c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    step = cuda.blockDim.y
    q0 = cuda.blockIdx.y * per_chunk
    first = q0 + cuda.threadIdx.y
    stop = min(q0 + per_chunk, shape[0] * inner)
    visits = 0
    if c < shape[1] and first < stop:
        visits = (stop - first + step - 1) // step
    n, i = _position(first, inner)
    dn, di = _position(step, inner)
    return c, n, i, visits, dn, di


@cuda.jit(device=True, inline="always")
def _advance(n, i, dn, di, inner):
    """The position a step of (dn, di) after (n, i)."""
    i += di
    n += dn
    if i >= inner:
        i -= inner
        n += 1
    return n, i


@cuda.jit(device=True, inline="always")
def _welford(x, c, n, i, visits, dn, di):
    """(mean, M2) of a thread's values by Welford's updates: the rare path, for values
    whose shifted squares overflow (or that hold a NaN or inf, which it passes on)."""
    mean = 0.0
    m2 = 0.0
    k = 0.0
    for _ in range(visits):
        v = float64(x[n, c, i])
        k += 1.0
        delta = v - mean
        mean += delta / k
        m2 += delta * (v - mean)
        n, i = _advance(n, i, dn, di, x.shape[2])
    return mean, m2


@cuda.jit(device=True, inline="always")
def _chan(na, ma, m2a, nb, mb, m2b):
    """Chan's merge of two (count, mean, M2) triples."""
    if nb == 0:
        return na, ma, m2a
    if na == 0:
        return nb, mb, m2b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), m2a + m2b + delta * delta * (na * (nb / n))


@cuda.jit(device=True, inline="always")
def _masked(dy, y, n, c, i, masked):
    """dy[n, c, i] in float64, 0 where the forward's relu output y is <= 0 (NaN y lets
    dy through, as the composition's mask does)."""
    if masked and y[n, c, i] <= 0:
        return 0.0
    return float64(dy[n, c, i])


def batch_stats_partial(x, partial, per_chunk):
    """partial[:, chunk, c] = (count, mean - shift, M2) of the block's positions."""
    sh_count = cuda.shared.array(MAX_THREADS, float64)
    sh_mean = cuda.shared.array(MAX_THREADS, float64)
    sh_m2 = cuda.shared.array(MAX_THREADS, float64)
    c, n, i, visits, dn, di = _span(x.shape, per_chunk)
    count = float64(visits)
    mean = 0.0
    m2 = 0.0
    if visits > 0:
        n0, i0 = n, i
        shift = float64(x[n, c, i])   # one of the thread's values: see the module's notes
        s1 = 0.0
        s2 = 0.0
        for _ in range(visits):
            d = float64(x[n, c, i]) - shift
            s1 += d
            s2 += d * d
            n, i = _advance(n, i, dn, di, x.shape[2])
        if math.isfinite(s1) and math.isfinite(s2):
            mean = s1 / count
            m2 = s2 - s1 * mean
            mean += shift - float64(x[0, c, 0])
        else:
            mean, m2 = _welford(x, c, n0, i0, visits, dn, di)
            mean -= float64(x[0, c, 0])
    ty, bx, by = cuda.threadIdx.y, cuda.blockDim.x, cuda.blockDim.y
    t = ty * bx + cuda.threadIdx.x
    sh_count[t] = count
    sh_mean[t] = mean
    sh_m2[t] = m2
    cuda.syncthreads()
    stride = by // 2
    while stride > 0:
        if ty < stride:
            u = t + stride * bx
            n_, m_, m2_ = _chan(sh_count[t], sh_mean[t], sh_m2[t],
                                sh_count[u], sh_mean[u], sh_m2[u])
            sh_count[t] = n_
            sh_mean[t] = m_
            sh_m2[t] = m2_
        cuda.syncthreads()
        stride //= 2
    if ty == 0 and c < x.shape[1]:
        partial[0, cuda.blockIdx.y, c] = sh_count[t]
        partial[1, cuda.blockIdx.y, c] = sh_mean[t]
        partial[2, cuda.blockIdx.y, c] = sh_m2[t]


def batch_stats_merge(x, partial, mean, m2):
    """mean and M2 of each channel from its chunks' partials, merged in chunk order; a
    channel with a NaN or inf, or whose M2 overflows, gets NaN for both."""
    c = cuda.grid(1)
    if c >= mean.shape[0]:
        return
    count, m, s = 0.0, 0.0, 0.0
    for k in range(partial.shape[1]):
        count, m, s = _chan(count, m, s, partial[0, k, c], partial[1, k, c], partial[2, k, c])
    m = float64(x[0, c, 0]) + m
    s = max(s, 0.0)
    if math.isfinite(m) and math.isfinite(s):
        mean[c] = m
        m2[c] = s
    else:
        mean[c] = math.nan
        m2[c] = math.nan


def grad_stats_partial(dy, x, y, mean, partial, per_chunk, masked):
    """partial[:, chunk, c] = (sum dy, sum dy * (x - mean)) of the block's positions, dy
    masked by y when ``masked``."""
    sh_dy = cuda.shared.array(MAX_THREADS, float64)
    sh_dyx = cuda.shared.array(MAX_THREADS, float64)
    c, n, i, visits, dn, di = _span(x.shape, per_chunk)
    s0 = 0.0
    s1 = 0.0
    if visits > 0:
        mu = mean[c]
        for _ in range(visits):
            g = _masked(dy, y, n, c, i, masked)
            s0 += g
            s1 += g * (float64(x[n, c, i]) - mu)
            n, i = _advance(n, i, dn, di, x.shape[2])
    ty, bx, by = cuda.threadIdx.y, cuda.blockDim.x, cuda.blockDim.y
    t = ty * bx + cuda.threadIdx.x
    sh_dy[t] = s0
    sh_dyx[t] = s1
    cuda.syncthreads()
    stride = by // 2
    while stride > 0:
        if ty < stride:
            sh_dy[t] += sh_dy[t + stride * bx]
            sh_dyx[t] += sh_dyx[t + stride * bx]
        cuda.syncthreads()
        stride //= 2
    if ty == 0 and c < x.shape[1]:
        partial[0, cuda.blockIdx.y, c] = sh_dy[t]
        partial[1, cuda.blockIdx.y, c] = sh_dyx[t]


def grad_stats_merge(partial, sum_dy, sum_dy_xmu):
    """Each channel's two sums from its chunks' partials, added in chunk order."""
    c = cuda.grid(1)
    if c >= sum_dy.shape[0]:
        return
    s0, s1 = 0.0, 0.0
    for k in range(partial.shape[1]):
        s0 += partial[0, k, c]
        s1 += partial[1, k, c]
    sum_dy[c] = s0
    sum_dy_xmu[c] = s1


def scale_shift(x, centre, scale, shift, z, out, per_chunk, residual, relu):
    """out = act(round((x - centre) * scale + shift) + z), per channel: the map a x + b
    written about centre = -b/a (rounded to x's dtype), so x - centre is exact where an
    offset would make a x and b cancel; z added when ``residual``, relu when ``relu``."""
    c, n, i, visits, dn, di = _span(x.shape, per_chunk)
    if visits == 0:
        return
    cen, a, b = centre[c], scale[c], shift[c]
    for _ in range(visits):
        out[n, c, i] = (float64(x[n, c, i]) - cen) * a + b   # rounded once to x's dtype
        if residual or relu:
            v = out[n, c, i]
            if residual:
                v = v + z[n, c, i]
            if relu and v < 0:
                v = 0.0
            out[n, c, i] = v
        n, i = _advance(n, i, dn, di, x.shape[2])


def grad_input(dy, x, y, p, centre, q_, shift, out, per_chunk, masked):
    """out = p dy + ((x - centre) * q + shift), per channel, with dy masked by y when
    ``masked`` (the backward's affine map dx = p dy + q x + s, s about centre = -s/q)."""
    c, n, i, visits, dn, di = _span(x.shape, per_chunk)
    if visits == 0:
        return
    pc, cen, qc, b = p[c], centre[c], q_[c], shift[c]
    for _ in range(visits):
        g = _masked(dy, y, n, c, i, masked)
        out[n, c, i] = g * pc + ((float64(x[n, c, i]) - cen) * qc + b)
        n, i = _advance(n, i, dn, di, x.shape[2])


def relu_mask(dy, y, out, per_chunk):
    """out = dy, 0 where y <= 0 (the gradient through relu; NaN y lets dy through)."""
    c, n, i, visits, dn, di = _span(dy.shape, per_chunk)
    if visits == 0:
        return
    for _ in range(visits):
        if y[n, c, i] <= 0:
            out[n, c, i] = 0.0
        else:
            out[n, c, i] = dy[n, c, i]
        n, i = _advance(n, i, dn, di, dy.shape[2])


# --- signatures ------------------------------------------------------------------------

def _signatures():
    vec = types.Array(types.float64, 1, "A")
    partial = types.Array(types.float64, 3, "A")
    i, flag = types.int64, types.boolean
    table = {}
    for dtype in (types.float16, types.float32, types.float64):
        x = types.Array(dtype, 3, "A")
        for name, sig in {
            "batch_stats_partial": (x, partial, i),
            "batch_stats_merge": (x, partial, vec, vec),
            "grad_stats_partial": (x, x, x, vec, partial, i, flag),
            "scale_shift": (x, vec, vec, vec, x, x, i, flag, flag),
            "grad_input": (x, x, x, vec, vec, vec, vec, x, i, flag),
            "relu_mask": (x, x, x, i),
        }.items():
            table.setdefault(name, []).append(sig)
    table["grad_stats_merge"] = [(partial, vec, vec)]
    return table


#: Each kernel's signatures, by name.
SIGNATURES = _signatures()


@functools.cache
def compiled(name):
    """The kernel ``name`` compiled for its signatures (in the simulator: ready to run)."""
    return cuda.jit(SIGNATURES[name])(globals()[name])
