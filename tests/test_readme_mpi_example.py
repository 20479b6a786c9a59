"""The synchronized-BN example of docs/distributed.md, as it stands, under mpiexec on 1, 2 and 3 ranks
(its asserts compare every rank's part with one process on the whole batch)."""
import pytest

from mpi_launch import launch
from optional_mpi import require_mpi
from doc_blocks import doc_block


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_the_readme_example_runs_on_every_rank(ranks, tmp_path):
    script = tmp_path / "sync_bn.py"
    script.write_text(doc_block("test: mpi example"))
    done = launch(require_mpi(), ranks, script, out=tmp_path / "out", timeout=120).check()
    assert "Traceback" not in done.stderr, done.describe()
