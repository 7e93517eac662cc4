"""``python -m maskrcnn_fast``: the maskrcnn-fast command line (see maskrcnn_fast.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
