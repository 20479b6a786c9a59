"""``python -m normops._bench``: the same as ``python -m normops bench``."""
import sys

from . import main

sys.exit(main())
