"""Command line: ``python -m normops backends``, ``bench``, ``check`` and ``demo``."""
import argparse
import platform
import sys

import numpy

import normops
from normops import _bench, _config, _distributed, _registry, demo
from normops._text import table


def cmd_backends(args):
    infos = normops.backends()
    rows = [(i.name, "yes" if i.available else "no", i.device or "-", i.auto_for or "-",
             i.source, i.reason or "") for i in infos]
    print(table(("backend", "available", "device", "auto for", "source", "reason unavailable"), rows))
    print()
    print(f"normops {normops.__version__}  python {platform.python_version()}  "
          f"numpy {numpy.__version__}  {platform.system()} {platform.machine()}")
    for key, value in _config.config().items():
        print(f"{key}: {value}")
    print(f"synchronized BN (comm=): {_distributed.mpi_report()}")
    try:
        print(f"backend for numpy arrays now: {_registry.selected_name()}")
    except normops.BackendError as exc:
        print(f"backend for numpy arrays now: none: {exc}")
        return 1
    return 0


def cmd_bench(args):
    return _bench.main(args)


def cmd_check(args):
    try:
        from normops import testing
    except ImportError as exc:
        print(f"python -m normops check: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for prop in testing.properties():
            print(f"{prop.name}: {prop.summary}")
        return 0
    if args.backend is None:
        print("python -m normops check: --backend NAME is required (see: python -m normops backends)",
              file=sys.stderr)
        return 2
    try:
        impl = testing.backend_implementation(args.backend, args.library, args.device)
        chosen = testing.properties(args.property)
        unknown = sorted(set(args.regime or ()) - set(testing.ALL_REGIMES))
        if unknown:
            raise ValueError(f"unknown value regimes {unknown}; known: {', '.join(testing.ALL_REGIMES)}")
    except (normops.BackendError, ValueError, ImportError) as exc:
        print(f"python -m normops check: {exc}", file=sys.stderr)
        return 2
    try:
        profile = testing.profile_name(args.profile)
    except ValueError as exc:
        print(f"python -m normops check: HYPOTHESIS_PROFILE: {exc}", file=sys.stderr)
        return 2
    print(f"checking {impl.name!r}: {len(chosen)} properties, profile {profile} "
          f"(up to {testing.PROFILES[profile].max_examples} examples each)", flush=True)

    def progress(result):
        print(f"  {result.name}: {result.status} ({result.examples} examples, {result.seconds:.1f} s)",
              flush=True)

    report = testing.run(impl, profile=profile, names=args.property, regimes=args.regime,
                         progress=progress)
    print()
    print(report)
    return 0 if report.passed else 1


def cmd_demo(args):
    return demo.main(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m normops", description=normops.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="list the backends and the build configuration").set_defaults(run=cmd_backends)
    bench = commands.add_parser("bench", help="time the ops on each backend against PyTorch and a memory copy",
                                description=_bench.DESCRIPTION)
    _bench.add_arguments(bench).set_defaults(run=cmd_bench)
    check = commands.add_parser(
        "check", help="run the conformance kit (normops.testing) on a backend",
        description="Run every property of normops.testing on a registered backend through the "
                    "public ops; print a table of properties, examples run and results. Exits 1 "
                    "if a property fails.")
    check.add_argument("--backend", help="registered backend name (python -m normops backends lists them)")
    check.add_argument("--profile", choices=("ci", "dev", "thorough"),
                       help="ci: 60 derandomized examples per property (the default, unless "
                            "HYPOTHESIS_PROFILE names another); dev: 60 random ones; thorough: "
                            "1000 random ones")
    check.add_argument("--library", metavar="NAME",
                       help="the array library the kit hands the backend: numpy, array_api_strict, "
                            "torch or cupy (default: the one it is picked for; array_api_strict for "
                            "array-api)")
    check.add_argument("--device", help="the library's device (default: its default device), "
                                        "e.g. cuda for torch")
    check.add_argument("--property", action="append", metavar="NAME",
                       help="run only this property (repeatable)")
    check.add_argument("--regime", action="append", metavar="NAME",
                       help="draw only this value regime (repeatable; default: every regime "
                            "but extreme_scales, which this asks for)")
    check.add_argument("--list", action="store_true", help="list the properties and exit")
    check.set_defaults(run=cmd_check)
    demo_parser = commands.add_parser(
        "demo", help="train a NumPy MLP on the digits data: no BN vs BN, BN vs BRN (needs normops[demo])",
        description=demo.DESCRIPTION)
    demo.add_arguments(demo_parser).set_defaults(run=cmd_demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
