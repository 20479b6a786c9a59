"""Sphinx configuration of normops' documentation site: the pages of docs/ (MyST
Markdown) and the API reference from the numpydoc docstrings. Built by
tests/test_docs_site.py with warnings as errors: sphinx-build -W -b html docs <out>."""
import pathlib
import sys

try:
    import tomllib
except ImportError:          # Python 3.10: mypy, in the docs extra, brings tomli
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))   # a checkout without an install documents itself

import normops  # noqa: E402

project = "normops"
author = "The normops developers"
copyright = "2026, The normops developers"
release = version = normops.__version__

extensions = ["sphinx.ext.autodoc", "numpydoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "demo/*.md", "*.json"]
root_doc = "index"

# the annotations say Any for arrays (normops._typing); the docstrings say what they are
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
# every public object documents its parameters and results: the checks of `numpydoc lint`,
# configured once in pyproject.toml
_lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["numpydoc_validation"]
numpydoc_validation_checks = set(_lint["checks"])
numpydoc_validation_exclude = set(_lint["exclude"]) | {
    # Hypothesis builds a composite strategy's function with exec, so it has no source for
    # numpydoc's validation to read here; `numpydoc lint`, which reads the file, checks them
    r"^normops\.testing\.strategies\.",
}

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
suppress_warnings = ["myst.header"]   # pages may open on a second-level heading

html_theme = "alabaster"
html_title = f"normops {release}"
html_theme_options = {"description": "Batch Normalization and Batch Renormalization ops",
                      "page_width": "1240px", "body_max_width": "none"}
