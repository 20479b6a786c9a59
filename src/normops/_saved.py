"""What a forward op hands to its backward op.

Per-channel arrays are float64 whatever the input dtype: they are O(C) and keeping
them exact costs nothing.
"""
from dataclasses import dataclass
from typing import Any


# eq=False: fields are arrays, so identity is the only meaningful equality
@dataclass(frozen=True, eq=False)
class BatchNormSaved:
    """``mean``/``invstd``: the statistics x was normalized with (batch statistics when
    training, running statistics in eval mode); ``axis``: the channel axis, >= 0;
    ``shape``: x's shape, which the backward call must repeat. ``comm``: the
    communicator of a synchronized forward (None otherwise), which the backward syncs
    over too; ``count``: then the number of values per channel over all ranks (None in
    eval mode)."""

    mean: Any
    invstd: Any
    training: bool
    axis: int
    shape: tuple
    comm: Any = None
    count: Any = None


@dataclass(frozen=True, eq=False)
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
