"""The conformance kit on float16 and bfloat16: its strategies draw them (bfloat16 only
with ml_dtypes), with float32 or half parameters and running statistics; its regimes
stay in the half ranges; its tolerances are keyed by dtype; and its rounding property
(each half output within 1 ulp of the float64 result) catches arithmetic in the half
dtype, which the term-relative tolerances let through."""
import subprocess
import sys

import hypothesis
import numpy as np
import pytest

import normops
from normops import testing
from normops.testing import strategies
from normops.testing._dtypes import finfo, ulp

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
REFERENCE = testing.backend_implementation("reference")


def test_the_half_dtypes_and_their_tolerances():
    assert strategies.HALF_DTYPES == (F16, BF16)
    assert strategies.ALL_DTYPES == strategies.DTYPES + strategies.HALF_DTYPES
    assert testing.tolerance(F16) == 4 * 2.0 ** -10 and testing.tolerance(BF16) == 4 * 2.0 ** -7
    assert testing.tolerance(np.float32) == 1e-5 and testing.tolerance(np.float64) == 1e-10
    # the implementations the kit makes of normops's backends draw them; a user's
    # Implementation draws float32 and float64 unless it asks for more
    assert set(testing.backend_implementation("cpu").dtypes) == set(map(np.dtype, (np.float32, np.float64, F16, BF16)))
    assert testing.Implementation("mine", None, None).dtypes == strategies.DTYPES


@pytest.mark.parametrize("what,value", [
    ("dtype", "float16"), ("dtype", "bfloat16"), ("params", "float32"), ("running", "float32")])
def test_cases_reach_the_half_dtypes_and_mixed_precision(what, value):
    found = hypothesis.find(strategies.cases(), lambda c: f"{what}={value!r}" in c.recipe,
                            settings=hypothesis.settings(database=None, max_examples=2000))
    case = eval(found.recipe, {"make_case": testing.make_case})
    assert repr(case) == found.recipe
    if what == "params" and case.gamma is not None:
        assert case.gamma.dtype == np.float32 and case.x.dtype in (F16, BF16)
    if what == "running":
        assert case.running_mean.dtype == case.running_second.dtype == np.float32


def test_mixed_dtypes_only_for_half_x():
    with pytest.raises(ValueError, match="does not go with x of float64"):
        testing.make_case((4, 3), 1, "float64", params="float32")
    with pytest.raises(ValueError, match="does not go with x of float16"):
        testing.make_case((4, 3), 1, "float16", running="bfloat16")
    case = testing.make_case((4, 3), 1, "bfloat16", params="float32", gamma=False, beta=False)
    assert case.parameters_dtype == np.float32 and case.running_dtype == BF16


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("regime", testing.ALL_REGIMES)
def test_the_regimes_stay_in_the_half_range(dtype, regime):
    """x, dy and the running statistics finite; the variances (batch and running) within
    the dtype; a spread that is not 0 still holds distinct values in the dtype."""
    info = finfo(dtype)
    for seed in range(30):
        case = testing.make_case((64, 4), 1, dtype.name, regime=regime, seed=seed,
                                 renorm=seed % 2 == 1)
        for name in ("x", "dy", "gamma", "beta", "running_mean", "running_second"):
            v = getattr(case, name).astype(np.float64)
            assert np.all(np.isfinite(v)), (name, case)
        _, var = case.batch_mean_var()
        if regime == "extreme_scales":
            # as float32's: spreads over the range where x, y and dx are representable
            # (float16 1e-3..1e3, bfloat16 float32's 1e-30..1e30), variances beyond it
            continue
        assert np.all(var <= float(info.max) / 2), case
        assert np.all(np.abs(case.x.astype(np.float64)) < 5e3 if dtype == F16 else True), case
        live = np.ptp(case.x.astype(np.float64), axis=0) > 0
        if regime != "constant_channels":
            assert live.all(), case   # no spread swallowed by its offset
        distinct = [len(np.unique(case.x[:, c])) for c in range(4) if live[c]]
        assert min(distinct, default=64) >= 8, (distinct, case)


def test_ulp():
    assert ulp(1.0, F16) == 2.0 ** -10 and ulp(1.9, BF16) == 2.0 ** -7
    assert ulp(65504.0, F16) == 32.0 and ulp(1e9, F16) == 32.0
    assert ulp(0.0, F16) == 2.0 ** -24 and ulp(1e-7, F16) == 2.0 ** -24
    assert ulp(3.0, np.float32) == 2.0 ** -22


def half_arithmetic_batch_norm(x, gamma, beta, running_mean, running_var, **options):
    """normops's reference, but y computed in x's dtype from the statistics rounded to
    it: (x - mean) * invstd * gamma + beta, each operation rounded to the half dtype."""
    y, saved = REFERENCE.batch_norm(x, gamma, beta, running_mean, running_var, **options)
    shape = [1] * x.ndim
    shape[options["axis"]] = -1
    mean = saved.mean.astype(x.dtype).reshape(shape)
    invstd = saved.invstd.astype(x.dtype).reshape(shape)
    y = (x - mean) * invstd
    if gamma is not None:
        y = y * gamma.astype(x.dtype).reshape(shape)
    if beta is not None:
        y = y + beta.astype(x.dtype).reshape(shape)
    return y.astype(x.dtype), saved


def test_the_rounding_property_catches_half_arithmetic():
    impl = testing.Implementation("half-arithmetic", half_arithmetic_batch_norm,
                                  REFERENCE.batch_norm_backward, dtypes=strategies.ALL_DTYPES)
    report = testing.run(impl, names=["bn_matches_reference", "half_outputs_within_one_ulp"])
    status = {r.name: r.status for r in report.results}
    # within a few ulps of its terms, which the term-relative tolerance allows; not
    # within 1 ulp of the exact result
    assert status == {"bn_matches_reference": "passed", "half_outputs_within_one_ulp": "FAILED"}, str(report)
    assert "ulps of" in report.results[1].message and "from the float64 result" in report.results[1].message


def test_the_rounding_property_is_not_applicable_without_half_dtypes():
    impl = testing.Implementation("full", REFERENCE.batch_norm, REFERENCE.batch_norm_backward)
    result = testing.run(impl, names=["half_outputs_within_one_ulp"]).results[0]
    assert result.status == "n/a" and "takes no float16 or bfloat16 x" in result.message


def test_a_wrong_gradient_dtype_fails():
    def float16_grads(dy, x, saved, gamma, **options):
        dx, dgamma, dbeta = REFERENCE.batch_norm_backward(dy, x, saved, gamma, **options)
        return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)

    impl = testing.Implementation("half-grads", REFERENCE.batch_norm, float16_grads,
                                  dtypes=strategies.HALF_DTYPES)
    result = testing.run(impl, names=["bn_matches_reference"]).results[0]
    assert result.failed and "dgamma: dtype" in result.message and "expected an array of float32" in result.message


def test_the_kit_runs_without_ml_dtypes():
    code = ("import sys; sys.modules['ml_dtypes'] = None\n"
            "import numpy as np\n"
            "from normops import testing\n"
            "from normops.testing import strategies\n"
            "assert strategies.HALF_DTYPES == (np.dtype(np.float16),), strategies.HALF_DTYPES\n"
            "r = testing.run(testing.backend_implementation('reference'),\n"
            "                names=['bn_matches_reference', 'half_outputs_within_one_ulp'])\n"
            "assert r.passed, str(r)\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
