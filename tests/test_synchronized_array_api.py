"""Synchronized BN and BRN on the array-API path, the one CuPy arrays and CUDA tensors
take: array-api-strict arrays and torch tensors on 1, 2 and 3 ranks (an empty one on 3)
equal the cpu backend on the whole batch, come back as arrays of their library, and
every rank holds bitwise the same statistics (see tests/mpi/sync_array_api.py)."""
import pytest

from mpi_launch import launch
from optional_mpi import require_mpi

pytest.importorskip("array_api_strict")
pytest.importorskip("torch")


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_the_array_api_path_synchronizes_as_the_cpu_backend_on_the_whole_batch(ranks, tmp_path):
    done = launch(require_mpi(), ranks, "sync_array_api.py", out=tmp_path, timeout=120).check()
    result = done.result()
    assert sorted(result) == sorted(f"{lib}/{op}" for lib in ("array_api_strict", "torch")
                                    for op in ("batch_norm", "batch_renorm"))
    for case, got in result.items():
        assert got["library"], case
        assert got["bitwise"], case
        for field in ("y", "dx", "dgamma", "dbeta", "running"):
            assert got[field] <= 1e-12, (case, field, got[field])
