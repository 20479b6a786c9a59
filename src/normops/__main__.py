"""Command line: ``python -m normops backends`` and ``python -m normops bench``."""
import argparse
import platform
import sys

import numpy

import normops
from normops import _bench, _config, _registry


def _table(rows, header):
    widths = [max(len(str(v)) for v in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_backends(args):
    infos = normops.backends()
    rows = [(i.name, "yes" if i.available else "no", i.device or "-", i.auto_for or "-",
             i.source, i.reason or "") for i in infos]
    print(_table(rows, ("backend", "available", "device", "auto for", "source", "reason unavailable")))
    print()
    print(f"normops {normops.__version__}  python {platform.python_version()}  "
          f"numpy {numpy.__version__}  {platform.system()} {platform.machine()}")
    for key, value in _config.config().items():
        print(f"{key}: {value}")
    try:
        print(f"backend for numpy arrays now: {_registry.selected_name()}")
    except normops.BackendError as exc:
        print(f"backend for numpy arrays now: none: {exc}")
        return 1
    return 0


def cmd_bench(args):
    return _bench.main(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m normops", description=normops.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="list the backends and the build configuration").set_defaults(run=cmd_backends)
    bench = commands.add_parser("bench", help="time the ops on each backend against PyTorch and a memory copy",
                                description=_bench.DESCRIPTION)
    _bench.add_arguments(bench).set_defaults(run=cmd_bench)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
