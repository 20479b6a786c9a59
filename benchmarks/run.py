"""Full benchmark run: ``python benchmarks/run.py [--threads N] [--dtype float64] [--json PATH]``.

The same as ``python -m normops bench``; see docs/benchmarks.md for what is measured.
"""
import sys

from normops._bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
