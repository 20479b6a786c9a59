"""The documentation site builds with Sphinx, warnings as errors: every page of docs/,
and the API reference from the numpydoc docstrings (numpydoc validates them as it goes).
The built site is not kept."""
import subprocess
import sys

import pytest

from doc_blocks import DOCS

pytest.importorskip("sphinx", reason="the site needs Sphinx: pip install '.[docs]'")
pytest.importorskip("numpydoc", reason="the site needs numpydoc: pip install '.[docs]'")
pytest.importorskip("myst_parser", reason="the site needs myst-parser: pip install '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           "-d", str(out / ".doctrees"), str(DOCS), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"sphinx-build -W failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return out


def test_every_page_is_built(site):
    pages = {p.relative_to(DOCS).with_suffix(".html") for p in DOCS.rglob("*")
             if p.suffix in (".md", ".rst")}
    missing = sorted(str(p) for p in pages if not (site / p).is_file())
    assert not missing, missing


@pytest.mark.parametrize("page, names", [
    ("reference/ops.html", ["batch_norm", "batch_norm_backward", "batch_renorm",
                            "batch_renorm_backward", "BatchNormSaved"]),
    ("reference/layers.html", ["BatchNorm", "BatchRenorm", "recompute_population_stats",
                               "fold_into_linear", "renorm_paper"]),
    ("reference/registry.html", ["register_backend", "use_backend", "UnknownBackendError"]),
    ("reference/testing.html", ["check_backend", "Implementation", "make_case"]),
])
def test_reference_documents_the_api(site, page, names):
    html = (site / page).read_text()
    for name in names:
        assert f'id="normops.{name}"' in html or f'id="normops.testing.{name}"' in html \
            or f'id="normops.schedules.{name}"' in html, f"{page} has no entry for {name}"
    assert "Parameters" in html and "Returns" in html
