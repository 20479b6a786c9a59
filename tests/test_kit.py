"""The conformance kit itself: it catches wrong implementations, names the property and
the input, rebuilds that input from its message, reports BRN as n/a when absent, and its
strategies and profiles are what the docs say."""
import re
import subprocess
import sys

import hypothesis
import numpy as np
import pytest

import normops
from normops import testing
from normops.testing import strategies


def unbiased_batch_norm(x, gamma, beta, running_mean, running_var, *, training, momentum, eps,
                        axis, convention):
    """normops's batch_norm, but normalizing with the unbiased variance in training: the
    biased/unbiased mix-up."""
    y, saved = normops.batch_norm(x, gamma, beta, running_mean, running_var, training=training,
                                  momentum=momentum, eps=eps, axis=axis, convention=convention,
                                  backend="reference")
    if not training:
        return y, saved
    m = x.size // x.shape[axis]
    shape = [1] * x.ndim
    shape[axis] = -1
    g = 1.0 if gamma is None else gamma.astype(np.float64).reshape(shape)
    b = 0.0 if beta is None else beta.astype(np.float64).reshape(shape)
    x_hat = (x - saved.mean.reshape(shape)) * saved.invstd.reshape(shape)
    var = 1 / saved.invstd ** 2 - eps
    y = g * x_hat * np.sqrt((var + eps) / (var * m / (m - 1) + eps)).reshape(shape) + b
    return y.astype(x.dtype), saved


BN_ONLY = testing.Implementation(
    "reference-bn-only", testing.backend_implementation("reference").batch_norm,
    testing.backend_implementation("reference").batch_norm_backward)
UNBIASED = testing.Implementation("unbiased", unbiased_batch_norm, BN_ONLY.batch_norm_backward)


def test_a_wrong_implementation_fails_on_the_right_property_with_a_useful_message():
    report = testing.run(UNBIASED, names=["bn_zero_mean_unit_variance", "bn_identity_recovery",
                                          "bn_eval_formulas"])
    status = {r.name: r.status for r in report.results}
    assert status == {"bn_zero_mean_unit_variance": "FAILED", "bn_identity_recovery": "FAILED",
                      "bn_eval_formulas": "passed"}   # eval mode has no batch variance to mix up
    message = report.results[0].message
    assert re.match(r"bn_zero_mean_unit_variance does not hold for unbiased on x of shape \(\d+(, \d+)+\), "
                    r"float(32|64), axis -?\d \(m = \d+\); case=make_case\(\(", message), message
    for part in ("regime=", "memory=", "variance of y: worst error", "against a tolerance of"):
        assert part in message, (part, message)
    assert not report.passed and "FAILED bn_zero_mean_unit_variance:" in str(report)


def test_the_input_in_a_failure_message_rebuilds_a_failing_case():
    result = testing.run_property(testing.properties(["bn_zero_mean_unit_variance"])[0], UNBIASED)
    recipe = re.search(r"case=(make_case\(.*?renorm=(?:True|False)\))", result.message).group(1)
    case = eval(recipe, {"make_case": testing.make_case})
    assert repr(case) == recipe
    with pytest.raises(AssertionError, match="variance of y"):
        testing.properties(["bn_zero_mean_unit_variance"])[0].check(UNBIASED, case=case)


def test_renorm_properties_are_not_applicable_without_batch_renorm():
    names = ["bn_identity_recovery", "brn_rmax1_dmax0_is_bn", "brn_eval_formulas"]
    report = testing.check(BN_ONLY, names=names)
    assert [(r.name, r.status) for r in report.results] == [
        ("bn_identity_recovery", "passed"), ("brn_rmax1_dmax0_is_bn", "n/a"), ("brn_eval_formulas", "n/a")]
    assert report.results[0].examples >= 10 and report.results[1].examples == 0
    assert "has no batch_renorm" in report.results[1].message


def test_check_raises_with_the_report_and_check_backend_knows_the_backends():
    with pytest.raises(AssertionError, match=r"(?s)bn_identity_recovery\s+\d+\s+[\d.]+\s+FAILED.*unbiased: 0 passed, 1 failed"):
        testing.check(UNBIASED, names=["bn_identity_recovery"])
    with pytest.raises(normops.UnknownBackendError):
        testing.check_backend("no-such-backend")
    with pytest.raises(ValueError, match="unknown properties"):
        testing.run(BN_ONLY, names=["no_such_property"])
    with pytest.raises(TypeError, match="check_backend"):
        testing.check("reference")


def test_exceptions_from_the_implementation_are_failures_naming_them():
    def refuses(*args, **kwargs):
        raise ValueError("not today")

    report = testing.run(testing.Implementation("refuses", refuses, refuses), names=["bn_identity_recovery"])
    assert report.results[0].failed
    assert "raised ValueError: not today" in report.results[0].message


def test_profiles():
    ci, thorough = testing.PROFILES["ci"], testing.PROFILES["thorough"]
    assert ci.derandomize and ci.deadline is None and ci.database is None
    assert thorough.max_examples >= 1000 and thorough.deadline is None
    assert testing.profile_settings("dev") is testing.PROFILES["dev"]
    with pytest.raises(ValueError, match="unknown profile"):
        testing.profile_settings("fast")


def test_assert_close_reports_the_worst_element_not_the_first():
    with pytest.raises(AssertionError, match=r"worst error 3 at \(2,\).*2 of 3 elements"):
        testing.assert_close(np.array([1.0, 2.1, 3.0]), np.array([1.0, 2.0, 0.0]), np.float64,
                             scale=0.0, what="v")


@pytest.mark.parametrize("field,values", [
    ("regime", testing.REGIMES), ("memory", testing.MEMORY), ("dtype", ("float32", "float64"))])
def test_cases_reach_every_regime_memory_layout_and_dtype(field, values):
    for value in values:
        found = hypothesis.find(strategies.cases(), lambda c: f"{field}={value!r}" in c.recipe,
                                settings=hypothesis.settings(database=None, max_examples=2000))
        assert f"{field}={value!r}" in repr(found)


@pytest.mark.parametrize("layout", ["NC", "NCHW", "NHWC", "NCDHW", "NDHWC"])
def test_cases_reach_every_named_layout_and_m_equal_2(layout):
    ndim, axis = strategies.LAYOUTS[layout]
    found = hypothesis.find(strategies.cases(), lambda c: c.x.ndim == ndim and c.axis == axis and c.m == 2,
                            settings=hypothesis.settings(database=None, max_examples=2000))
    assert found.m == 2


def test_value_regimes_are_what_they_say():
    def stats(regime, dtype="float64", seed=3):
        case = testing.make_case((64, 6), 1, dtype, regime=regime, seed=seed)
        mean, var = case.batch_mean_var()
        return np.abs(mean), np.sqrt(var)

    mean, spread = stats("large_offset")
    assert np.all(mean >= 1e3 * spread)
    assert np.all(stats("tiny_variance")[1] <= 1e-3 * 1.5)
    constant = testing.make_case((64, 6), 1, regime="constant_channels", seed=3)
    assert np.any(np.ptp(constant.x, axis=0) == 0)
    spread = stats("mixed_scales", seed=0)[1]
    assert spread.max() / spread.min() > 1e3
    case = testing.make_case((3, 4, 5), -1, "float32", memory="reversed")
    assert case.x.strides[0] < 0 and case.x.dtype == np.float32 and case.axis == -1


def test_the_extreme_scales_regime_is_what_it_says():
    spreads = []
    for dtype, top in (("float32", 30), ("float64", 150)):
        for seed in range(20):
            case = testing.make_case((8, 5), 1, dtype, regime="extreme_scales", seed=seed,
                                     gamma=seed % 2 == 0)
            _, var = case.batch_mean_var()
            spreads.extend(np.log10(np.sqrt(var)) / top)
            assert np.all(np.isfinite(case.x)) and np.all(np.isfinite(case.dy))
            g = np.ones(case.channels) if case.gamma is None else case.gamma.astype(np.float64)
            assert np.all(np.abs(g) <= 1e36)
            # dx = gamma dy / sigma stays representable, and so does dy
            dx = np.abs(case.dy).max(axis=0) * np.abs(g) / np.sqrt(var + case.eps)
            assert np.all((dx < 10.0 ** top) & (dx > 10.0 ** -top)), (case, dx)
            assert 0 < case.eps <= 0.1 * var.min() * 1.01
    assert min(spreads) < -0.8 and max(spreads) > 0.8   # over most of the range, both ends


def test_extreme_scales_is_drawn_only_when_asked_for():
    assert "extreme_scales" not in testing.REGIMES
    assert testing.ALL_REGIMES == testing.REGIMES + testing.EXTREME_REGIMES
    assert testing.Implementation("x", None, None).regimes == testing.REGIMES
    asked = testing.Implementation("x", None, None, regimes=testing.EXTREME_REGIMES)
    for impl, want in ((testing.Implementation("x", None, None), set(testing.REGIMES)),
                       (asked, {"extreme_scales"})):
        drawn = set()

        @hypothesis.given(testing.properties(["bn_matches_reference"])[0].draws(impl)["case"])
        @hypothesis.settings(max_examples=60, database=None)
        def collect(case):
            drawn.add(re.search(r"regime='(\w+)'", case.recipe).group(1))

        collect()
        assert drawn <= want and drawn
    with pytest.raises(ValueError, match="unknown value regimes"):
        testing.run(BN_ONLY, regimes=("huge",))


def test_the_command_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "normops", "check", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, check=False)

    done = run("--backend", "reference", "--property", "bn_identity_recovery",
               "--property", "brn_eval_formulas")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"bn_identity_recovery\s+60\s+[\d.]+\s+passed", done.stdout), done.stdout
    assert "reference: 2 passed, 0 failed, 0 n/a" in done.stdout
    done = run("--backend", "cpu", "--property", "bn_matches_reference", "--regime", "extreme_scales")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cpu: 1 passed, 0 failed, 0 n/a" in done.stdout
    for args in (("--backend", "reference", "--property", "nope"), ("--backend", "nope"), (),
                 ("--backend", "reference", "--regime", "huge")):
        done = run(*args)
        assert done.returncode == 2 and done.stderr.startswith("python -m normops check:"), done
    listed = run("--list").stdout.splitlines()
    assert [line.split(":")[0] for line in listed] == [p.name for p in testing.properties()]
    assert not list(tmp_path.iterdir())   # no example database left behind by "ci"


def float32_sums_batch_norm(x, gamma, beta, running_mean, running_var, *, training, momentum,
                            eps, axis, convention):
    """Training statistics summed one value after another in x's dtype (np.cumsum is
    sequential): fine for a few hundred float32 values, wrong for tens of thousands."""
    if not training:
        return BN_ONLY.batch_norm(x, gamma, beta, running_mean, running_var, training=False,
                                  momentum=momentum, eps=eps, axis=axis, convention=convention)
    rows = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    mean = np.cumsum(rows, axis=0, dtype=x.dtype)[-1] / x.dtype.type(len(rows))
    var = np.cumsum((rows - mean) ** 2, axis=0, dtype=x.dtype)[-1] / x.dtype.type(len(rows))
    shape = [1] * x.ndim
    shape[axis] = -1
    y = (x - mean.reshape(shape)) / np.sqrt(var + x.dtype.type(eps)).reshape(shape)
    g = 1 if gamma is None else gamma.reshape(shape)
    b = 0 if beta is None else beta.reshape(shape)
    _, saved = BN_ONLY.batch_norm(x, gamma, beta, running_mean, running_var, training=True,
                                  momentum=momentum, eps=eps, axis=axis, convention=convention)
    return (g * y + b).astype(x.dtype), saved


def test_float32_accumulation_is_caught_on_large_batches_only():
    impl = testing.Implementation("float32-sums", float32_sums_batch_norm, BN_ONLY.batch_norm_backward,
                                  dtypes=(np.float32,))
    report = testing.run(impl, names=["bn_matches_reference", "bn_large_batch_matches_reference"])
    assert [r.status for r in report.results] == ["passed", "FAILED"], str(report)
    assert "y: worst error" in report.results[1].message
