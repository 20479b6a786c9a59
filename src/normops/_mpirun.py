"""Launching a normops rank program under ``mpiexec`` from a command of ``python -m normops``
(``demo --ranks N``, ``bench --ranks N``): find mpi4py and mpiexec, run
``mpiexec -n N <this python> -m MODULE ...`` with a timeout, and stop every rank when it
runs out.

mpi4py is looked up, never imported here: importing mpi4py.MPI would initialize MPI in
this (launching) process.
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

from ._distributed import MPI_INSTALL


class LaunchError(Exception):
    """The rank program cannot be launched (mpi4py or mpiexec missing, bad --ranks) or
    did not finish (timeout): the message says why and what to do."""


def find_mpiexec():
    """The mpiexec next to this Python (the one the mpich wheel installs into a virtual
    environment, matching its mpi4py), else the first on PATH; None if there is none."""
    for name in ("mpiexec", "mpirun"):
        beside = Path(sys.executable).parent / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def requirements():
    """The path of mpiexec; LaunchError naming what is missing and how to install it."""
    missing = []
    if importlib.util.find_spec("mpi4py") is None:
        missing.append("mpi4py is not installed")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        missing.append(f"no mpiexec next to {sys.executable} nor on PATH")
    if missing:
        raise LaunchError(f"{'; '.join(missing)}. To install both (mpi4py and the MPICH "
                          f"wheel, which brings mpiexec): {MPI_INSTALL}")
    return mpiexec


def command(mpiexec, ranks, module, args=()):
    return [mpiexec, "-n", str(ranks), sys.executable, "-m", module, *map(str, args)]


def run(ranks, module, args=(), *, timeout, env=None):
    """Run ``module`` as a rank program on ``ranks`` processes; its output goes to this
    process's stdout and stderr as it comes. Returns mpiexec's exit status. LaunchError
    when it cannot start, or when it runs past ``timeout`` seconds (every rank is then
    stopped: the process group of mpiexec gets SIGTERM, then SIGKILL)."""
    if ranks < 1:
        raise LaunchError(f"--ranks must be at least 1, got {ranks}")
    cmd = command(requirements(), ranks, module, args)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    except OSError as exc:
        raise LaunchError(f"cannot run {' '.join(cmd)}: {exc}") from exc
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise LaunchError(f"{' '.join(cmd)} did not finish within {timeout:g} s; "
                          f"its ranks were stopped") from None
    except BaseException:   # KeyboardInterrupt: leave no rank behind
        _stop(proc)
        raise


def _stop(proc):
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue


def rank_main(prog, expected_ranks, body):
    """The main of a rank program: ``body(comm)`` on MPI.COMM_WORLD, returning its exit
    status. A world of another size than ``expected_ranks`` (None: any) is refused with
    status 2: an mpiexec of another MPI library than mpi4py's starts N worlds of one
    rank. An exception on one rank aborts every rank, which would otherwise wait for it
    in a collective."""
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if expected_ranks is not None and comm.Get_size() != expected_ranks:
        if comm.Get_rank() == 0:
            print(f"{prog}: expected {expected_ranks} ranks, but MPI.COMM_WORLD has "
                  f"{comm.Get_size()}: the mpiexec that started it belongs to another MPI "
                  f"library than mpi4py's ({MPI.Get_library_version().splitlines()[0]})",
                  file=sys.stderr, flush=True)
        return 2
    try:
        return body(comm)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
        raise


def environment(**overrides):
    """os.environ with ``overrides`` (str values)."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in overrides.items()})
    return env
