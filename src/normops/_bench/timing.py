"""How the bench times a callable: repeat policies, single-call samples taken in blocks
that alternate between callables, and the median and spread of the samples."""
import gc
import math
import statistics
import time
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class RepeatPolicy:
    """How many timed calls a cell gets: enough to fill ``budget_s``, judged from the
    warm-up call, within [min_repeats, max_repeats]; ``fixed`` overrides all that."""

    budget_s: float
    min_repeats: int
    max_repeats: int
    fixed: Optional[int] = None

    def repeats(self, warmup_s):
        if self.fixed is not None:
            return self.fixed
        wanted = math.ceil(self.budget_s / max(warmup_s, 1e-9))
        return max(self.min_repeats, min(self.max_repeats, wanted))


FULL = RepeatPolicy(budget_s=0.3, min_repeats=5, max_repeats=1000)
# Quick mode covers every cell in well under 30 s on a 2-core machine: a small budget,
# and the slow reference cells (half a second per backward on NC-8192x2048) get 3 calls.
QUICK = RepeatPolicy(budget_s=0.1, min_repeats=3, max_repeats=30)


def fixed(repeats):
    """The policy of --repeats N: N timed calls per cell, whatever they take."""
    return RepeatPolicy(0.0, 1, 1, fixed=repeats)


@dataclass(frozen=True)
class Timing:
    median_s: float
    min_s: float
    repeats: int
    p25_s: float   # the quartiles: the spread of the single calls
    p75_s: float
    max_s: float

    @property
    def relative_spread(self):
        """The interquartile range over the median: how much the single calls spread."""
        return (self.p75_s - self.p25_s) / self.median_s


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# Blocks per callable in time_in_rounds: a slow spell of this shared machine (seconds)
# then lands on every backend's calls alike instead of on one backend's block (with 3
# blocks, the sub-millisecond rows swung by 30 % between runs; see docs/benchmarks.md).
ROUNDS = 8


def time_in_rounds(fns, policy, rounds=ROUNDS):
    """Samples (seconds of single calls) of each callable in ``fns`` (name -> fn), block by
    block: {name: [samples of block 1, ..., of block ``rounds``]} (a block is empty when a
    callable gets fewer calls than there are blocks). Each callable is warmed up once
    (which also sizes its repeat count); then its calls run back to back in ``rounds``
    blocks, which alternate with the other callables' blocks. The collector is paused so
    that a collection lands in no sample."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        wanted = {name: policy.repeats(_seconds(fn)) for name, fn in fns.items()}
        blocks = {name: [] for name in fns}
        for k in range(rounds):
            for name, fn in fns.items():
                share = wanted[name] * (k + 1) // rounds - wanted[name] * k // rounds
                blocks[name].append([_seconds(fn) for _ in range(share)])
    finally:
        if was_enabled:
            gc.enable()
    return blocks


def pooled(blocks):
    return [t for block in blocks for t in block]


def quartiles(values):
    """(p25, median, p75) of ``values`` (inclusive method: within their range)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    p25, _, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return p25, statistics.median(values), p75


def timing_of(samples):
    p25, median, p75 = quartiles(samples)
    return Timing(median, min(samples), len(samples), p25, p75, max(samples))


def block_ratios(numerator_blocks, denominator_blocks):
    """The ratio of the two callables' median times in each block both have samples in:
    how the ratio moved with the spells of the machine."""
    return [statistics.median(a) / statistics.median(b)
            for a, b in zip(numerator_blocks, denominator_blocks) if a and b]


def time_callable(fn, policy):
    """Median of single calls of ``fn`` after one warm-up call, in one block."""
    return timing_of(pooled(time_in_rounds({"fn": fn}, policy, rounds=1)["fn"]))


def geomean(values):
    return math.exp(statistics.fmean(math.log(v) for v in values))
