"""The README's adapter for torch.nn.functional.batch_norm passes the conformance kit.
The adapter is the README's own code block, run as it stands. Skipped without PyTorch,
unless NORMOPS_REQUIRE_TORCH is set (CI sets it)."""
import os
import pathlib
import re

import pytest

try:
    import torch  # noqa: F401
except ImportError:
    if os.environ.get("NORMOPS_REQUIRE_TORCH"):
        raise
    pytest.skip("PyTorch is not installed (pip install torch==2.13.0 enables this check)",
                allow_module_level=True)

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def adapter_block():
    text = README.read_text()
    found = re.search(r"<!-- kit: torch adapter.*?-->\n```python\n(.*?)\n```", text, re.S)
    assert found, "README.md has no torch adapter block"
    return found.group(1)


def test_torch_batch_norm_passes_the_kit_through_the_readme_adapter(capsys):
    namespace = {}
    exec(compile(adapter_block(), str(README), "exec"), namespace)   # raises if a property fails
    report = namespace["report"]
    assert report.passed
    counts = report.counts()
    # every BN property ran; the BRN ones are n/a (torch has no BRN)
    assert counts["passed"] == sum(p.needs == "batch_norm" for p in namespace["testing"].properties())
    assert counts["n/a"] == sum(p.needs == "batch_renorm" for p in namespace["testing"].properties())
    assert "torch: " in capsys.readouterr().out
