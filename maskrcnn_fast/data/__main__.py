"""``python -m maskrcnn_fast.data``: SyntheticShapes images as PNG files (the command lives in
:mod:`maskrcnn_fast.cli.samples`; the images come from
:func:`maskrcnn_fast.data.synthetic.write_synthetic_pngs`)."""
import sys

from ..cli.samples import main

if __name__ == "__main__":
    sys.exit(main())
