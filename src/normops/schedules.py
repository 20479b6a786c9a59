"""Schedules of the training step for BatchRenorm's ``rmax`` and ``dmax``.

A schedule is any callable ``step -> value``, where ``step`` counts the training steps
done before the current one (0 for the first). BatchRenorm also takes plain numbers.
"""
from typing import Callable, NamedTuple


class Linear:
    """``start`` until step ``begin``, then linear to ``end`` at step ``finish``, then ``end``."""

    def __init__(self, start, end, begin, finish):
        if not 0 <= begin <= finish:
            raise ValueError(f"need 0 <= begin <= finish, got begin={begin}, finish={finish}")
        self.start, self.end = float(start), float(end)
        self.begin, self.finish = int(begin), int(finish)

    def __call__(self, step):
        if step <= self.begin:
            return self.start
        if step >= self.finish:
            return self.end
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
    return RenormSchedule(rmax=Linear(1.0, rmax, warmup_steps, rmax_steps),
                          dmax=Linear(0.0, dmax, warmup_steps, dmax_steps))
