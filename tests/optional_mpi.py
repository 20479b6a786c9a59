"""mpi4py and mpiexec for the tests that launch ranks: skipped when either is missing,
unless NORMOPS_REQUIRE_MPI is "1" (then their absence fails the test instead)."""
import os

import pytest

from normops._mpirun import LaunchError, requirements


def require_mpi():
    """The path of mpiexec, or a skip (a failure with NORMOPS_REQUIRE_MPI=1) naming what
    is missing."""
    try:
        return requirements()
    except LaunchError as exc:
        if os.environ.get("NORMOPS_REQUIRE_MPI") == "1":
            pytest.fail(f"NORMOPS_REQUIRE_MPI=1 but: {exc}")
        pytest.skip(str(exc))
