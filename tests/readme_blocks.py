"""Code blocks of README.md that the tests run as they stand, found by the HTML comment
placed right above them."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def readme_block(marker):
    """The fenced block under the comment that starts with ``<!-- marker``."""
    text = README.read_text()
    found = re.search(rf"<!-- {re.escape(marker)}[^\n]*-->\n```\w*\n(.*?)\n```", text, re.S)
    assert found, f"README.md has no block marked {marker!r}"
    return found.group(1)


def run_readme_block(marker):
    """Execute the block; its names, for the test to check."""
    namespace = {}
    exec(compile(readme_block(marker), f"{README} ({marker})", "exec"), namespace)
    return namespace
