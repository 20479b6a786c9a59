"""What a forward op hands to its backward op.

Per-channel arrays are float64 whatever the input dtype: they are O(C) and keeping
them exact costs nothing.
"""
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BatchNormSaved:
    """``mean``/``invstd``: the statistics x was normalized with (batch statistics when
    training, running statistics in eval mode); ``axis``: the channel axis, >= 0."""

    mean: Any
    invstd: Any
    training: bool
    axis: int


@dataclass(frozen=True)
class BatchRenormSaved:
    """As BatchNormSaved, plus the renormalization constants ``r`` and ``d`` of the
    training step (None in eval mode, where y = gamma * (x - mu) / sigma + beta)."""

    mean: Any
    invstd: Any
    r: Any
    d: Any
    training: bool
    axis: int
