#!/usr/bin/env bash
# GPU check of normops, for a machine with an NVIDIA GPU and no network whose python3
# already has cupy, torch, hypothesis, pytest, cython, numpy and setuptools:
#   bash benchmarks/gpu_check.sh [options of benchmarks/gpu_check.py]
# It installs normops from this checkout into that python3, then runs
# benchmarks/gpu_check.py --strict: the conformance kit (HYPOTHESIS_PROFILE=ci) on the
# cupy backend with its array-API kernels and with its fused CUDA kernels (numba-cuda,
# NORMOPS_CUPY_KERNELS=fused) and on the torch backend with CUDA tensors, each against
# the reference backend on fixed cases, and the timings against PyTorch's CUDA batch norm
# and a device-to-device copy on NCHW 256x64x56x56, NHWC 256x56x56x64 and NC 65536x1024
# float32. One table on stdout; exit status 0 when everything passed.
# Takes under 8 minutes (the kit stops at --kit-budget seconds per backend, 90 s by default;
# a hard stop at 7 minutes for the script itself).
#
# numba-cuda compiles the fused kernels (with the CUDA toolkit's NVVM, or numba-cuda's
# cu12/cu13 extra); without it the cupy-fused rows say so and --strict fails.
# array-api-compat (pure Python) is needed too: the cupy backend and CUDA tensors go
# through it. Without network, carry its wheel (on a machine with network:
# python3 -m pip download --no-deps array-api-compat -d wheels) and point
# NORMOPS_WHEELS at that folder (default: benchmarks/wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
python=${PYTHON:-python3}
export HYPOTHESIS_PROFILE=ci
export PYTHONUNBUFFERED=1

echo "+ $("$python" --version 2>&1) at $(command -v "$python")"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || echo "nvidia-smi: no GPU listed"

if ! "$python" -c "import array_api_compat" 2>/dev/null; then
    wheels=${NORMOPS_WHEELS:-benchmarks/wheels}
    if ls "$wheels"/array_api_compat-*.whl >/dev/null 2>&1; then
        echo "+ pip install array-api-compat from $wheels"
        "$python" -m pip install -q --no-index --no-deps "$wheels"/array_api_compat-*.whl
    else
        echo "gpu_check.sh: array-api-compat is not installed and no wheel of it is in" \
             "$wheels (set NORMOPS_WHEELS); see the top of this script" >&2
        exit 2
    fi
fi

echo "+ pip install --no-build-isolation --no-deps ."
"$python" -m pip install -q --no-build-isolation --no-deps .

# from outside the checkout, so that the installed normops is the one imported
cd "${TMPDIR:-/tmp}"
echo "+ python benchmarks/gpu_check.py --strict $*"
timeout 420 "$python" "$repo/benchmarks/gpu_check.py" --strict "$@"
