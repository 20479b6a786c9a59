"""The command line as a user meets it: ``normops --version`` and ``python -m normops
--version``, usage lines that name the command as it was invoked, ``check --help``
showing --backend as required (and --list working without it), and a one-line summary
and runnable examples in every command's help.

The console script is looked up next to this Python (``<venv>/bin/normops``), where
``pip install`` puts it: outside CI its tests are skipped without it (normops run from a
source tree, not installed); in CI (``CI=true``) a missing script fails.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import normops
from normops.__main__ import build_parser

COMMANDS = ("backends", "bench", "check", "demo")
IN_CI = os.environ.get("CI", "").lower() == "true"


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def module(*args):
    return run(sys.executable, "-m", "normops", *args)


@pytest.fixture(scope="module")
def script():
    path = Path(sys.executable).parent / "normops"
    if not path.is_file():
        if IN_CI:
            pytest.fail(f"no console script {path}: CI installs normops (pip install \".[test]\"), "
                        "which must put it there")
        pytest.skip(f"no console script {path} (normops is not installed in this environment)")
    return str(path)


def help_text(prog, *args, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser(prog).parse_args([*args, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_version_as_a_module():
    done = module("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"normops {normops.__version__}\n"


def test_version_of_the_console_script(script):
    done = run(script, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"normops {normops.__version__}\n"


def test_usage_names_the_module_form():
    done = module("check", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m normops check --backend NAME")
    done = module()   # no command: argparse's error, with the usage line
    assert done.returncode == 2 and done.stderr.startswith("usage: python -m normops [-h]")


def test_usage_names_the_console_script(script):
    done = run(script, "check", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: normops check --backend NAME")
    assert "  normops check --list" in done.stdout
    done = run(script, "demo", "--help")
    assert done.stdout.startswith("usage: normops demo ")


def test_check_help_shows_backend_as_required(capsys):
    text = help_text("normops", "check", capsys=capsys)
    usage = text.split("\n\n")[0]
    # the usage's first form takes --backend NAME without brackets; --list is the other
    assert re.match(r"usage: normops check --backend NAME \[options\]\n\s+normops check --list$",
                    usage), usage
    assert re.search(r"^required arguments:\n\s+--backend NAME\s+.*\(required, except with --list",
                     text, flags=re.M), text


def test_check_list_needs_no_backend_and_check_without_one_says_so():
    done = module("check", "--list")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("bn_zero_mean_unit_variance: ")
    done = module("check")
    assert done.returncode == 2
    assert done.stderr.startswith("python -m normops check: --backend NAME is required")


def test_messages_name_the_command_as_invoked(capsys):
    from normops.__main__ import main
    for prog in ("normops", "python -m normops"):
        assert main(["check"], prog=prog) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{prog} check: --backend NAME is required (see: {prog} backends)"), err
        assert main(["check", "--backend", "no-such-backend"], prog=prog) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{prog} check: ") and "no-such-backend" in err, err


def test_every_command_has_a_one_line_summary(capsys):
    text = help_text("normops", capsys=capsys)
    for name in COMMANDS:
        assert re.search(rf"^    {name}\s+\w.+$", text, flags=re.M), (name, text)


def example_lines(text, prog):
    """The command lines under "examples:", without their comments."""
    assert "\nexamples:\n" in text, text
    block = text.split("\nexamples:\n", 1)[1]
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    assert lines and all(line.startswith(prog + " ") or line == prog for line in lines), lines
    return [line.split("#", 1)[0].strip() for line in lines]


@pytest.mark.parametrize("prog", ["normops", "python -m normops"])
@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_every_help_ends_with_examples_that_parse(name, prog, capsys):
    command = [name] if name else []
    text = help_text(prog, *command, capsys=capsys)
    full = " ".join([prog, *command])
    lines = example_lines(text, full)
    assert len(lines) >= 1
    for line in lines:
        args = shlex.split(line)[len(shlex.split(prog)):]
        if "COMMAND" in args:       # the top level's "COMMAND --help"
            continue
        parsed = build_parser(prog).parse_args(args)   # a SystemExit here: an example is wrong
        assert parsed.command == args[0], line


def test_bench_module_parser_shows_the_examples(capsys):
    from normops import _bench
    with pytest.raises(SystemExit):
        _bench.build_parser().parse_args(["--help"])
    lines = example_lines(capsys.readouterr().out, "python -m normops bench")
    assert "python -m normops bench --quick" in lines
