"""Running the rank scripts of tests/mpi/ under mpiexec, for the tests of synchronized BN.

mpi4py is never imported in the pytest process: each test launches
``mpiexec -n K python -m mpi4py tests/mpi/SCRIPT ...`` as a subprocess with a timeout,
so a rank that hangs in a collective fails its test instead of stalling the run. The ranks report
through files in a folder given on their command line (one JSON document per rank, or
one written by rank 0), which the tests read back.

Without mpi4py or mpiexec the tests are skipped, unless NORMOPS_REQUIRE_MPI is set (CI
sets it), in which case importing this module fails.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import normops

SCRIPTS = Path(__file__).resolve().parent / "mpi"
MPI_INSTALL = "pip install mpi4py mpich (mpi4py, and an MPI with its mpiexec)"


def _required():
    return os.environ.get("NORMOPS_REQUIRE_MPI", "") not in ("", "0")


def find_mpiexec():
    """The mpiexec next to this interpreter (a virtual environment's, as the mpich wheel
    installs it), else the first on PATH; None if there is none."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mpiexec")


def require_mpi(enables):
    """The path of mpiexec, or a module-level skip naming what installing MPI ``enables``
    (an error instead when NORMOPS_REQUIRE_MPI is set)."""
    missing = []
    if importlib.util.find_spec("mpi4py") is None:   # looked up, not imported
        missing.append("mpi4py is not installed")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        missing.append(f"no mpiexec next to {sys.executable} or on PATH")
    if missing:
        reason = f"{'; '.join(missing)} ({MPI_INSTALL} enables {enables})"
        if _required():
            raise RuntimeError(f"NORMOPS_REQUIRE_MPI is set but {reason}")
        pytest.skip(reason, allow_module_level=True)
    return mpiexec


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


class _Expired:
    def __init__(self, error):
        def text(value):
            return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")
        self.stdout, self.stderr, self.returncode = text(error.stdout), text(error.stderr), None


def launch(mpiexec, ranks, script, *args, out, timeout):
    """Runs ``script`` (a file of tests/mpi/) on ``ranks`` ranks with ``out`` (a folder,
    created) as its first argument, then ``args``; a run past ``timeout`` seconds is
    killed and reported as timed out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    argv = [str(SCRIPTS / script), str(out), *map(str, args)]
    # python -m mpi4py: an exception a rank does not catch aborts every rank (MPI_Abort)
    # instead of leaving the others waiting in a collective until the timeout
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", *argv]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=_environment(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        return Launch(ranks, [script, *map(str, args)], _Expired(error), out, True)
    return Launch(ranks, [script, *map(str, args)], proc, out, False)


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
    that needs it fails at once with its output rather than launching again)."""

    def __init__(self, mpiexec, tmp_path_factory):
        self.mpiexec, self.tmp_path_factory, self.done = mpiexec, tmp_path_factory, {}

    def get(self, key, ranks, script, *args, timeout):
        if key not in self.done:
            out = self.tmp_path_factory.mktemp(str(key).replace(" ", "_"))
            self.done[key] = launch(self.mpiexec, ranks, script, *args, out=out, timeout=timeout)
        return self.done[key]
