"""Compiles every fused CUDA kernel to PTX with numba-cuda (NVVM, no GPU needed) for the
compute capabilities given on the command line, for each of its signatures (the
kernels' own list: float16, float32 and float64 arrays of any layout), and prints one JSON line per kernel, dtype and capability: its
PTX target, the atomic instructions the PTX holds and its conversions to float16 or
float32. Run as a separate process (tests/
test_cuda_kernels_compile.py): numba must not be in its CUDA simulator here.

    python tests/cuda_compile.py 80 90
"""
import json
import re
import sys

from numba import cuda

from normops._backends import cuda_kernels as k


def main(capabilities):
    for cc in capabilities:
        for name, sigs in k.SIGNATURES.items():
            for sig in sigs:
                dtype = sig[0].dtype
                ptx, _ = cuda.compile_ptx(getattr(k, name), sig, cc=(cc // 10, cc % 10))
                target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
                atomics = sorted(set(re.findall(r"\batom\.[\w.]+", ptx)))
                narrowing = sorted(set(re.findall(r"\bcvt(?:\.\w+)*?\.f(?:16|32)\.\w+", ptx)))
                print(json.dumps({"kernel": name, "dtype": str(dtype), "cc": cc,
                                  "target": target, "atomics": atomics, "narrowing": narrowing,
                                  "entry": bool(re.search(r"\.entry\s", ptx))}), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
