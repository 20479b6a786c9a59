"""The fused CUDA kernels compile with numba-cuda (NVVM, no GPU needed) to PTX for
sm_80 (A100) and sm_90 (H100), for float16, float32 and float64 arrays of any layout.
Their PTX holds no atomic instruction (partial sums meet in a fixed order, so results
are deterministic), and every conversion to x's dtype is one round-to-nearest from
float64 (a half result is not rounded twice through float32). In a process of its own (tests/cuda_compile.py): the simulator tests
switch numba into its simulator in this one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HALVES_UP = ("float16", "float32", "float64")
# kernel -> the dtypes of x it is compiled for (the merge of gradient sums sees no x)
KERNELS = {"batch_stats_partial": HALVES_UP, "batch_stats_merge": HALVES_UP,
           "grad_stats_partial": HALVES_UP, "grad_stats_merge": ("float64",),
           "scale_shift": HALVES_UP, "grad_input": HALVES_UP, "relu_mask": HALVES_UP}


def _compile(*capabilities):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, str(HERE / "cuda_compile.py"), *map(str, capabilities)],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def compiled():
    done = _compile(80, 90)
    if done.returncode != 0 and not os.environ.get("NORMOPS_REQUIRE_NUMBA_CUDA") and (
            "No module named 'numba" in done.stderr or "libnvvm" in done.stderr
            or "libnvrtc" in done.stderr):
        pytest.skip(f"numba-cuda with NVVM is not installed (pip install 'numba-cuda[cu13]'): "
                    f"{done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_every_kernel_compiles_for_sm80_and_sm90(compiled):
    got = {(r["kernel"], r["dtype"], r["cc"]) for r in compiled}
    assert got == {(k, d, cc) for k, dtypes in KERNELS.items() for d in dtypes
                   for cc in (80, 90)}
    assert len(got) == len(compiled)
    for r in compiled:
        assert r["target"] == f"sm_{r['cc']}" and r["entry"], r


def test_no_kernel_uses_atomics(compiled):
    assert [r for r in compiled if r["atomics"]] == []


def test_results_are_rounded_once_from_float64(compiled):
    for r in compiled:
        bits = r["dtype"].removeprefix("float")
        allowed = [] if bits == "64" else [f"cvt.rn.f{bits}.f64"]
        assert r["narrowing"] == [] or r["narrowing"] == allowed, r
        if r["kernel"] in ("scale_shift", "grad_input"):
            assert r["narrowing"] == allowed, r
