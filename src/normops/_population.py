"""Population statistics over many batches ("precise BN"): each batch's per-channel count,
mean and M2 = sum((x - mean)^2) from the backend's batch_stats kernel, pooled across
batches with Chan's formula in float64 (the kernels' wide dtype: float32 on a device
without float64), in the namespace of the batches' array library, on their device."""
import sys
from collections.abc import Callable, Iterable, Sized
from typing import Any, Optional, TextIO, TypeAlias, Union, cast

import numpy as np

from . import _distributed as distributed
from ._composed import canonical_view
from ._interface import array_namespace
from ._moments import combine
from ._registry import backend_for
from ._typing import Array, Comm
from .layers import BatchNorm, BatchRenorm, is_layer

#: A layer whose running statistics recompute_population_stats sets.
Layer: TypeAlias = Union[BatchNorm, BatchRenorm]


class PooledMoments:
    """Per-channel count, mean and M2 of every batch added so far.

    Parameters
    ----------
    channels : int
        The number of channels.
    backend : str, optional
        The backend whose batch_stats kernel measures each batch (None: the one the ops
        would pick for the batch).

    Attributes
    ----------
    count : int
        The number of values per channel added so far.
    mean : Array
        The mean of each channel, an array of the batches' library (NumPy zeros before
        the first batch).
    m2 : Array
        ``sum((x - mean) ** 2)`` of each channel, as ``mean``.
    """

    def __init__(self, channels: int, backend: Optional[str] = None) -> None:
        self.backend = backend
        self.count = 0
        self.mean: Array = np.zeros(channels)
        self.m2: Array = np.zeros(channels)

    def add(self, x: Array, axis: int) -> None:
        """Pool the statistics of one more batch, with Chan's formula.

        Parameters
        ----------
        x : Array
            The batch, an input of the layer (the first one sets the library, device and
            dtype of ``mean`` and ``m2``).
        axis : int
            The channel axis of x, non-negative.
        """
        be = backend_for(x, self.backend)
        xp = array_namespace(be, x)
        n, mean, m2 = be.batch_stats(canonical_view(xp, x, axis))
        if self.count == 0:   # the first batch sets the library, device and dtype
            self.mean, self.m2 = xp.zeros_like(mean), xp.zeros_like(m2)
        self.count, self.mean, self.m2 = combine(self.count, self.mean, self.m2, n, mean, m2)


def _progress(done: int, total: Optional[int], stream: TextIO) -> None:
    of = f"/{total}" if total is not None else ""
    stream.write(f"\rpopulation statistics: batch {done}{of}")
    stream.flush()


def recompute_population_stats(layer_or_layers: Union[Layer, Iterable[Layer]], batches: Iterable[Any],
                               *, forward: Optional[Callable[[Any], object]] = None,
                               progress: bool = False, comm: Optional[Comm] = None) -> int:
    """Set the running statistics of BN/BRN layers to the exact population statistics of
    the data in ``batches`` ("precise BN").

    Every batch is run through ``forward`` (default: the single layer's own forward);
    meanwhile the layers normalize with each batch's statistics, as BN does in training
    (BatchRenorm too: no r/d correction from the old running statistics), without
    touching their running statistics, and pool the per-channel count, mean and M2 of
    their inputs with Chan's formula. At the end each layer gets the pooled mean and the
    pooled variance: unbiased, M2 / (n - 1), for BatchNorm with convention="pytorch",
    M2 / n for "keras", and sigma = sqrt(M2 / n + eps) for BatchRenorm. Not an average of
    per-batch variances: the spread between batch means counts too.

    Parameters
    ----------
    layer_or_layers : BatchNorm, BatchRenorm or iterable of them
        The layers whose running statistics are set. They must track running
        statistics.
    batches : iterable
        The data, one batch at a time: what ``forward`` takes (the layer's input by
        default). Every batch needs more than one value per channel, as in training:
        drop a last batch of a single example. With ``progress``, its ``len()``, when it
        has one, is the total shown.
    forward : callable, optional
        A function that runs the network on one batch (needed when several layers are
        given); what it returns is not used. Default: the single layer's own forward.
    progress : bool, default False
        True to write a progress line to stderr.
    comm : mpi4py.MPI.Intracomm, optional
        An mpi4py intracommunicator whose ranks each pass their own share of the data
        (any number of batches, none too); the statistics are pooled over every rank's
        batches (in rank order, bitwise the same on every rank) and every rank's layers
        get them. Each batch is normalized with its own statistics, locally, as without
        comm. Default: the layers' communicator when they were made with one.

    Returns
    -------
    int
        The number of batches this rank saw.

    Raises
    ------
    TypeError
        If ``layer_or_layers`` is not a BatchNorm/BatchRenorm layer or an iterable of
        them (an empty one included), or ``comm`` is not an mpi4py intracommunicator.
    ValueError
        If a layer tracks no running statistics, several layers are given without
        ``forward``, a layer saw no batch (``forward`` never called it; on any rank,
        with ``comm``), the layers were made with different communicators (or some
        without one) and no ``comm`` is given, or, with ``comm``, the ranks' layers
        differ (kind, number of features, eps, convention) or ``comm`` is a null
        communicator.
    RuntimeError
        If a layer is already collecting population statistics, or, with ``comm``, MPI
        is not initialized or already finalized.

    Notes
    -----
    An error of ``forward`` (or of the layers' ops on a batch) propagates, and the
    layers' running statistics are left as they were. With a communicator, an error on
    one rank is raised on every rank alike.
    """
    try:
        layers: list[Layer] = ([cast(Layer, layer_or_layers)] if is_layer(layer_or_layers)
                               else list(cast(Iterable[Layer], layer_or_layers)))
    except TypeError:
        layers = []
    # the communicator first, so that every check below fails on every rank alike
    comms = [getattr(layer, "comm", None) if is_layer(layer) else None for layer in layers]
    step_comm = comm if comm is not None else next((c for c in comms if c is not None), None)
    with distributed.step(step_comm, "recompute_population_stats") as sync:
        if not layers or not all(is_layer(layer) for layer in layers):
            raise TypeError("layer_or_layers must be a BatchNorm/BatchRenorm layer or an "
                            f"iterable of them, got {layer_or_layers!r}")
        if comm is None and any(c is None or c != step_comm for c in comms) and step_comm is not None:
            raise ValueError("the layers were made with different communicators (or some "
                             "without one): pass comm= to pool the statistics over its ranks")
        try:
            collected, seen = _collect(layers, batches, forward, progress)
        finally:   # what the layers kept of the collecting forwards is no step to differentiate
            for layer in layers:
                layer._x = layer._saved = layer._grads = None
        counts: list[tuple[int, Array, Array]] = [(pooled.count, pooled.mean, pooled.m2)
                                                  for pooled in collected]
        if sync is not None:
            counts = sync.pooled(counts, {"layers": [_pooling_options(layer) for layer in layers]})
            counts = [(n, distributed.on_device(layer.xp, mean, layer.running_mean),
                       distributed.on_device(layer.xp, m2, layer.running_mean))
                      for layer, (n, mean, m2) in zip(layers, counts)]
        for i, (layer, (n, _, _)) in enumerate(zip(layers, counts)):
            if n == 0:
                where = "" if sync is None else " on any rank"
                raise ValueError(f"layer {i} ({layer!r}) saw no batch{where}: forward never called it")
    for layer, (n, mean, m2) in zip(layers, counts):
        layer._set_population(n, mean, m2)
    return seen


def _pooling_options(layer: Layer) -> tuple[str, int, float, Optional[str]]:
    """What a layer's population statistics depend on besides the data, which the ranks'
    replicas of it must agree on."""
    return type(layer).__name__, layer.num_features, layer.eps, getattr(layer, "convention", None)


def _collect(layers: list[Layer], batches: Iterable[Any], forward: Optional[Callable[[Any], object]],
             progress: bool) -> tuple[list[PooledMoments], int]:
    """Every layer's PooledMoments over this rank's batches, and how many there were."""
    for layer in layers:
        if not layer.track_running_stats:
            raise ValueError(f"{layer!r} tracks no running statistics")
        if layer._collector is not None:
            raise RuntimeError(f"{layer!r} is already collecting population statistics")
    if forward is None:
        if len(layers) != 1:
            raise ValueError("with several layers, pass forward=: the function that runs the "
                             "network on one batch")
        forward = layers[0].forward
    total = len(cast(Sized, batches)) if hasattr(batches, "__len__") else None
    seen = 0
    for layer in layers:
        layer._collector = PooledMoments(layer.num_features, layer.backend)
    try:
        for batch in batches:
            forward(batch)
            seen += 1
            if progress:
                _progress(seen, total, sys.stderr)
        return [cast(PooledMoments, layer._collector) for layer in layers], seen   # set above
    finally:
        for layer in layers:
            layer._collector = None
        if progress:
            sys.stderr.write("\n")
