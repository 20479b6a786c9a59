"""What a forward op hands to its backward op.

Per-channel arrays are float64 whatever the input dtype: they are O(C) and keeping
them exact costs nothing. ``activation`` and ``residual`` record a fused forward's
epilogue (y = act(BN(x) + z)), which the backward must differentiate too.
"""
from dataclasses import dataclass
from typing import Any


# eq=False: fields are arrays, so identity is the only meaningful equality. init=False:
# the __init__ below fills __dict__ in one call, where the generated one of a frozen
# dataclass calls object.__setattr__ per field (7 fields: 1.26 us against 0.61 us, in
# every training step's forward)
@dataclass(frozen=True, eq=False, init=False)
class BatchNormSaved:
    """``mean``/``invstd``: the statistics x was normalized with (batch statistics when
    training, running statistics in eval mode); ``axis``: the channel axis, >= 0;
    ``shape``: x's shape, which the backward call must repeat. ``comm``: the
    communicator of a synchronized forward (None otherwise), which the backward syncs
    over too; ``count``: then the number of values per channel over all ranks (None in
    eval mode). ``activation``: the forward's activation (None or "relu"; then the
    backward needs the forward's y, whose y <= 0 masks dy); ``residual``: whether the
    forward added a residual z (then the backward also returns dz)."""

    mean: Any
    invstd: Any
    training: bool
    axis: int
    shape: tuple
    comm: Any = None
    count: Any = None
    activation: Any = None
    residual: bool = False

    def __init__(self, mean, invstd, training, axis, shape, comm=None, count=None,
                 activation=None, residual=False):
        self.__dict__.update(mean=mean, invstd=invstd, training=training, axis=axis,
                             shape=shape, comm=comm, count=count, activation=activation,
                             residual=residual)


@dataclass(frozen=True, eq=False, init=False)
class BatchRenormSaved:
    """As BatchNormSaved, plus the renormalization constants ``r`` and ``d`` of the
    training step (None in eval mode, where y = gamma * (x - mu) / sigma + beta)."""

    mean: Any
    invstd: Any
    r: Any
    d: Any
    training: bool
    axis: int
    shape: tuple
    comm: Any = None
    count: Any = None
    activation: Any = None
    residual: bool = False

    def __init__(self, mean, invstd, r, d, training, axis, shape, comm=None, count=None,
                 activation=None, residual=False):
        self.__dict__.update(mean=mean, invstd=invstd, r=r, d=d, training=training, axis=axis,
                             shape=shape, comm=comm, count=count, activation=activation,
                             residual=residual)
