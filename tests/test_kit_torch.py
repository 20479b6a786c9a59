"""The adapter of docs/testing-kit.md for torch.nn.functional.batch_norm, run through the conformance
kit as the page's own code block stands: torch passes every BN property in float64,
and in float32 fails only the large-batch one, whose sums it does not keep in double.
Skipped without PyTorch, unless NORMOPS_REQUIRE_TORCH is set (CI sets it)."""
import numpy as np
import pytest

from normops import testing
from optional_torch import import_torch
from doc_blocks import run_doc_block

import_torch("this check")


@pytest.fixture(scope="module")
def adapter():
    """The page's block, run: it prints the report and checks the float64 adapter."""
    return run_doc_block("kit: torch adapter")   # raises if float64 fails


BN_PROPERTIES = [p.name for p in testing.properties() if p.needs == "batch_norm"]


def test_torch_float64_passes_every_batch_norm_property(adapter):
    impl = adapter["testing"].Implementation(
        "torch-float64", adapter["torch_batch_norm"], adapter["torch_batch_norm_backward"],
        conventions=("pytorch",), dtypes=(np.float64,))
    report = testing.run(impl, names=BN_PROPERTIES)
    assert report.passed, str(report)


def test_torch_float32_fails_only_on_large_batches_as_the_readme_says(adapter):
    impl = adapter["torch_bn"]
    report = testing.run(impl)
    status = {r.name: r.status for r in report.results}
    failed = [name for name, s in status.items() if s == "FAILED"]
    assert failed == ["bn_large_batch_matches_reference"], str(report)
    assert "dtype='float32'" in report.results[BN_PROPERTIES.index(failed[0])].message
    assert all(status[p.name] == "n/a" for p in testing.properties() if p.needs == "batch_renorm")
    # the page's figures, on the case it names; the cpu backend passes the same check
    case = testing.make_case((16384, 1, 1), 1, "float32", regime="large_offset", seed=0)
    y, saved = impl.batch_norm(case.x, None, None, None, None, training=True, momentum=0.1,
                               eps=1e-5, axis=1, convention="pytorch")
    dgamma = impl.batch_norm_backward(case.dy, case.x, saved, None, axis=1)[1]
    mean, var = case.batch_mean_var()
    exact = case.channel_sum(case.dy * (case.x - mean)) / np.sqrt(var + 1e-5)
    assert abs(dgamma[0] - exact[0]) / abs(exact[0]) > 0.01
    check = testing.properties(["bn_large_batch_matches_reference"])[0].check
    check(testing.backend_implementation("cpu"), m=16384, channels=1, inner=1,
          dtype=np.dtype("float32"), regime="large_offset", seed=0)
