"""Schedules of the training step for BatchRenorm's ``rmax`` and ``dmax``.

A schedule is any callable ``step -> value``, where ``step`` counts the layer's training
forwards before the current one (0 for the first): its ``num_batches_tracked``.
BatchRenorm also takes plain numbers.
"""
import numbers
from typing import Callable, NamedTuple


def _step(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value) or value < 0:
        raise ValueError(f"{name} must be a whole number of steps >= 0, got {value!r}")
    return int(value)


class Linear:
    """``start`` until step ``begin``, then linear to ``end`` at step ``finish``, then ``end``."""

    def __init__(self, start, end, begin, finish):
        begin, finish = _step(begin, "begin"), _step(finish, "finish")
        if begin > finish:
            raise ValueError(f"need begin <= finish, got begin={begin}, finish={finish}")
        self.start, self.end = float(start), float(end)
        self.begin, self.finish = begin, finish

    def __call__(self, step):
        if step >= self.finish:
            return self.end
        if step <= self.begin:
            return self.start
        frac = (step - self.begin) / (self.finish - self.begin)
        return self.start + frac * (self.end - self.start)

    def __repr__(self):
        return f"Linear(start={self.start}, end={self.end}, begin={self.begin}, finish={self.finish})"


class RenormSchedule(NamedTuple):
    """rmax and dmax schedules: ``BatchRenorm(C, **schedule._asdict())``."""

    rmax: Callable
    dmax: Callable


def renorm_paper(*, rmax=3.0, dmax=5.0, warmup_steps=5000, rmax_steps=40000, dmax_steps=25000):
    """The Batch Renormalization paper's warm-up: rmax = 1 and dmax = 0 (plain BN) for the
    first ``warmup_steps`` steps, then linear to ``rmax`` at step ``rmax_steps`` and to
    ``dmax`` at step ``dmax_steps``. The paper's steps are the defaults; scale them
    down for short runs."""
    if rmax < 1 or dmax < 0:
        raise ValueError(f"need rmax >= 1 and dmax >= 0, got rmax={rmax}, dmax={dmax}")
    warmup = _step(warmup_steps, "warmup_steps")
    for name, end in (("rmax_steps", rmax_steps), ("dmax_steps", dmax_steps)):
        if _step(end, name) < warmup:
            raise ValueError(f"{name}={end} comes before the end of the warm-up, warmup_steps={warmup}")
    return RenormSchedule(rmax=Linear(1.0, rmax, warmup_steps, rmax_steps),
                          dmax=Linear(0.0, dmax, warmup_steps, dmax_steps))
