"""Where the torch backend's time goes on CPU tensors, beyond the cpu backend's.

    python benchmarks/torch_overhead.py [--shape 256x1024] [--rounds 21] [--calls 300]

The torch backend runs CPU tensors through the cpu backend: ops.batch_norm validates the
tensors (the array-API checks), TorchBackend._run takes NumPy views of them and calls
ops.batch_norm again with backend="cpu" (the NumPy checks, then the cpu backend's op),
and wraps the outputs as tensors. Each layer is timed alone, peeled off one at a time:

    L0  ops.<op>(tensors, backend="torch")           the whole torch path
    L1  TorchBackend.<op>(tensors)                   without the checks on the tensors
    L2  ops.<op>(fresh NumPy views, backend="cpu")   without the torch wrapping
    L3  CpuBackend.<op>(fresh NumPy views)           without the NumPy checks
    C0  ops.<op>(NumPy arrays, backend="cpu")        the cpu path, for comparison
    C3  CpuBackend.<op>(NumPy arrays)

then the checks on tensors one by one, and the Python-level calls per op call (cProfile).
Times are the thread's CPU time (time.thread_time), which a busy machine disturbs far
less than wall time, on one thread; medians and minimums over ``--rounds`` rounds of
``--calls`` calls, the callables in turn. float32, channel axis 1.
"""
import argparse
import cProfile
import gc
import pstats
import sys
import time
import timeit

import numpy

import normops
from normops import _validation as check
from normops import ops
from normops._backends import torch as torch_backend
from normops._interface import array_namespace
from normops._registry import backend_for
from normops._saved import BatchNormSaved


def build(shape):
    import torch
    rng = numpy.random.default_rng(0)
    c = shape[1]
    a = {"x": rng.standard_normal(shape, dtype=numpy.float32),
         "dy": rng.standard_normal(shape, dtype=numpy.float32),
         "g": numpy.ones(c, numpy.float32), "b": numpy.zeros(c, numpy.float32),
         "rm": numpy.zeros(c, numpy.float32), "rv": numpy.ones(c, numpy.float32)}
    t = {k: torch.from_numpy(v.copy() if k in ("rm", "rv") else v) for k, v in a.items()}
    return torch, a, t


def layer_calls(torch, a, t):
    """{op: {level: fn}} (see the module's docstring)."""
    kw = dict(momentum=0.1, eps=1e-5, axis=1)
    tb, cb = normops.get_backend("torch"), normops.get_backend("cpu")
    host = torch_backend._host
    _, saved = ops.batch_norm(a["x"], a["g"], a["b"], None, None, training=True, backend="cpu", **kw)
    _, tsaved = ops.batch_norm(t["x"], t["g"], t["b"], None, None, training=True, backend="torch", **kw)

    def views(*keys):
        return [host(t[k]) for k in keys]

    def forward(training):
        args = ("x", "g", "b", "rm", "rv")
        return {
            "L0": lambda: ops.batch_norm(*(t[k] for k in args), training=training, backend="torch", **kw),
            "L1": lambda: tb.batch_norm(*(t[k] for k in args), training=training, convention="pytorch", **kw),
            "L2": lambda: ops.batch_norm(*views(*args), training=training, backend="cpu", **kw),
            "L3": lambda: cb.batch_norm(*views(*args), training=training, convention="pytorch", **kw),
            "C0": lambda: ops.batch_norm(*(a[k] for k in args), training=training, backend="cpu", **kw),
            "C3": lambda: cb.batch_norm(*(a[k] for k in args), training=training, convention="pytorch", **kw),
        }

    def host_saved():
        return torch_backend._map_saved(tsaved, host)

    backward = {
        "L0": lambda: ops.batch_norm_backward(t["dy"], t["x"], tsaved, t["g"], backend="torch"),
        "L1": lambda: tb.batch_norm_backward(t["dy"], t["x"], tsaved, t["g"]),
        "L2": lambda: ops.batch_norm_backward(*views("dy", "x"), host_saved(), host(t["g"]), backend="cpu"),
        "L3": lambda: cb.batch_norm_backward(*views("dy", "x"), host_saved(), host(t["g"])),
        "C0": lambda: ops.batch_norm_backward(a["dy"], a["x"], saved, a["g"], backend="cpu"),
        "C3": lambda: cb.batch_norm_backward(a["dy"], a["x"], saved, a["g"]),
    }
    return {"forward-train": forward(True), "backward": backward, "inference": forward(False)}, tsaved


def check_calls(torch, t, tsaved):
    """The checks ops runs on the tensors, and the torch wrapping's pieces, one by one."""
    x, g, rm, rv = t["x"], t["g"], t["rm"], t["rv"]
    xp = array_namespace(backend_for(x, "torch"), x)
    c = x.shape[1]
    names = ("running_mean", "running_var")
    kw = dict(momentum=0.1, eps=1e-5, axis=1)

    def no_grad():
        with torch.no_grad():
            pass

    return {
        "forward_args (training)": lambda: check.forward_args(
            xp, x, g, t["b"], (rm, rv), names, training=True, stats_required=False, **kw),
        "  no_overlap (2 written x 4 others: 7 pairs)": lambda: check.no_overlap(
            xp, zip(names, (rm, rv)), (("x", x), ("gamma", g), ("beta", t["b"]))),
        "    may_share_memory (one pair: 2 x _extent)": lambda: normops._arrays.may_share_memory(xp, rm, x),
        "  running_stat (written)": lambda: check.running_stat(xp, rm, "running_mean", c, x.dtype, written=True, x=x),
        "  per_channel": lambda: check.per_channel(xp, g, "gamma", c, x.dtype, x),
        "    _same_device (2 x array_api_compat.device)": lambda: check._same_device(g, "gamma", x),
        "forward_args (eval)": lambda: check.forward_args(
            xp, x, g, t["b"], (rm, rv), names, training=False, stats_required=False, **kw),
        "positive_stats (eval)": lambda: check.positive_stats(xp, rv, "running_var", allow_zero=True),
        "backward: _backward_args": lambda: ops._backward_args(
            backend_for(x, "torch"), t["dy"], x, tsaved, g, None, BatchNormSaved, "batch_norm"),
        "  saved_state": lambda: check.saved_state(xp, tsaved, BatchNormSaved, "batch_norm", x, None),
        "  gradient (dy)": lambda: check.gradient(xp, t["dy"], x),
        "wrapping: Tensor.detach().numpy() (one)": lambda: torch_backend._host(x),
        "wrapping: torch.from_numpy (one)": lambda: torch.from_numpy(numpy.empty(0)),
        "wrapping: with torch.no_grad()": no_grad,
    }


def time_all(fns, rounds, calls):
    """{name: (median, min)} in microseconds of thread CPU time, the callables in turn."""
    samples = {k: [] for k in fns}
    gc.disable()
    try:
        for _ in range(rounds):
            for k, fn in fns.items():
                samples[k].append(timeit.timeit(fn, number=calls, timer=time.thread_time) / calls * 1e6)
    finally:
        gc.enable()
    return {k: (sorted(v)[len(v) // 2], min(v)) for k, v in samples.items()}


def python_calls(fn, calls=50):
    for _ in range(5):
        fn()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        fn()
    profile.disable()
    return sum(v[1] for v in pstats.Stats(profile).stats.values()) / calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="256x1024", help="N x C (default 256x1024, 1 MB)")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    shape = tuple(int(n) for n in args.shape.split("x"))
    normops.set_num_threads(1)
    torch, a, t = build(shape)
    torch.set_num_threads(1)
    levels, tsaved = layer_calls(torch, a, t)
    print(f"NC-{args.shape} float32, 1 thread; us of thread CPU time, median (min) over "
          f"{args.rounds} rounds of {args.calls} calls")
    for op, fns in levels.items():
        m = time_all(fns, args.rounds, args.calls)
        print(f"\n{op}: " + "  ".join(f"{k} {v[0]:.1f} ({v[1]:.1f})" for k, v in m.items()))
        for label, (hi, lo) in (("torch - cpu", ("L0", "C0")),
                                ("checks on the tensors", ("L0", "L1")),
                                ("torch wrapping", ("L1", "L2")),
                                ("NumPy checks on the views", ("L2", "L3")),
                                ("NumPy checks, cpu path", ("C0", "C3"))):
            print(f"  {label:26s} ({hi} - {lo})  {m[hi][0] - m[lo][0]:7.1f} ({m[hi][1] - m[lo][1]:.1f})")
        print(f"  Python-level calls per op call: torch {python_calls(fns['L0']):.0f}, "
              f"cpu {python_calls(fns['C0']):.0f}")
    print("\nthe checks and wrapping pieces alone:")
    for k, (med, low) in time_all(check_calls(torch, t, tsaved), args.rounds, args.calls).items():
        print(f"  {k:48s} {med:7.2f} ({low:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
