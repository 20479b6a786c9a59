"""What a forward op hands to its backward op.

Per-channel arrays are float64 whatever the input dtype: they are O(C) and keeping
them exact costs nothing. ``activation`` and ``residual`` record a fused forward's
epilogue (y = act(BN(x) + z)), which the backward must differentiate too.
"""
from dataclasses import dataclass
from typing import Literal

from ._typing import Array, Comm


# eq=False: fields are arrays, so identity is the only meaningful equality. init=False:
# the __init__ below fills __dict__ in one call, where the generated one of a frozen
# dataclass calls object.__setattr__ per field (7 fields: 1.26 us against 0.61 us, in
# every training step's forward)
@dataclass(frozen=True, eq=False, init=False)
class BatchNormSaved:
    """The state a batch_norm forward hands to batch_norm_backward.

    The forward ops make it; a backward checks it against its own call. It is frozen,
    and compares by identity (its fields are arrays).

    Parameters
    ----------
    mean : Array
        Per channel, shape (C,): the mean x was normalized with (the batch mean when
        training, the running mean in eval mode).
    invstd : Array
        Per channel, shape (C,): the inverse standard deviation x was normalized with
        (of the batch when training, of the running statistics in eval mode).
    training : bool
        Whether the forward normalized with the batch statistics.
    axis : int
        The channel axis, >= 0.
    shape : tuple of int
        The shape of x, which the backward call must repeat.
    comm : mpi4py.MPI.Comm or None, optional
        The communicator of a synchronized forward (None otherwise), which the
        backward syncs over too.
    count : int or None, optional
        After a synchronized forward, the number of values per channel over all ranks
        (None in eval mode and without ``comm``).
    activation : {None, "relu"}, optional
        The forward's activation. With "relu" the backward needs the forward's y,
        whose y <= 0 masks dy.
    residual : bool, optional
        Whether the forward added a residual z; then the backward also returns dz.

    Notes
    -----
    Per-channel arrays are float64 whatever the input dtype: they are O(C) and keeping
    them exact costs nothing.
    """

    mean: Array
    invstd: Array
    training: bool
    axis: int
    shape: tuple[int, ...]
    comm: Comm | None = None
    count: int | None = None
    activation: Literal["relu"] | None = None
    residual: bool = False

    def __init__(self, mean: Array, invstd: Array, training: bool, axis: int,
                 shape: tuple[int, ...], comm: Comm | None = None, count: int | None = None,
                 activation: Literal["relu"] | None = None, residual: bool = False) -> None:
        self.__dict__.update(mean=mean, invstd=invstd, training=training, axis=axis,
                             shape=shape, comm=comm, count=count, activation=activation,
                             residual=residual)


@dataclass(frozen=True, eq=False, init=False)
class BatchRenormSaved:
    """The state a batch_renorm forward hands to batch_renorm_backward.

    As BatchNormSaved, plus the renormalization constants ``r`` and ``d`` of the
    training step.

    Parameters
    ----------
    mean : Array
        Per channel, shape (C,): the mean x was normalized with (the batch mean when
        training, the running mean mu in eval mode).
    invstd : Array
        Per channel, shape (C,): 1 / sigma_B when training, 1 / sigma (the running
        standard deviation) in eval mode.
    r : Array or None
        Per channel, shape (C,): the clipped ratio sigma_B / sigma of the training step;
        None in eval mode.
    d : Array or None
        Per channel, shape (C,): the clipped shift (mu_B - mu) / sigma of the training
        step; None in eval mode, where y = gamma * (x - mu) / sigma + beta.
    training : bool
        Whether the forward normalized with the batch statistics.
    axis : int
        The channel axis, >= 0.
    shape : tuple of int
        The shape of x, which the backward call must repeat.
    comm : mpi4py.MPI.Comm or None, optional
        The communicator of a synchronized forward (None otherwise), which the
        backward syncs over too.
    count : int or None, optional
        After a synchronized forward, the number of values per channel over all ranks
        (None in eval mode and without ``comm``).
    activation : {None, "relu"}, optional
        The forward's activation. With "relu" the backward needs the forward's y,
        whose y <= 0 masks dy.
    residual : bool, optional
        Whether the forward added a residual z; then the backward also returns dz.

    Notes
    -----
    Per-channel arrays are float64 whatever the input dtype: they are O(C) and keeping
    them exact costs nothing.
    """

    mean: Array
    invstd: Array
    r: Array | None
    d: Array | None
    training: bool
    axis: int
    shape: tuple[int, ...]
    comm: Comm | None = None
    count: int | None = None
    activation: Literal["relu"] | None = None
    residual: bool = False

    def __init__(self, mean: Array, invstd: Array, r: Array | None, d: Array | None,
                 training: bool, axis: int, shape: tuple[int, ...], comm: Comm | None = None,
                 count: int | None = None, activation: Literal["relu"] | None = None,
                 residual: bool = False) -> None:
        self.__dict__.update(mean=mean, invstd=invstd, r=r, d=d, training=training, axis=axis,
                             shape=shape, comm=comm, count=count, activation=activation,
                             residual=residual)
