"""``python -m normops bench --ranks N``: launches the rank program normops._bench.sync
under mpiexec (sync.py itself is what every rank runs)."""
import os
import sys

from normops import _mpirun

# the rank program, run as ``mpiexec -n N python -m RANK_PROGRAM``
RANK_PROGRAM = "normops._bench.sync"
# the whole mpiexec run of bench --ranks, started to finished
SYNC_TIMEOUT_S = {"quick": 180, "full": 900}


def main(args):
    """``bench --ranks N``: the rank program on N ranks with OMP_NUM_THREADS=1 (it prints
    its own table); mpiexec's exit status, or 2 when it cannot be launched or runs out of
    time."""
    forwarded = ["--ranks", args.ranks] + ["--quick"] * args.quick
    if args.json:
        forwarded += ["--json", os.path.abspath(args.json)]
    timeout = SYNC_TIMEOUT_S["quick" if args.quick else "full"]
    print(f"python -m normops bench --ranks {args.ranks}: mpiexec -n {args.ranks} python -m "
          f"{RANK_PROGRAM} with OMP_NUM_THREADS=1 for every rank (timeout {timeout} s)",
          flush=True)
    try:
        return _mpirun.run(args.ranks, RANK_PROGRAM, forwarded, timeout=timeout,
                           env=_mpirun.environment(OMP_NUM_THREADS=1))
    except _mpirun.LaunchError as exc:
        print(f"python -m normops bench: {exc}", file=sys.stderr)
        return 2
