"""How far normops' and PyTorch's float16 / bfloat16 batch norm outputs are from the exact
result: a training forward (y) and backward (dx) with float32 weights and running
statistics (PyTorch's mixed-precision rule), on inputs drawn in the half dtype.

The exact result is computed here in extended precision (np.longdouble: a 64-bit
significand on x86-64). For each output it prints

* max ulp: the largest |output - exact| in ulps of the half dtype at the exact value (an
  ulp at v is the spacing of the dtype's values around |v|, subnormals' fixed);
  correctly rounded means <= 0.5;
* not nearest: the share of elements more than half an ulp off, i.e. not the half value
  nearest to the exact result;
* max err/terms: the largest |output - exact| in units of the dtype's eps times the size
  of the terms the element is made of (what a tolerance relative to the terms allows);
  rounding once gives <= 0.5.

Run: PYTHONPATH=src python benchmarks/half_accuracy.py [--quick]
This measures accuracy, not time; a busy machine changes nothing.
"""
import argparse
import sys

import numpy as np

import normops

try:
    import ml_dtypes
except ImportError:
    sys.exit("needs ml_dtypes (pip install ml_dtypes)")
try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

LD = np.longdouble
EPS = 1e-5
F16, BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)

# (label, normops shape, channel axis, permutation to torch's NC..., mean offset)
CASES = [
    ("NC 256x64", (256, 64), 1, (0, 1), 0.0),
    ("NCHW 16x32x56x56 (1.6M)", (16, 32, 56, 56), 1, (0, 1, 2, 3), 0.0),
    ("NHWC 16x56x56x32 (1.6M)", (16, 56, 56, 32), -1, (0, 3, 1, 2), 0.0),
    ("NCHW 4x4x512x512 (4.2M, m=1M)", (4, 4, 512, 512), 1, (0, 1, 2, 3), 0.0),
    ("NCHW 4x4x512x512, mean 8 sd", (4, 4, 512, 512), 1, (0, 1, 2, 3), 8.0),
]
QUICK = [CASES[0], CASES[1]]


def draw(shape, axis, dtype, offset, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[axis]
    bshape = [1] * len(shape)
    bshape[axis] = C
    spread = rng.uniform(0.5, 2.0, bshape)
    x = (rng.standard_normal(shape, np.float32) * spread
         + rng.normal(0, 1, bshape) + offset * spread)
    return dict(x=x.astype(dtype), dy=rng.standard_normal(shape, np.float32).astype(dtype),
                gamma=rng.uniform(0.5, 2.0, C).astype(np.float32),
                beta=rng.normal(size=C).astype(np.float32),
                running_mean=np.zeros(C, np.float32), running_var=np.ones(C, np.float32))


def oracle(a, axis):
    """Exact (extended precision) y and dx of a training step, and their terms' sizes."""
    x = a["x"]
    ax = axis % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != ax)
    bshape = [1] * x.ndim
    bshape[ax] = -1
    m = x.size // x.shape[ax]

    def bc(v):
        return np.asarray(v).reshape(bshape)

    xl = x.astype(np.float64).astype(LD)
    dyl = a["dy"].astype(np.float64).astype(LD)
    mu = xl.sum(axis=axes, dtype=LD) / m
    dev = xl - bc(mu)
    mu = mu + dev.sum(axis=axes, dtype=LD) / m
    dev = xl - bc(mu)
    var = (dev * dev).sum(axis=axes, dtype=LD) / m
    del dev
    invstd = 1 / np.sqrt(var + LD(EPS))
    g = a["gamma"].astype(np.float64).astype(LD)
    b = a["beta"].astype(np.float64).astype(LD)
    xhat = (xl - bc(mu)) * bc(invstd)
    y = bc(g) * xhat + bc(b)
    spread = np.abs(xl) + bc(np.abs(mu))
    k = bc(np.abs(g * invstd))
    y_terms = k * spread + bc(np.abs(b))
    mdy = dyl.sum(axis=axes, dtype=LD) / m
    mdyx = (dyl * xhat).sum(axis=axes, dtype=LD) / m
    dx = bc(g * invstd) * (dyl - bc(mdy) - xhat * bc(mdyx))
    dx_terms = k * (np.abs(dyl) + bc(np.abs(mdy)) + bc(np.abs(mdyx) * invstd) * spread)
    return dict(y=y, dx=dx), dict(y=y_terms, dx=dx_terms)


def ulp(v, dtype):
    fi = ml_dtypes.finfo(dtype)
    e = np.frexp(np.abs(v))[1].astype(np.int64) - 1
    return np.ldexp(LD(1), np.maximum(e, fi.minexp) - fi.nmant)


def errors(actual, exact, terms, dtype):
    err = np.abs(actual.astype(np.float64).astype(LD) - exact)
    in_ulps = err / ulp(exact, dtype)
    rel = err / (LD(float(ml_dtypes.finfo(dtype).eps)) * terms)
    return float(in_ulps.max()), float((in_ulps > 0.5).mean()), float(rel.max())


def run_normops(a, axis):
    rm, rv = a["running_mean"].copy(), a["running_var"].copy()
    y, saved = normops.batch_norm(a["x"], a["gamma"], a["beta"], rm, rv, eps=EPS, axis=axis,
                                  backend="cpu")
    dx, _, _ = normops.batch_norm_backward(a["dy"], a["x"], saved, a["gamma"], backend="cpu")
    return dict(y=y, dx=dx)


def to_torch(arr):
    if arr.dtype == BF16:
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


def to_numpy(t):
    t = t.detach()
    return t.view(torch.int16).numpy().view(BF16) if t.dtype == torch.bfloat16 else t.numpy()


def run_torch(a, perm):
    inverse = tuple(np.argsort(perm))
    x = to_torch(a["x"]).permute(*perm).requires_grad_(True)
    w = to_torch(a["gamma"]).clone().requires_grad_(True)
    b = to_torch(a["beta"]).clone().requires_grad_(True)
    rm, rv = to_torch(a["running_mean"].copy()), to_torch(a["running_var"].copy())
    y = F.batch_norm(x, rm, rv, w, b, training=True, eps=EPS)
    y.backward(to_torch(a["dy"]).permute(*perm))
    return dict(y=to_numpy(y.permute(*inverse)), dx=to_numpy(x.grad.permute(*inverse)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two small cases only")
    args = parser.parse_args(argv)
    print(f"normops {normops.__version__} ({normops.get_num_threads()} threads), "
          + (f"torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch
             else "torch not installed") + f", numpy longdouble: "
          f"{np.finfo(LD).nmant + 1}-bit significand")
    print("training step, float32 weights/running stats; max ulp | not nearest | "
          "max err/(eps*terms)\n")
    header = f"{'case':32} {'dtype':8} {'out':3}  {'normops':>27}  {'PyTorch':>27}"
    print(header)
    print("-" * len(header))
    for label, shape, axis, perm, offset in (QUICK if args.quick else CASES):
        for dtype in (BF16, F16):
            a = draw(shape, axis, dtype, offset)
            exact, terms = oracle(a, axis)
            ours = run_normops(a, axis)
            theirs = run_torch(a, perm) if torch else None
            for out in ("y", "dx"):
                cells = []
                for res in (ours, theirs):
                    if res is None:
                        cells.append(f"{'-':>27}")
                        continue
                    mx, share, rel = errors(res[out], exact[out], terms[out], dtype)
                    cells.append(f"{mx:9.3g} {share:8.2%} {rel:8.3f}")
                print(f"{label:32} {dtype.name:8} {out:3}  {cells[0]:>27}  {cells[1]:>27}",
                      flush=True)
            del a, exact, terms, ours, theirs


if __name__ == "__main__":
    main()
