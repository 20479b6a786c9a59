"""The shapes the bench times and their inputs: random normal data from a fixed seed."""
from dataclasses import dataclass

import numpy

from . import half

SEED = 20240601
RESIDUAL_STREAM = 1   # make_residual's seed: [SEED, the shape's place, RESIDUAL_STREAM]


# the layouts whose channels come last (axis=-1); in the others they follow N (axis=1)
CHANNELS_LAST = ("NHWC", "NDHWC")
LAYOUTS = ("NC", "NCHW", "NHWC", "NCDHW", "NDHWC")


@dataclass(frozen=True)
class Shape:
    layout: str  # one of LAYOUTS, a letter per dimension
    dims: tuple

    @property
    def name(self):
        return f"{self.layout}-{'x'.join(map(str, self.dims))}"

    @property
    def axis(self):
        return -1 if self.layout in CHANNELS_LAST else 1

    @property
    def channels(self):
        return self.dims[self.axis]


SHAPES = (
    Shape("NC", (256, 1024)),
    Shape("NC", (8192, 2048)),
    Shape("NCHW", (32, 64, 56, 56)),
    Shape("NCHW", (64, 256, 14, 14)),
    Shape("NHWC", (32, 56, 56, 64)),
)
SHAPES_BY_NAME = {s.name: s for s in SHAPES}


@dataclass(frozen=True)
class Inputs:
    shape: Shape
    x: object             # numpy.ndarray, or a tensor on its memory (backends.as_arrays)
    dy: object
    gamma: object
    beta: object
    running_mean: object
    running_var: object


def make_inputs(shape, dtype):
    """Random normal data, the same on every run and whatever --shapes picks (seeded by
    the shape's place in SHAPES). With a half ``dtype`` (float16, bfloat16), x and dy are
    the float32 run's data rounded to it and the per-channel arrays are the float32 run's
    (PyTorch's mixed precision: half activations, float32 parameters and statistics)."""
    rng = numpy.random.default_rng([SEED, SHAPES.index(shape)])
    x, dy = (rng.standard_normal(shape.dims, dtype=half.data_dtype(dtype)).astype(dtype, copy=False)
             for _ in range(2))
    return Inputs(shape=shape, x=x, dy=dy, **parameters(rng, shape.channels, dtype))


def make_residual(shape, dtype):
    """z, the residual of the fused epilogue (bench --fused): random normal data of x's
    shape and dtype, the same on every run, from a generator seeded apart from
    make_inputs' (so x, dy and the parameters stay the default bench's)."""
    rng = numpy.random.default_rng([SEED, SHAPES.index(shape), RESIDUAL_STREAM])
    return rng.standard_normal(shape.dims, dtype=half.data_dtype(dtype)).astype(dtype, copy=False)


def parameters(rng, c, dtype):
    """gamma, beta and the running statistics of ``c`` channels for x of ``dtype``, drawn
    from ``rng`` (in the parameter dtype: float32 for a half x)."""
    draw = half.data_dtype(dtype)          # dtype itself unless a half one
    params = half.parameter_dtype(dtype)   # likewise

    def normal(size, scale=1.0, offset=0.0):
        return offset + scale * rng.standard_normal(size, dtype=draw)  # stays in draw

    return dict(gamma=normal(c, 0.1, 1.0).astype(params, copy=False),
                beta=normal(c, 0.1).astype(params, copy=False),
                running_mean=normal(c, 0.1).astype(params, copy=False),
                running_var=rng.uniform(0.5, 1.5, c).astype(params))


# ---------------------------------------------------------------------------- sized shapes

def sized_shape(layout, channels, nbytes, itemsize):
    """The shape of ``layout`` with ``channels`` channels whose x holds ``nbytes`` bytes of
    ``itemsize``-byte elements. With d spatial dimensions (0 for NC, 2 for NCHW and NHWC,
    3 for NCDHW and NDHWC) and m = nbytes / (itemsize x channels) elements per channel:
    every spatial side (H = W, or D = H = W) is s, the largest power of two with
    s ** (d + 1) <= m, and N = round(m / s ** d), at least 1. N and the sides are then
    near-equal (N is s to 2 ** d times s), and x holds exactly ``nbytes`` when m is a power
    of two (every power-of-two channel count with a power-of-two size and itemsize);
    otherwise the nearest whole N."""
    spatial = len(layout) - 2
    per_channel = nbytes / (itemsize * channels)
    side = 1
    while spatial and (2 * side) ** (spatial + 1) <= per_channel:
        side *= 2
    n = max(1, round(per_channel / side ** spatial))
    sides = (side,) * spatial
    dims = (n, *sides, channels) if layout in CHANNELS_LAST else (n, channels, *sides)
    return Shape(layout, dims)


def shared_inputs(shape, x, dy, dtype):
    """Inputs of ``shape`` on the first elements of the flat arrays ``x`` and ``dy`` (views:
    shapes of one size share their data), with parameters seeded by the channel count."""
    count = int(numpy.prod(shape.dims))
    rng = numpy.random.default_rng([SEED, shape.channels])
    return Inputs(shape=shape, x=x[:count].reshape(shape.dims), dy=dy[:count].reshape(shape.dims),
                  **parameters(rng, shape.channels, dtype))


def flat_data(count, dtype):
    """x and dy for shared_inputs: ``count`` random normal elements each, the same on
    every run for a given count and dtype."""
    rng = numpy.random.default_rng([SEED, count, numpy.dtype(dtype).itemsize])
    return tuple(rng.standard_normal(count, dtype=dtype) for _ in range(2))


def inputs_of(shape, dtype):
    """Inputs of a shape of its own (not in SHAPES): shared_inputs on a draw of its size."""
    return shared_inputs(shape, *flat_data(int(numpy.prod(shape.dims)), dtype), dtype)
