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
        print(f"{args.prog} check: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for prop in testing.properties():
            print(f"{prop.name}: {prop.summary}")
        return 0
    if args.backend is None:
        print(f"{args.prog} check: --backend NAME is required (see: {args.prog} backends)",
              file=sys.stderr)
        return 2
    try:
        impl = testing.backend_implementation(args.backend, args.library, args.device)
        chosen = testing.properties(args.property)
        unknown = sorted(set(args.regime or ()) - set(testing.ALL_REGIMES))
        if unknown:
            raise ValueError(f"unknown value regimes {unknown}; known: {', '.join(testing.ALL_REGIMES)}")
    except (normops.BackendError, ValueError, ImportError) as exc:
        print(f"{args.prog} check: {exc}", file=sys.stderr)
        return 2
    try:
        profile = testing.profile_name(args.profile)
    except ValueError as exc:
        print(f"{args.prog} check: HYPOTHESIS_PROFILE: {exc}", file=sys.stderr)
        return 2
    print(f"checking {impl.name!r}: {len(chosen)} {'property' if len(chosen) == 1 else 'properties'}, profile {profile} "
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's help layout, with descriptions filled to the terminal's width and the
    epilog's indented lines (the examples) kept as written."""

    def _fill_text(self, text, width, indent):
        return "\n\n".join(
            "\n".join(indent + line for line in paragraph.splitlines())
            if paragraph.startswith(" ") or "\n " in paragraph
            else argparse.HelpFormatter._fill_text(self, paragraph, width, indent)
            for paragraph in text.split("\n\n"))


def examples(*lines):
    """An epilog of example command lines (the arguments after the command's name, with a
    comment where one fits); ``%(prog)s`` becomes the command as it was invoked."""
    return "examples:\n" + "\n".join(f"  %(prog)s {line}" for line in lines)


EPILOG = examples(
    "backends              # which backends run here",
    "check --backend cpu   # the conformance kit on the cpu backend",
    "bench --quick         # time the ops against PyTorch",
    "demo --quick          # BN and BRN training a NumPy MLP",
    "COMMAND --help        # a command's options and examples",
)
BACKENDS_EPILOG = examples("  # the backends, versions, build and MPI support")
CHECK_EPILOG = examples(
    "--list                 # the properties",
    "--backend cpu          # every property on the cpu backend",
    "--backend cpu --property bn_matches_reference",
    "--backend reference --profile thorough",
    "--backend cpu --regime extreme_scales",
    "--backend array-api --library torch --device cuda",
)


def build_parser(prog="normops"):
    """The command line's parser; ``prog`` names the command in usage lines and examples."""
    parser = argparse.ArgumentParser(prog=prog, description=normops.__doc__, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"normops {normops.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     title="commands")

    backends = commands.add_parser(
        "backends", help="list the backends and the build configuration",
        description="List the registered backends (available or not, and why not), the "
                    "versions, the cpu backend's build configuration, what synchronized BN "
                    "(comm=) runs on and the backend NumPy arrays get now. Exits 1 if no "
                    "backend takes NumPy arrays.",
        epilog=BACKENDS_EPILOG, formatter_class=HelpFormatter)
    backends.set_defaults(run=cmd_backends)
    bench = commands.add_parser(
        "bench", help="time the ops on each backend against PyTorch and a memory copy",
        description=_bench.DESCRIPTION, epilog=_bench.EPILOG, formatter_class=HelpFormatter)
    _bench.add_arguments(bench).set_defaults(run=cmd_bench)
    check = commands.add_parser(
        "check", help="run the conformance kit (normops.testing) on a backend",
        usage="%(prog)s --backend NAME [options]\n       %(prog)s --list",
        description="Run every property of normops.testing on a registered backend through the "
                    "public ops; print a table of properties, examples run and results. Exits 1 "
                    "if a property fails.",
        epilog=CHECK_EPILOG, formatter_class=HelpFormatter)
    # --backend is required except with --list; argparse's required=True would refuse
    # --list alone, so cmd_check checks it and names what is missing
    required = check.add_argument_group("required arguments")
    required.add_argument("--backend", metavar="NAME",
                          help="registered backend name (required, except with --list; "
                               "the backends command lists them)")
    check.add_argument("--list", action="store_true", help="list the properties and exit")
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
    check.set_defaults(run=cmd_check)
    demo_parser = commands.add_parser(
        "demo", help="train a NumPy MLP on the digits data: no BN vs BN, BN vs BRN (needs normops[demo])",
        description=demo.DESCRIPTION, epilog=demo.EPILOG, formatter_class=HelpFormatter)
    demo.add_arguments(demo_parser).set_defaults(run=cmd_demo)
    return parser


def main(argv=None, prog="normops"):
    """Run the command line: ``argv`` (default: sys.argv[1:]) under the name ``prog``, which
    the usage lines show ("normops" for the console script, "python -m normops" when run
    as a module). Returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    args.prog = prog          # messages name the command as it was invoked, as usage does
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main(prog="python -m normops"))
