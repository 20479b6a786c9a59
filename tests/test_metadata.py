"""The installed distribution's metadata: the licence (an SPDX expression and the LICENSE
file shipped with it), authors, classifiers, keywords, summary and the console script;
and CHANGELOG.md's section for the current version.

The metadata tests read the INSTALLED normops (importlib.metadata), which is what pip
built from pyproject.toml, not the source tree: run them after ``pip install ".[test]"``
(the README's quick start, which CI runs). A source tree on PYTHONPATH does not hide the
installed distribution's metadata (the egg-info a build leaves in src/ is passed over).
Outside CI they are skipped when normops is not installed at all; in CI (``CI=true``)
that fails. An installed normops of another version than this source tree's (a stale
install) fails too: reinstall it.
"""
import importlib.metadata
import os
import re
from pathlib import Path

import pytest

import normops

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"
REINSTALL = 'reinstall it from this checkout: pip install ".[test]"'


def installed_distributions():
    """normops's distributions on sys.path but the one a build leaves in the source tree
    (src/normops.egg-info, which PYTHONPATH=src would otherwise find first)."""
    build_leftovers = {ROOT.resolve(), (ROOT / "src").resolve()}
    return [d for d in importlib.metadata.distributions(name="normops")
            if Path(d.locate_file("")).resolve() not in build_leftovers]


@pytest.fixture(scope="module")
def dist():
    found = installed_distributions()
    if not found:
        if IN_CI:
            pytest.fail("normops is not installed as a distribution; CI must install it "
                        '(pip install ".[test]") before these tests read its metadata')
        pytest.skip("normops is not installed as a distribution (these tests read the "
                    'installed metadata: pip install ".[test]")')
    if found[0].version != normops.__version__:
        pytest.fail(f"the installed normops is version {found[0].version}, this source tree is "
                    f"{normops.__version__}: its metadata is stale; {REINSTALL}")
    return found[0]


def test_licence_is_bsd_3_clause_as_an_spdx_expression(dist):
    meta = dist.metadata
    # PEP 639 (Metadata 2.4): License-Expression; an older build backend writes License
    expression = meta.get("License-Expression") or meta.get("License")
    assert expression == "BSD-3-Clause", (expression, REINSTALL)
    # with an SPDX expression, no License :: classifier (setuptools refuses both)
    assert not [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]


def test_the_licence_file_ships_with_the_distribution(dist):
    assert dist.metadata.get_all("License-File") == ["LICENSE"], REINSTALL
    shipped = [f for f in dist.files or () if f.name == "LICENSE"]
    assert shipped, f"no LICENSE among the installed files; {REINSTALL}"
    text = shipped[0].read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, The normops developers" in text
    assert text == (ROOT / "LICENSE").read_text()


def test_authors_keywords_and_summary(dist):
    meta = dist.metadata
    assert meta["Author"] == "The normops developers"
    keywords = [k.strip() for k in (meta.get("Keywords") or "").split(",")]
    assert {"batch normalization", "batch renormalization", "numpy"} <= set(keywords), keywords
    assert meta["Summary"].startswith("Batch Normalization and Batch Renormalization ops")
    assert meta["Requires-Python"] == ">=3.10"


def test_classifiers(dist):
    classifiers = set(dist.metadata.get_all("Classifier") or ())
    expected = {
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Intended Audience :: Developers",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: C",
        "Programming Language :: Cython",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Typing :: Typed",
    } | {f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)}
    assert expected <= classifiers, sorted(expected - classifiers)


def test_the_console_script_is_declared(dist):
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"normops": "normops.__main__:main"}


def changelog_versions():
    text = (ROOT / "CHANGELOG.md").read_text()
    return re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\S+)$", text, flags=re.M)


def test_the_changelog_has_a_section_for_this_version():
    versions = [version for version, _ in changelog_versions()]
    assert normops.__version__ in versions, (
        f"CHANGELOG.md has no '## [{normops.__version__}] - DATE' section; it lists {versions}")
    # newest first, each once, the first release last
    keys = [tuple(map(int, v.split("."))) for v in versions]
    assert keys == sorted(set(keys), reverse=True) and versions[-1] == "0.1.0"
    for version, date in changelog_versions():
        assert date == "Unreleased" or re.fullmatch(r"\d{4}-\d\d-\d\d", date), (version, date)
