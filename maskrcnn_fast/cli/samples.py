"""Write SyntheticShapes images as PNG files (inputs for ``maskrcnn-fast predict``).

    python -m maskrcnn_fast.data --out samples --num 4 --seed 1000 --image-size 128

writes ``samples/shapes_<seed>_<index>.png`` (8-bit RGB), items 0..num-1 of
``SyntheticShapes(num, image_size, seed=seed)``: the same images ``--data-seed <seed>`` uses
(with the same --min-shapes, --max-shapes and --size-range). Dense scenes, many small shapes:

    python -m maskrcnn_fast.data --out dense --num 2 --image-size 1024 \
        --min-shapes 500 --max-shapes 3000 --size-range 0.005 0.015
"""
import argparse
from typing import List, Optional

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    from ..data.synthetic import write_synthetic_pngs
    from .datasets import synthetic_kwargs
    from .errors import UsageError

    p = argparse.ArgumentParser(prog="python -m maskrcnn_fast.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--num", type=int, default=4, help="images (default 4)")
    p.add_argument("--seed", type=int, default=1000, help="data set seed (default 1000)")
    p.add_argument("--image-size", type=int, default=128, help="square image side (default 128)")
    p.add_argument("--min-shapes", type=int, metavar="N", help="least shapes per image (default 1)")
    p.add_argument("--max-shapes", type=int, metavar="N",
                   help="most shapes per image (default 4, or --min-shapes where larger)")
    p.add_argument("--size-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="shape half-extent as fractions of the image side (default 0.1 0.25)")
    a = p.parse_args(argv)
    if a.num < 1:
        p.error(f"--num must be >= 1, got {a.num}")
    try:
        paths = write_synthetic_pngs(a.out, a.num, a.seed, a.image_size, **synthetic_kwargs(a))
    except (UsageError, ValueError, OSError) as e:
        p.error(str(e))
    print(f"wrote {len(paths)} images to {a.out}")
    return 0
