"""Compiles every fused CUDA kernel to PTX with numba-cuda (NVVM, no GPU needed) for the
compute capabilities given on the command line, for float16, float32 and float64
arrays of any layout, and prints one JSON line per kernel, dtype and capability: its
PTX target, the atomic instructions the PTX holds and its conversions to float16 or
float32. Run as a separate process (tests/
test_cuda_kernels_compile.py): numba must not be in its CUDA simulator here.

    python tests/cuda_compile.py 80 90
"""
import json
import re
import sys

from numba import cuda, types

from normops._backends import cuda_kernels as k


def signatures(dtype):
    x = types.Array(dtype, 3, "A")
    vec = types.Array(types.float64, 1, "A")
    partial = types.Array(types.float64, 3, "A")
    i, flag = types.int64, types.boolean
    return {
        "batch_stats_partial": (x, partial, i),
        "batch_stats_merge": (x, partial, vec, vec),
        "grad_stats_partial": (x, x, x, vec, partial, i, flag),
        "grad_stats_merge": (partial, vec, vec),
        "scale_shift": (x, vec, vec, vec, x, x, i, flag, flag),
        "grad_input": (x, x, x, vec, vec, vec, vec, x, i, flag),
        "relu_mask": (x, x, x, i),
    }


def main(capabilities):
    for cc in capabilities:
        for dtype in (types.float16, types.float32, types.float64):
            for name, sig in signatures(dtype).items():
                ptx, _ = cuda.compile_ptx(getattr(k, name).py_func, sig,
                                          cc=(cc // 10, cc % 10))
                target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
                atomics = sorted(set(re.findall(r"\batom\.[\w.]+", ptx)))
                narrowing = sorted(set(re.findall(r"\bcvt(?:\.\w+)*?\.f(?:16|32)\.\w+", ptx)))
                print(json.dumps({"kernel": name, "dtype": str(dtype), "cc": cc,
                                  "target": target, "atomics": atomics, "narrowing": narrowing,
                                  "entry": bool(re.search(r"\.entry\s", ptx))}), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
