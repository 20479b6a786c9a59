"""``python -m normops bench --overhead``: the fixed cost of a call, on arrays so small that
the arithmetic costs next to nothing.

For each tiny shape and op, three columns: cpu (normops.batch_norm and
batch_norm_backward with backend="cpu"), pytorch (the default bench's calls:
torch.nn.functional.batch_norm under torch.no_grad(), and native_batch_norm_backward) and
aten (torch.ops.aten.native_batch_norm and native_batch_norm_backward, called bare). A
sample is a loop of CALLS calls timed together; every column's loops run in alternating
rounds (timing.time_in_rounds, one loop per round after a warm-up loop); a cell is the
median over the rounds, per call, and its spread. The target: a normops call within
TARGET_US microseconds.
"""
import time
from dataclasses import asdict

from normops._text import table

from . import noise, report
from .backends import cpu_against_torch, load_average, load_record, thread_count
from .columns import OPS, PYTORCH, aten_ops, normops_ops, pytorch_ops
from .shapes import Shape, inputs_of
from .timing import fixed, time_in_rounds, timing_of

SHAPES = (Shape("NC", (4, 8)), Shape("NCHW", (2, 4, 2, 2)))
TARGET_US = 6.0
CALLS, ROUNDS = 2000, 9
QUICK_CALLS, QUICK_ROUNDS = 500, 5
ATEN = "aten"
THREADS = 1   # a call this small runs on one thread whatever the count


def looped(fn, calls):
    def run():
        for _ in range(calls):
            fn()
    return run


def time_shape(shape, torch, calls, rounds):
    """{(column, op): Timing of one call (seconds)} of one shape."""
    inp = inputs_of(shape, "float32")
    columns = {"cpu": normops_ops("cpu", inp), PYTORCH: pytorch_ops(torch, inp),
               ATEN: aten_ops(torch, inp)}
    loops = {(c, op): looped(fns[op], calls) for op in OPS for c, fns in columns.items()}
    blocks = time_in_rounds(loops, fixed(rounds), rounds)
    return {key: timing_of([s / calls for block in b for s in block]) for key, b in blocks.items()}


def make_rows(shape, timings):
    rows = []
    for (column, op), t in timings.items():
        rows.append({"shape": shape.name, "op": op, "column": column, "per_call_us": t.median_s * 1e6,
                     "p25_us": t.p25_s * 1e6, "p75_us": t.p75_s * 1e6, "min_us": t.min_s * 1e6,
                     "max_us": t.max_s * 1e6, "iqr_over_median": t.relative_spread,
                     "rounds": t.repeats, "noisy": noise.is_noisy(t),
                     "over_pytorch": t.median_s / timings[(PYTORCH, op)].median_s})
    return rows


def summarize(rows, load):
    cpu = [r for r in rows if r["column"] == "cpu"]
    worst = max(cpu, key=lambda r: r["per_call_us"])
    return {"target_us": TARGET_US, "met": all(r["per_call_us"] <= TARGET_US for r in cpu),
            "over_target": [f"{r['shape']} {r['op']}" for r in cpu if r["per_call_us"] > TARGET_US],
            "max_cpu_us": worst["per_call_us"], "max_at": f"{worst['shape']} {worst['op']}",
            "noise": noise.assess([f"{r['shape']} {r['op']} {r['column']}" for r in rows if r["noisy"]],
                                  len(rows), load, THREADS)}


def run(args):
    torch = cpu_against_torch("--overhead")
    calls = args.calls or (QUICK_CALLS if args.quick else CALLS)
    rounds = args.repeats or (QUICK_ROUNDS if args.quick else ROUNDS)
    started = time.perf_counter()
    load_before = load_average()
    rows = []
    with thread_count(THREADS, torch):
        for shape in SHAPES:
            rows += make_rows(shape, time_shape(shape, torch, calls, rounds))
    load = load_record(load_before, load_average())
    meta = {**report.environment(), "torch_version": torch.__version__, "mode": "overhead",
            "calls_per_round": calls, "rounds": rounds, "threads": THREADS, "dtype": "float32",
            "repeat_policy": asdict(fixed(rounds)), "load_average": load,
            "elapsed_s": time.perf_counter() - started}
    return {"meta": meta, "rows": rows, "summary": summarize(rows, load)}


def format_report(result):
    meta, summary = result["meta"], result["summary"]
    header = ("shape", "op", "column", "us per call", "p25-p75 us", "min-max us", "IQR/med",
              "/pytorch")
    body = [(r["shape"], r["op"], r["column"], f"{r['per_call_us']:.2f}",
             f"{r['p25_us']:.2f}-{r['p75_us']:.2f}", f"{r['min_us']:.2f}-{r['max_us']:.2f}",
             f"{r['iqr_over_median']:.0%}" + (" noisy" if r["noisy"] else ""),
             f"{r['over_pytorch']:.2f}") for r in result["rows"]]
    verdict = "yes" if summary["met"] else f"no ({', '.join(summary['over_target'])})"
    lines = [report.format_environment(meta),
             f"float32, {meta['threads']} thread; {meta['rounds']} rounds of {meta['calls_per_round']} "
             f"calls per cell, the columns' loops alternating; median per call over the rounds",
             "cpu: normops.batch_norm / batch_norm_backward(backend='cpu'); pytorch: "
             "F.batch_norm under torch.no_grad() (backward: aten.native_batch_norm_backward); "
             "aten: torch.ops.aten.native_batch_norm / native_batch_norm_backward, bare",
             "", table(header, body), "",
             f"slowest normops call: {summary['max_cpu_us']:.2f} us ({summary['max_at']})",
             f"every normops call within {summary['target_us']:g} us: {verdict}"]
    return "\n".join(lines + report.ending(summary, meta))


def main(args):
    result = run(args)
    return report.print_and_save(result, format_report(result), args.json)
