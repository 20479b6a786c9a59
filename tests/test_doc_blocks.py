"""Every code block of README.md and docs/*.md runs as a test, or is checked as what it is.

* ``python`` blocks run, each in a fresh interpreter in an empty directory, unless their
  comment marks them for a dedicated test (``<!-- test: NAME -->``, ``<!-- kit: NAME -->``),
  which must exist: that test runs the block and checks what its comments say.
* ``sh`` blocks: every command is one of a known kind, and checked as such. normops'
  own command lines are parsed by normops' own parser (an option that does not exist
  fails), and those that are quick run; ``pip install`` names extras that pyproject.toml
  defines, from the checkout (normops is installed from a clone, not from an index).
* ``toml`` blocks parse, and an entry-point table names normops' group.
* ``text`` blocks are output, not code. MyST directives (```` ```{toctree} ````) are markup.
"""
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

import normops
from doc_blocks import ROOT, blocks, documents
from optional_torch import import_torch

tomllib = pytest.importorskip("tomllib", reason="the TOML checks need Python 3.11's tomllib")

KINDS = {"python", "sh", "toml", "text"}
DIRECTIVES = {"{toctree}", "{include}"}     # MyST markup, not code
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
TESTS = ROOT / "tests"
# normops commands that finish in seconds run; the others (bench, demo, a whole kit run)
# are parsed, and run by their own tests
QUICK = {("backends",), ("check", "--list"), ("--version",)}

ALL = blocks()


def _id(block):
    return block.where


def test_documents_have_blocks():
    assert len(ALL) > 10 and {b.path for b in ALL} >= {documents()[0]}


@pytest.mark.parametrize("block", ALL, ids=_id)
def test_block_is_of_a_known_kind(block):
    assert block.lang in KINDS or block.lang.split()[0] in DIRECTIVES, \
        f"{block.where}: a block of language {block.lang!r}; use one of {sorted(KINDS)} (text for " \
        f"output), or a markup directive of {sorted(DIRECTIVES)}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fence_belongs_to_a_block(path):
    """No fence that the block finder does not see (``~~~``, four backticks, a tab)."""
    fences = [line for line in path.read_text().splitlines() if line.lstrip().startswith(("```", "~~~"))]
    found = sum(b.path == path for b in ALL)
    assert len(fences) == 2 * found, f"{path}: {len(fences)} fence lines for {found} blocks"


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "python"], ids=_id)
def test_python_block_compiles(block):
    """Every Python block, the marked ones too (which their own tests run, some only
    with a GPU or MPI), is valid Python."""
    compile(block.body, block.where, "exec")


@pytest.mark.parametrize("block", [b for b in ALL if b.marker], ids=_id)
def test_marked_block_has_its_runner(block):
    name = block.marker.split(" (")[0]
    if name.startswith("ci:"):
        runner = (ROOT / ".ci" / "run").read_text()
        assert name in runner, f"{block.where}: .ci/run does not look for {name!r}"
        return
    assert name.startswith(("test:", "kit:")), f"{block.where}: unknown marker {block.marker!r}"
    call = re.compile(rf'\b(?:run_)?doc_block\(\s*"{re.escape(name)}"\s*\)')   # run_doc_block( too
    users = [p.name for p in TESTS.glob("test_*.py") if call.search(p.read_text())]
    assert users, f"{block.where}: no test calls doc_block/run_doc_block({name!r})"


PYTHON = [b for b in ALL if b.lang == "python" and not b.marker]


@pytest.mark.parametrize("block", PYTHON, ids=_id)
def test_python_block_runs(block, tmp_path):
    if "import torch" in block.body:
        import_torch(f"the example at {block.where}")
    done = subprocess.run([sys.executable, "-c", block.body], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _commands(block):
    """The commands of a shell block: comments dropped, ``&&`` chains split."""
    for line in block.body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            yield words[:cut]
            words = words[cut + 1:]


def _check_pip(words, where):
    args = words[words.index("install") + 1:]
    for arg in (a for a in args if not a.startswith("-")):
        assert not arg.lower().startswith("normops"), \
            f"{where}: {arg!r}: normops installs from its checkout, as '.[extras]', not by name"
        if arg.startswith(".["):
            extras = set(arg[2:-1].split(","))
            assert arg.endswith("]") and extras <= EXTRAS, f"{where}: {arg!r}: pyproject defines {sorted(EXTRAS)}"
        elif arg == "." or arg.startswith(("./", "examples/")):
            assert (ROOT / arg).exists(), f"{where}: {arg!r} is not in the checkout"
        else:
            assert "==" in arg or arg.replace("-", "").isalnum(), f"{where}: unexpected requirement {arg!r}"


def _normops_args(words):
    """The arguments of a normops command line, or None if it is not one."""
    exe = pathlib.PurePath(words[0]).name
    if exe == "normops":
        return words[1:]
    if exe.startswith("python") and words[1:3] == ["-m", "normops"]:
        return words[3:]
    if exe.startswith("python") and words[1:2] == ["benchmarks/run.py"]:
        return ["bench", *words[2:]]                   # the same command as a script
    return None


def _check_normops(args, where, tmp_path):
    from normops.__main__ import build_parser
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{where}: python -m normops {shlex.join(args)}: not accepted (exit {exc.code})")
    if tuple(args) in QUICK:
        done = subprocess.run([sys.executable, "-m", "normops", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{where}: python -m normops {shlex.join(args)}:\n{done.stderr[-3000:]}"


SHELL = [b for b in ALL if b.lang == "sh"]


@pytest.mark.parametrize("block", SHELL, ids=_id)
def test_shell_block_commands(block, tmp_path):
    for words in _commands(block):
        where = f"{block.where}: {shlex.join(words)}"
        if words[:3] == ["python3", "-m", "venv"]:
            continue                                   # the quick start's, which .ci/run runs
        if "install" in words and pathlib.PurePath(words[0]).name in ("pip", "pip3"):
            _check_pip(words, where)
        elif (args := _normops_args(words)) is not None:
            _check_normops(args, where, tmp_path)
        elif pathlib.PurePath(words[0]).name.startswith("python") and words[1:3] == ["-m", "pytest"]:
            continue                                   # the test command: this run
        elif words[0] == "bash" and words[1:2] == ["benchmarks/gpu_check.sh"]:
            # needs an NVIDIA GPU; tests/test_gpu_check_script.py runs its checks on the CPU
            assert (ROOT / words[1]).is_file() and "gpu_check" in (TESTS / "test_gpu_check_script.py").read_text()
        else:
            pytest.fail(f"{where}: a command of no known kind; teach tests/test_doc_blocks.py to check it")


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "toml"], ids=_id)
def test_toml_block(block):
    table = tomllib.loads(block.body)
    groups = table.get("project", {}).get("entry-points", {})
    from normops import _registry
    assert not groups or set(groups) == {_registry.ENTRY_POINT_GROUP}, f"{block.where}: {sorted(groups)}"


def test_no_install_by_name_in_prose():
    for path in documents():
        found = re.search(r"install\s+[\"']?normops\b", path.read_text())
        assert not found, f"{path}: {found[0]!r}: normops installs from its checkout, as '.[extras]'"
