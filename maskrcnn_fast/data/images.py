"""Reading photographs as they are meant to be seen: EXIF orientation applied, 16-bit images
scaled to [0, 1], one decoding per call (no pycocotools here: predict needs none)."""
from typing import Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["check_image", "load_image", "read_rgb", "rgb_to_tensor", "to_uint8"]

# EXIF orientations 5..8 turn the picture by 90 degrees: the stored width is the shown height
_SWAPS_SIDES = (5, 6, 7, 8)
_ORIENTATION_TAG = 0x0112
# PIL's modes of 16-bit (and 32-bit integer, as PIL reads 16-bit PNGs) single-channel images
_WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def check_image(path: str) -> Tuple[int, int]:
    """Opens the file's header only (no decoding) -> (height, width) as stored. Raises OSError
    naming the file when it is missing or not an image PIL knows."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three on foreign data
        raise OSError(f"cannot read image {path!r}: {_reason(e)}") from e


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001  a damaged EXIF block: show the pixels as stored
        return 1


def read_rgb(path: str, exif: bool = True, expect_hw: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Decodes an image file -> HxWx3 array, uint8, or uint16 for 16-bit grayscale images
    (whose 8-bit conversion would clip every value above 255 to white).

    exif: turn the pixels as the EXIF orientation tag says (a portrait phone photo is stored
    landscape). expect_hw: the (height, width) an annotation file gives; the orientation is then
    applied only when it swaps the sides and the turned size, not the stored one, matches
    (annotation tools differ on whether they honour the tag; COCO's own files do not).
    Raises OSError naming the file when it is missing or cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            if exif and _orientation(im) != 1:
                stored = (im.height, im.width)
                turn = expect_hw is None or (
                    _orientation(im) in _SWAPS_SIDES and tuple(expect_hw) == stored[::-1] != stored
                )
                if turn:
                    im = ImageOps.exif_transpose(im)
            if im.mode in _WIDE_INT_MODES:
                gray = np.asarray(im, dtype=np.int64)
                gray = np.clip(gray, 0, 65535).astype(np.uint16)
                return np.repeat(gray[:, :, None], 3, axis=2)
            rgb = im.convert("RGB")
            rgb.load()
    except (OSError, ValueError, SyntaxError) as e:
        raise OSError(f"cannot read image {path!r}: {_reason(e)}") from e
    # np.array copies: torch.from_numpy on PIL's read-only buffer warns
    return np.array(rgb, dtype=np.uint8)


def rgb_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 or uint16 array -> float32 Tensor[3, H, W] in [0, 1]."""
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32).div_(scale)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """The 8-bit picture of :func:`read_rgb`'s array (for drawing on)."""
    if arr.dtype == np.uint8:
        return arr
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def load_image(path: str, exif: bool = True, expect_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Reads an image file -> float32 Tensor[3, H, W] in [0, 1] (RGB); see :func:`read_rgb`."""
    return rgb_to_tensor(read_rgb(path, exif=exif, expect_hw=expect_hw))
