"""float16 and bfloat16 outputs against an exact oracle written here: BN and BRN, forward
and backward, computed in extended precision (np.longdouble, 64-bit significand on
x86-64; float64 where that is all there is) from inputs drawn in the half dtype.

normops promises that every output is its float64 result rounded once to the output's
dtype. So on every element:

* the error is at most 1 ulp of the output dtype at the oracle value (the contract), and
* at most half an ulp plus a slack of 2^-36 of the terms' size (the float64 arithmetic's
  own error, ~1e-16 of the terms, amplified by at most the reduction length): what
  rounding once to nearest gives. Rounding twice (float64 -> float32 -> bfloat16) misses
  a correctly rounded result by up to 2^-24 of the value, which this catches wherever
  it happens.

An ulp of a dtype at v is the spacing of the dtype's values around |v|: 2^(e - nmant)
with 2^e <= |v| < 2^(e+1), e clamped to minexp below, so subnormals (and 0) have the
fixed spacing 2^(minexp - nmant) (ml_dtypes.finfo, which knows bfloat16 too).

Covered: backends cpu and reference; layouts NC, NCHW, NHWC on the cpu kernels' three
paths (rows: planes of up to 8 values; planes: more than 8; pipelined planes: planes of
1024 values or more, 4 channels or more per thread); training and eval; float32 or half
per-channel arrays; 1 and 2 threads, whose results must be bitwise identical. And NaN and
inf in x: in training they make their channel's statistics, outputs, running statistics
and gradients NaN and leave the other channels alone; in eval they go through the
elementwise formula."""
import math

import numpy as np
import pytest

import normops
import half_inputs
from half_inputs import draw

ml_dtypes = pytest.importorskip("ml_dtypes")

F16, BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)
LD = np.longdouble
BACKENDS = ["cpu", "reference"]
MOMENTUM, EPS = 0.1, 1e-5
SLACK = 2.0 ** -36

# name -> (shape, axis); the cpu path each one takes is in the name
LAYOUTS = {
    "NC-rows": ((300, 6), 1),
    "NCHW-rows": ((16, 5, 2, 3), 1),
    "NCHW-planes": ((6, 5, 7, 9), 1),
    "NCHW-pipelined": ((2, 8, 32, 40), 1),   # planes of 1280 values, 8 channels
    "NHWC-rows": ((6, 5, 7, 5), -1),
    "NHWC-wide": ((4, 3, 5, 40), -1),
}


# -- the oracle ------------------------------------------------------------------------

class Oracle:
    """Per-channel reductions and broadcasting in extended precision."""

    def __init__(self, shape, axis):
        self.axis = axis % len(shape)
        self.axes = tuple(i for i in range(len(shape)) if i != self.axis)
        self.bshape = tuple(n if i == self.axis else 1 for i, n in enumerate(shape))
        self.m = math.prod(shape) // shape[self.axis]

    def bc(self, v):
        return np.asarray(v, LD).reshape(self.bshape)

    def sum(self, v):
        return v.sum(axis=self.axes, dtype=LD)

    def mean(self, v):
        return self.sum(v) / self.m

    def moments(self, x):
        """Two-pass mean and biased variance, the second pass corrected."""
        mu = self.mean(x)
        dev = x - self.bc(mu)
        mu = mu + self.mean(dev)
        dev = x - self.bc(mu)
        return mu, self.mean(dev * dev)


def ld(a):
    return np.asarray(a).astype(np.float64).astype(LD)   # every half and float32 value is a double


def bn_oracle(x, dy, gamma, beta, rm, rv, axis, training):
    """(expected values, term sizes) of y, dx, dgamma, dbeta, running_mean, running_var."""
    o = Oracle(x.shape, axis)
    x, dy = ld(x), ld(dy)
    g, b = ld(gamma), ld(beta)
    if training:
        mu, var = o.moments(x)
    else:
        mu, var = ld(rm), ld(rv)
    invstd = 1 / np.sqrt(var + LD(EPS))
    xhat = (x - o.bc(mu)) * o.bc(invstd)
    y = o.bc(g) * xhat + o.bc(b)
    y_terms = np.abs(o.bc(g * invstd)) * (np.abs(x) + np.abs(o.bc(mu))) + np.abs(o.bc(b))
    dgamma, dbeta = o.sum(dy * xhat), o.sum(dy)
    k = o.bc(g * invstd)
    if training:
        mdy, mdyx = o.bc(o.mean(dy)), o.bc(o.mean(dy * xhat))
        dx = k * (dy - mdy - xhat * mdyx)
        dx_terms = np.abs(k) * (np.abs(dy) + np.abs(mdy)
                                + np.abs(mdyx) * np.abs(o.bc(invstd)) * (np.abs(x) + np.abs(o.bc(mu))))
        unbiased = var * o.m / (o.m - 1)
        new_rm = (1 - LD(MOMENTUM)) * ld(rm) + LD(MOMENTUM) * mu
        new_rv = (1 - LD(MOMENTUM)) * ld(rv) + LD(MOMENTUM) * unbiased
        rm_terms = np.abs(ld(rm)) + np.abs(mu)
        rv_terms = np.abs(ld(rv)) + unbiased
    else:
        dx, dx_terms = k * dy, np.abs(k * dy)
        new_rm, new_rv, rm_terms, rv_terms = ld(rm), ld(rv), np.abs(ld(rm)), np.abs(ld(rv))
    # dgamma's terms: |dy| |x - mu| invstd, which bounds every form of the sum
    expected = dict(y=y, dx=dx, dgamma=dgamma, dbeta=dbeta, running_mean=new_rm,
                    running_var=new_rv)
    terms = dict(y=y_terms, dx=dx_terms, dgamma=o.sum(np.abs(dy) * (np.abs(x) + np.abs(o.bc(mu))))
                 * np.abs(invstd), dbeta=o.sum(np.abs(dy)), running_mean=rm_terms,
                 running_var=rv_terms)
    return expected, terms


def brn_oracle(x, dy, gamma, beta, rm, rs, axis, training, rmax, dmax):
    o = Oracle(x.shape, axis)
    x, dy = ld(x), ld(dy)
    g, b, mu, sigma = ld(gamma), ld(beta), ld(rm), ld(rs)
    if not training:
        xn = (x - o.bc(mu)) / o.bc(sigma)
        y = o.bc(g) * xn + o.bc(b)
        k = o.bc(g / sigma)
        expected = dict(y=y, dx=k * dy, dgamma=o.sum(dy * xn), dbeta=o.sum(dy),
                        running_mean=mu, running_std=sigma)
        terms = dict(y=np.abs(k) * (np.abs(x) + np.abs(o.bc(mu))) + np.abs(o.bc(b)),
                     dx=np.abs(k * dy), dgamma=o.sum(np.abs(dy) * (np.abs(x) + np.abs(o.bc(mu))))
                     / np.abs(sigma), dbeta=o.sum(np.abs(dy)), running_mean=np.abs(mu),
                     running_std=np.abs(sigma))
        return expected, terms
    mu_b, var_b = o.moments(x)
    sigma_b = np.sqrt(var_b + LD(EPS))
    r = np.clip(sigma_b / sigma, 1 / LD(rmax), LD(rmax))
    d = np.clip((mu_b - mu) / sigma, -LD(dmax), LD(dmax))
    xn = (x - o.bc(mu_b)) / o.bc(sigma_b)
    y = o.bc(g) * (xn * o.bc(r) + o.bc(d)) + o.bc(b)
    k = o.bc(g * r / sigma_b)
    mdy, mdyx = o.bc(o.mean(dy)), o.bc(o.mean(dy * xn))
    dx = k * (dy - mdy - xn * mdyx)
    spread = (np.abs(x) + np.abs(o.bc(mu_b))) / o.bc(sigma_b)
    expected = dict(y=y, dx=dx, dgamma=o.sum(dy * (xn * o.bc(r) + o.bc(d))), dbeta=o.sum(dy),
                    running_mean=mu + LD(MOMENTUM) * (mu_b - mu),
                    running_std=sigma + LD(MOMENTUM) * (sigma_b - sigma))
    terms = dict(y=np.abs(o.bc(g)) * (spread * o.bc(r) + np.abs(o.bc(d))) + np.abs(o.bc(b)),
                 dx=np.abs(k) * (np.abs(dy) + np.abs(mdy) + np.abs(mdyx) * spread),
                 dgamma=o.sum(np.abs(dy) * (spread * o.bc(r) + np.abs(o.bc(d)))),
                 dbeta=o.sum(np.abs(dy)), running_mean=np.abs(mu) + np.abs(mu_b),
                 running_std=np.abs(sigma) + sigma_b)
    return expected, terms


# -- ulps ------------------------------------------------------------------------------

def ulp(v, dtype):
    """The spacing of ``dtype``'s values at |v| (extended precision), subnormals' fixed."""
    fi = ml_dtypes.finfo(dtype)
    e = np.frexp(np.abs(np.asarray(v, LD)))[1].astype(np.int64) - 1   # 2^e <= |v| < 2^(e+1)
    return np.ldexp(LD(1), np.maximum(e, fi.minexp) - fi.nmant)


def ulps(actual, expected, dtype):
    return np.abs(ld(actual) - expected) / ulp(expected, dtype)


def check_rounded_once(name, actual, expected, terms, dtype):
    """At most 1 ulp from the oracle, and at most half an ulp plus the float64 slack."""
    assert actual.dtype == dtype, name
    assert np.all(np.isfinite(expected)), name
    err = np.abs(ld(actual) - expected)
    unit = ulp(expected, dtype)
    worst = float(np.max(err / unit))
    assert worst <= 1.0, f"{name} ({dtype}): {worst:.3f} ulp from the exact result"
    loose = err > unit / 2 + SLACK * terms
    assert not loose.any(), (
        f"{name} ({dtype}): {int(loose.sum())} elements not the nearest {dtype} value to the "
        f"exact result, e.g. {actual[loose][:3]} for {np.asarray(expected[loose][:3], np.float64)}")


# -- inputs and runs -------------------------------------------------------------------

def run_bn(a, axis, training, backend):
    return half_inputs.run_bn(a, axis, training, backend, MOMENTUM, EPS)


def run_brn(a, axis, training, backend, rmax, dmax):
    rm, rs = a["running_mean"].copy(), a["running_std"].copy()
    y, saved = normops.batch_renorm(a["x"], a["gamma"], a["beta"], rm, rs, training=training,
                                    rmax=rmax, dmax=dmax, momentum=MOMENTUM, eps=EPS,
                                    axis=axis, backend=backend)
    dx, dgamma, dbeta = normops.batch_renorm_backward(a["dy"], a["x"], saved, a["gamma"],
                                                      backend=backend)
    return dict(y=y, dx=dx, dgamma=dgamma, dbeta=dbeta, running_mean=rm, running_std=rs)


class threads:
    """normops.set_num_threads(n) for a block, the team really n however small the data
    (the cpu backend's minimum of values per thread set to 1), both restored after."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        from normops._backends import _cpu
        self.cpu, self.before = _cpu, normops.get_num_threads()
        self.min_values = _cpu.get_min_values_per_thread()
        normops.set_num_threads(self.n)
        _cpu.set_min_values_per_thread(1)

    def __exit__(self, *exc):
        normops.set_num_threads(self.before)
        self.cpu.set_min_values_per_thread(self.min_values)


def on_1_and_2_threads(run, expect_pipelined=False):
    """run() on 1 and on 2 threads; the outputs must be the same bits. Returns them."""
    from normops._backends import _cpu
    results = []
    for n in (1, 2):
        with threads(n):
            count = _cpu.pipelined_ops()
            results.append(run())
            if expect_pipelined and _cpu.simd_enabled():
                assert _cpu.pipelined_ops() > count, f"the pipelined path did not run on {n} threads"
    one, two = results
    for key in one:
        assert one[key].dtype == two[key].dtype, key
        assert one[key].tobytes() == two[key].tobytes(), f"{key} differs between 1 and 2 threads"
    return one


def out_dtype(key, x_dtype, params):
    return x_dtype if key in ("y", "dx") else params


HALVES = [F16, BF16]
PARAMS = ["float32", "half"]


def params_dtype(kind, x_dtype):
    return F32 if kind == "float32" else x_dtype


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", HALVES, ids=lambda d: d.name)
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"params-{p}")
def test_batch_norm_is_rounded_once_from_the_exact_result(be, layout, training, dtype, params):
    shape, axis = LAYOUTS[layout]
    pdtype = params_dtype(params, dtype)
    a = draw(shape, axis, dtype, pdtype)
    pipelined = be == "cpu" and training and layout == "NCHW-pipelined"
    got = on_1_and_2_threads(lambda: run_bn(a, axis, training, be), pipelined)
    expected, terms = bn_oracle(a["x"], a["dy"], a["gamma"], a["beta"], a["running_mean"],
                                a["running_var"], axis, training)
    for key in expected:
        check_rounded_once(key, got[key], expected[key], terms[key], out_dtype(key, dtype, pdtype))


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", HALVES, ids=lambda d: d.name)
def test_batch_norm_without_gamma_and_beta(be, layout, dtype):
    """No gamma/beta: dgamma and dbeta in float32, y = x_hat."""
    shape, axis = LAYOUTS[layout]
    a = draw(shape, axis, dtype, F32, seed=3)
    rm, rv = a["running_mean"].copy(), a["running_var"].copy()

    def run():
        y, saved = normops.batch_norm(a["x"], None, None, rm.copy(), rv.copy(), eps=EPS,
                                      axis=axis, backend=be)
        dx, dgamma, dbeta = normops.batch_norm_backward(a["dy"], a["x"], saved, None,
                                                        backend=be)
        return dict(y=y, dx=dx, dgamma=dgamma, dbeta=dbeta)

    got = on_1_and_2_threads(run)
    C = shape[axis]
    expected, terms = bn_oracle(a["x"], a["dy"], np.ones(C), np.zeros(C), rm, rv, axis, True)
    for key in got:
        check_rounded_once(key, got[key], expected[key], terms[key], out_dtype(key, dtype, F32))


CLIPS = {"wide": (3.0, 5.0), "tight": (1.1, 0.2)}


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("layout", ["NC-rows", "NCHW-planes", "NCHW-pipelined", "NHWC-rows"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", HALVES, ids=lambda d: d.name)
@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"params-{p}")
@pytest.mark.parametrize("clip", list(CLIPS))
def test_batch_renorm_is_rounded_once_from_the_exact_result(be, layout, training, dtype,
                                                             params, clip):
    shape, axis = LAYOUTS[layout]
    rmax, dmax = CLIPS[clip]
    pdtype = params_dtype(params, dtype)
    a = draw(shape, axis, dtype, pdtype, seed=5)
    a["running_std"] = np.sqrt(a.pop("running_var").astype(np.float64)).astype(pdtype)
    got = on_1_and_2_threads(lambda: run_brn(a, axis, training, be, rmax, dmax))
    expected, terms = brn_oracle(a["x"], a["dy"], a["gamma"], a["beta"], a["running_mean"],
                                 a["running_std"], axis, training, rmax, dmax)
    for key in expected:
        check_rounded_once(key, got[key], expected[key], terms[key], out_dtype(key, dtype, pdtype))


# -- NaN and inf -----------------------------------------------------------------------

def channel(arr, axis, c):
    return np.take(arr, c, axis=axis)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("layout", ["NC-rows", "NCHW-planes", "NCHW-pipelined", "NHWC-rows"])
@pytest.mark.parametrize("dtype", HALVES, ids=lambda d: d.name)
def test_nan_and_inf_in_training_poison_only_their_channel(be, layout, dtype):
    shape, axis = LAYOUTS[layout]
    a = draw(shape, axis, dtype, F32, seed=7)
    ax = axis % len(shape)
    x = a["x"].copy()
    xm = np.moveaxis(x, ax, 0)           # a view: channel-first
    xm[0].flat[3] = np.nan
    xm[1].flat[0] = np.inf
    xm[2].flat[-1] = -np.inf
    xm[3].flat[1], xm[3].flat[2] = np.inf, -np.inf
    poisoned = [0, 1, 2, 3]
    a["x"] = x
    got = on_1_and_2_threads(lambda: run_bn(a, axis, True, be))
    for key in ("y", "dx"):
        for c in poisoned:
            assert np.isnan(channel(got[key], ax, c).astype(np.float64)).all(), (key, c)
    for key in ("dgamma", "running_mean", "running_var"):
        assert np.isnan(got[key][poisoned]).all(), key
    # dbeta is sum(dy): it does not see x
    # the clean channels: as if the others were not there
    clean = [c for c in range(shape[ax]) if c not in poisoned]
    sub = {k: (np.take(v, clean, axis=ax) if k in ("x", "dy") else v[clean]) for k, v in a.items()}
    expected, terms = bn_oracle(sub["x"], sub["dy"], sub["gamma"], sub["beta"],
                                sub["running_mean"], sub["running_var"], axis, True)
    for key in expected:
        actual = np.take(got[key], clean, axis=ax) if key in ("y", "dx") else got[key][clean]
        check_rounded_once(key, actual, expected[key], terms[key], out_dtype(key, dtype, F32))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("layout", ["NC-rows", "NCHW-planes", "NHWC-rows"])
@pytest.mark.parametrize("dtype", HALVES, ids=lambda d: d.name)
def test_nan_and_inf_in_eval_follow_the_elementwise_formula(be, layout, dtype):
    """y = gamma (x - mean) invstd + beta: +-inf times gamma's sign, NaN for NaN and where
    gamma is 0 (0 * inf); dx = dy gamma invstd stays finite; dgamma = sum dy x_hat of
    the channel is NaN or inf there, the others exact."""
    shape, axis = LAYOUTS[layout]
    ax = axis % len(shape)
    a = draw(shape, axis, dtype, F32, seed=9)
    a["gamma"][1] = -abs(a["gamma"][1])
    a["gamma"][2] = abs(a["gamma"][2])
    a["gamma"][3] = 0.0
    x = a["x"].copy()
    xm = np.moveaxis(x, ax, 0)
    specials = {(0, 3): np.nan, (1, 0): np.inf, (1, 1): -np.inf, (2, 2): np.inf, (2, 4): -np.inf,
                (3, 0): np.inf}
    for (c, i), v in specials.items():
        xm[c].flat[i] = v
    a["x"] = x
    got = on_1_and_2_threads(lambda: run_bn(a, axis, False, be))
    y = np.moveaxis(got["y"].astype(np.float64), ax, 0)
    for (c, i), v in specials.items():
        with np.errstate(invalid="ignore"):
            want = a["gamma"][c].astype(np.float64) * v
        if np.isnan(want):
            assert np.isnan(y[c].flat[i]), (c, i)
        else:
            assert y[c].flat[i] == want, (c, i, y[c].flat[i], want)
    special = np.zeros(y.shape, bool)
    for c, i in specials:
        special[c].flat[i] = True
    assert np.isfinite(y[~special]).all()
    assert np.isfinite(got["dx"].astype(np.float64)).all()
    # everything but y at the specials and dgamma of channels 0-3 is the formula's, exactly
    expected, terms = bn_oracle(a["x"], a["dy"], a["gamma"], a["beta"], a["running_mean"],
                                a["running_var"], axis, False)
    for key in ("dx", "dbeta", "running_mean", "running_var"):
        check_rounded_once(key, got[key], expected[key], terms[key], out_dtype(key, dtype, F32))
    ye = np.moveaxis(expected["y"], ax, 0)[~special]
    yt = np.moveaxis(terms["y"], ax, 0)[~special]
    check_rounded_once("y", np.moveaxis(got["y"], ax, 0)[~special], ye, yt, dtype)
    assert not np.isfinite(got["dgamma"][:4]).any()
    check_rounded_once("dgamma", got["dgamma"][4:], expected["dgamma"][4:],
                       terms["dgamma"][4:], F32)


# -- the ends of the half ranges ----------------------------------------------------------

@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("layout", ["NC-rows", "NCHW-planes", "NCHW-pipelined", "NHWC-rows"])
@pytest.mark.parametrize("dtype", HALVES, ids=lambda d: d.name)
@pytest.mark.parametrize("case", ["subnormal-x", "subnormal-out", "overflow"])
def test_subnormal_and_overflowing_outputs(be, layout, dtype, case):
    """Inputs or outputs among the subnormals (their spacing fixed: within 1 of it, and
    rounded once), and gamma so large that some of y and dx overflow: those are +-inf
    exactly where the exact result is at least the largest value plus half its ulp
    (where rounding to nearest overflows), the rest rounded once."""
    shape, axis = LAYOUTS[layout]
    a = draw(shape, axis, dtype, F32, seed=11)
    fi = ml_dtypes.finfo(dtype)
    tiny = float(fi.smallest_normal)
    if case == "subnormal-x":       # x from 8 spacings of the subnormals to the first normals
        a["x"] = (a["x"].astype(np.float64) * tiny / 8).astype(dtype)
    elif case == "subnormal-out":   # y and dx about 4 subnormal spacings
        a["gamma"] = (a["gamma"].astype(np.float64) * tiny / 64).astype(np.float32)
        a["beta"][:] = 0
    else:                           # y and dx up to about 4 x the largest value
        a["gamma"] = (a["gamma"].astype(np.float64) * float(fi.max) / 3).astype(np.float32)
        a["beta"][:] = 0
    with np.errstate(over="ignore"):
        got = on_1_and_2_threads(lambda: run_bn(a, axis, True, be))
        expected, terms = bn_oracle(a["x"], a["dy"], a["gamma"], a["beta"], a["running_mean"],
                                    a["running_var"], axis, True)
    top = LD(float(fi.max))
    threshold = top + ulp(top, dtype) / 2
    for key in ("y", "dx"):
        e, g = expected[key], got[key]
        over = np.abs(e) >= threshold
        assert (case == "overflow") == bool(over.any()), key
        assert np.array_equal(np.isinf(g.astype(np.float64)), over), key
        assert (np.sign(g.astype(np.float64)[over]) == np.sign(e[over])).all(), key
        if case == "subnormal-out":
            assert (np.abs(g.astype(np.float64)) < tiny).mean() > 0.5, key
        check_rounded_once(key, g[~over], e[~over], terms[key][~over], dtype)
