"""Schedules of the training step for BatchRenorm's ``rmax`` and ``dmax``.

A schedule is any callable ``step -> value``, where ``step`` counts the layer's training
forwards before the current one (0 for the first): its ``num_batches_tracked``.
BatchRenorm also takes plain numbers.
"""
import numbers
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["Linear", "RenormSchedule", "renorm_paper"]


def _step(value: float, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value) or value < 0:
        raise ValueError(f"{name} must be a whole number of steps >= 0, got {value!r}")
    return int(value)


class Linear:
    """A piecewise-linear schedule of the training step.

    ``start`` until step ``begin``, then linear to ``end`` at step ``finish``, then
    ``end``.

    Parameters
    ----------
    start : float
        The value up to step ``begin``.
    end : float
        The value from step ``finish`` on.
    begin : int
        The step where the ramp from ``start`` to ``end`` begins, >= 0.
    finish : int
        The step where the ramp reaches ``end``, >= ``begin``.

    Raises
    ------
    ValueError
        If ``begin`` or ``finish`` is not a whole number >= 0, or ``begin > finish``.
    """

    def __init__(self, start: float, end: float, begin: int, finish: int) -> None:
        begin, finish = _step(begin, "begin"), _step(finish, "finish")
        if begin > finish:
            raise ValueError(f"need begin <= finish, got begin={begin}, finish={finish}")
        self.start, self.end = float(start), float(end)
        self.begin, self.finish = begin, finish

    def __call__(self, step: int) -> float:
        """The value at ``step``.

        Parameters
        ----------
        step : int
            The training step: the number of training forwards before the current one.

        Returns
        -------
        float
            ``start`` up to ``begin``, ``end`` from ``finish`` on, linear in between.
        """
        if step >= self.finish:
            return self.end
        if step <= self.begin:
            return self.start
        frac = (step - self.begin) / (self.finish - self.begin)
        return self.start + frac * (self.end - self.start)

    def __repr__(self) -> str:
        return f"Linear(start={self.start}, end={self.end}, begin={self.begin}, finish={self.finish})"


# (the lint of the source sees no __init__, and so no parameters, in a NamedTuple)
class RenormSchedule(NamedTuple):  # numpydoc ignore=PR02
    """The rmax and dmax schedules of a BatchRenorm layer.

    Pass them as ``BatchRenorm(C, **schedule._asdict())``.

    Parameters
    ----------
    rmax : callable
        The schedule of ``rmax``: ``step -> value``.
    dmax : callable
        The schedule of ``dmax``: ``step -> value``.
    """

    rmax: Callable[[int], float]
    dmax: Callable[[int], float]


# the fields' docstrings (NamedTuple's own say "Alias for field number 0")
RenormSchedule.rmax.__doc__ = "The schedule of rmax: step -> value."
RenormSchedule.dmax.__doc__ = "The schedule of dmax: step -> value."


def renorm_paper(*, rmax: float = 3.0, dmax: float = 5.0, warmup_steps: int = 5000,
                 rmax_steps: int = 40000, dmax_steps: int = 25000) -> RenormSchedule:
    """The Batch Renormalization paper's warm-up of rmax and dmax.

    rmax = 1 and dmax = 0 (plain BN) for the first ``warmup_steps`` steps, then linear
    to ``rmax`` at step ``rmax_steps`` and to ``dmax`` at step ``dmax_steps``. The
    paper's steps are the defaults; scale them down for short runs.

    Parameters
    ----------
    rmax : float, default 3.0
        The final rmax, >= 1.
    dmax : float, default 5.0
        The final dmax, >= 0.
    warmup_steps : int, default 5000
        The steps of plain BN before the ramps begin.
    rmax_steps : int, default 40000
        The step where rmax reaches its final value, >= ``warmup_steps``.
    dmax_steps : int, default 25000
        The step where dmax reaches its final value, >= ``warmup_steps``.

    Returns
    -------
    RenormSchedule
        The two schedules, both Linear: ``BatchRenorm(C, **schedule._asdict())``.

    Raises
    ------
    ValueError
        If rmax < 1 or dmax < 0, a step count is not a whole number >= 0, or a ramp
        ends before the warm-up does.
    """
    if rmax < 1 or dmax < 0:
        raise ValueError(f"need rmax >= 1 and dmax >= 0, got rmax={rmax}, dmax={dmax}")
    warmup = _step(warmup_steps, "warmup_steps")
    for name, end in (("rmax_steps", rmax_steps), ("dmax_steps", dmax_steps)):
        if _step(end, name) < warmup:
            raise ValueError(f"{name}={end} comes before the end of the warm-up, warmup_steps={warmup}")
    return RenormSchedule(rmax=Linear(1.0, rmax, warmup_steps, rmax_steps),
                          dmax=Linear(0.0, dmax, warmup_steps, dmax_steps))

