"""Running the rank scripts of tests/mpi/ under mpiexec, for the tests of synchronized BN.

mpi4py is never imported in the pytest process: each test launches
``mpiexec -n K python -m mpi4py tests/mpi/SCRIPT ...`` as a subprocess with a timeout
that stops every rank (normops._mpirun's), so a rank that hangs in a collective fails
its test instead of stalling the run. The ranks report through files in a folder given
on their command line (one JSON document per rank, or one written by rank 0), which the
tests read back.

Without mpi4py or mpiexec the tests are skipped, unless NORMOPS_REQUIRE_MPI=1 (CI sets
it): see optional_mpi.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import normops
from normops import _mpirun
from optional_mpi import require_mpi

SCRIPTS = Path(__file__).resolve().parent / "mpi"


def _environment():
    """The ranks import the normops this process imported, on one thread each."""
    root = str(Path(normops.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=root if not path else root + os.pathsep + path)


class Launch:
    """The outcome of one mpiexec run: its return code, output, and the folder where the
    ranks wrote their reports."""

    def __init__(self, ranks, args, proc, out, timed_out):
        self.ranks, self.args, self.proc, self.out, self.timed_out = ranks, args, proc, out, timed_out

    def describe(self):
        if self.timed_out:
            head = f"mpiexec -n {self.ranks} {' '.join(self.args)} did not finish within its timeout"
        else:
            head = f"mpiexec -n {self.ranks} {' '.join(self.args)} exited with {self.proc.returncode}"
        tail = lambda text: (text or "")[-4000:]   # noqa: E731
        return f"{head}\n--- stdout\n{tail(self.stdout)}\n--- stderr\n{tail(self.stderr)}"

    @property
    def stdout(self):
        return self.proc.stdout

    @property
    def stderr(self):
        return self.proc.stderr

    def check(self):
        """Fails the test unless every rank finished and mpiexec exited with 0."""
        if self.timed_out or self.proc.returncode != 0:
            pytest.fail(self.describe(), pytrace=False)
        return self

    def rank_reports(self):
        """Every rank's report (rank-R.json), in rank order; a missing one fails the test."""
        reports = []
        for rank in range(self.ranks):
            path = self.out / f"rank-{rank}.json"
            if not path.exists():
                pytest.fail(f"rank {rank} wrote no report\n{self.describe()}", pytrace=False)
            reports.append(json.loads(path.read_text()))
        return reports

    def result(self, name="result.json"):
        path = self.out / name
        if not path.exists():
            pytest.fail(f"rank 0 wrote no {name}\n{self.describe()}", pytrace=False)
        return json.loads(path.read_text())


class _Finished:
    def __init__(self, stdout, stderr, returncode):
        self.stdout, self.stderr, self.returncode = stdout or "", stderr or "", returncode


def launch(mpiexec, ranks, script, *args, out, timeout):
    """Runs ``script`` (a file of tests/mpi/) on ``ranks`` ranks with ``out`` (a folder,
    created) as its first argument, then ``args``; a run past ``timeout`` seconds has
    every rank stopped and is reported as timed out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # python -m mpi4py: an exception a rank does not catch aborts every rank (MPI_Abort)
    # instead of leaving the others waiting in a collective until the timeout
    command = _mpirun.command(mpiexec, ranks, "mpi4py", [SCRIPTS / script, out, *args])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=_environment(),
                            start_new_session=True)
    described = [script, *map(str, args)]
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _mpirun._stop(proc)   # SIGTERM, then SIGKILL, to mpiexec's process group
        stdout, stderr = proc.communicate()
        return Launch(ranks, described, _Finished(stdout, stderr, None), out, True)
    except BaseException:   # KeyboardInterrupt: leave no rank behind
        _mpirun._stop(proc)
        raise
    return Launch(ranks, described, _Finished(stdout, stderr, proc.returncode), out, False)


def rank_module(name):
    """A module of tests/mpi/ (the cases the rank scripts run), imported from its file
    under a name of its own; it imports NumPy only, never mpi4py."""
    key = f"_normops_mpi_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


class Runs:
    """One launch per key, made on first use and kept (a failed one too, so each test
    that needs it fails at once with its output rather than launching again). Skips
    (or fails, with NORMOPS_REQUIRE_MPI=1) where mpi4py or mpiexec is missing."""

    def __init__(self, tmp_path_factory):
        self.mpiexec, self.tmp_path_factory, self.done = None, tmp_path_factory, {}

    def get(self, key, ranks, script, *args, timeout):
        if self.mpiexec is None:
            self.mpiexec = require_mpi()
        if key not in self.done:
            out = self.tmp_path_factory.mktemp(str(key).replace(" ", "_"))
            self.done[key] = launch(self.mpiexec, ranks, script, *args, out=out, timeout=timeout)
        return self.done[key]
