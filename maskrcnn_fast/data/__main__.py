"""Write SyntheticShapes images as PNG files (inputs for ``maskrcnn-fast predict``).

    python -m maskrcnn_fast.data --out samples --num 4 --seed 1000 --image-size 128

writes ``samples/shapes_<seed>_<index>.png`` (8-bit RGB), items 0..num-1 of
``SyntheticShapes(num, image_size, seed=seed)``: the same images ``--data-seed <seed>`` uses.
"""
import argparse
import os
import sys
from typing import List, Optional

import numpy as np


def write_synthetic_pngs(out: str, num: int, seed: int, image_size: int = 128) -> List[str]:
    """-> the paths written."""
    from PIL import Image

    from .synthetic import SyntheticShapes

    ds = SyntheticShapes(num, image_size, seed=seed)
    os.makedirs(out, exist_ok=True)
    paths = []
    for i in range(num):
        img = ds[i][0]
        arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        path = os.path.join(out, f"shapes_{seed}_{i:04d}.png")
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m maskrcnn_fast.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--num", type=int, default=4, help="images (default 4)")
    p.add_argument("--seed", type=int, default=1000, help="data set seed (default 1000)")
    p.add_argument("--image-size", type=int, default=128, help="square image side (default 128)")
    a = p.parse_args(argv)
    if a.num < 1:
        p.error(f"--num must be >= 1, got {a.num}")
    try:
        paths = write_synthetic_pngs(a.out, a.num, a.seed, a.image_size)
    except (ValueError, OSError) as e:
        p.error(str(e))
    print(f"wrote {len(paths)} images to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
