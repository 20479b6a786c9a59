"""The shapes the bench times and their inputs: random normal data from a fixed seed."""
from dataclasses import dataclass

import numpy

from . import half

SEED = 20240601


@dataclass(frozen=True)
class Shape:
    layout: str  # "NC", "NCHW" or "NHWC"; NHWC is channels-last, so axis=-1
    dims: tuple

    @property
    def name(self):
        return f"{self.layout}-{'x'.join(map(str, self.dims))}"

    @property
    def axis(self):
        return -1 if self.layout == "NHWC" else 1

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
    c = shape.channels
    draw = half.data_dtype(dtype)          # dtype itself unless a half one
    params = half.parameter_dtype(dtype)   # likewise

    def normal(size, scale=1.0, offset=0.0):
        return offset + scale * rng.standard_normal(size, dtype=draw)  # stays in draw

    return Inputs(
        shape=shape,
        x=rng.standard_normal(shape.dims, dtype=draw).astype(dtype, copy=False),
        dy=rng.standard_normal(shape.dims, dtype=draw).astype(dtype, copy=False),
        gamma=normal(c, 0.1, 1.0).astype(params, copy=False),
        beta=normal(c, 0.1).astype(params, copy=False),
        running_mean=normal(c, 0.1).astype(params, copy=False),
        running_var=rng.uniform(0.5, 1.5, c).astype(params),
    )
