"""PyTorch for the tests that compare against it: skipped when it is missing, unless
NORMOPS_REQUIRE_TORCH is set (CI sets it, so there these tests always run)."""
import os

import pytest


def import_torch(enables):
    """torch, or a module-level skip naming what installing it ``enables``."""
    try:
        import torch
    except ImportError:
        if os.environ.get("NORMOPS_REQUIRE_TORCH"):
            raise
        pytest.skip(f"PyTorch is not installed (pip install torch==2.13.0 enables {enables})",
                    allow_module_level=True)
    return torch
