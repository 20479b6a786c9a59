"""The fenced code blocks of README.md and docs/*.md, for the tests that run them.

A block may carry an HTML comment on the line right above it: ``<!-- test: NAME ... -->``
or ``<!-- kit: NAME ... -->`` marks a block that a dedicated test runs and checks
(``run_doc_block("test: NAME")``); ``<!-- ci: ... -->`` the quick start that .ci/run
runs. Every other block is run by tests/test_doc_blocks.py according to its language.
"""
import pathlib
import re
from typing import NamedTuple

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

_FENCE = re.compile(r"(?:<!-- (?P<marker>[^\n]*?) -->\n)?^(?P<indent>[ ]*)```(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$",
                    re.S | re.M)


class Block(NamedTuple):
    path: pathlib.Path
    line: int
    lang: str
    marker: str      # the comment's text above the block, "" without one
    body: str

    @property
    def where(self):
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents():
    """README.md and every Markdown page of docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def blocks(paths=None):
    """Every fenced block of the documents, in order."""
    found = []
    for path in paths or documents():
        text = path.read_text()
        for m in _FENCE.finditer(text):
            indent = len(m.group("indent"))
            body = "\n".join(line[indent:] for line in m.group("body").rstrip("\n").split("\n"))
            found.append(Block(path, text.count("\n", 0, m.start("indent")) + 1,
                               m.group("lang").strip(), (m.group("marker") or "").strip(), body))
    return found


def doc_block(marker):
    """The one block whose comment starts with ``marker`` (``"test: example"``)."""
    hits = [b for b in blocks() if b.marker == marker or b.marker.startswith(marker + " ")]
    assert len(hits) == 1, f"{len(hits)} blocks marked {marker!r} in README.md and docs/"
    return hits[0].body


def run_doc_block(marker):
    """Execute the marked block; its names, for the test to check."""
    namespace = {}
    exec(compile(doc_block(marker), f"<doc block {marker!r}>", "exec"), namespace)
    return namespace
