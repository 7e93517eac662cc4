"""Pure-PyTorch anchors (torchvision's AnchorGenerator): the oracle of the tests and the "torch"
path of the benchmarks and the model. Vectorised tensor expressions in the input's dtype (float64
in the tests), with torchvision's roundings, so float32 agrees with it too.
"""
from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AnchorGenerator", "cell_anchors", "grid_anchors", "image_anchors"]


def cell_anchors(
    scales: Sequence[float],
    aspect_ratios: Sequence[float],
    dtype: torch.dtype = torch.float32,
    device="cpu",
) -> Tensor:
    """Zero-centred anchors of one level, Tensor[len(aspect_ratios) * len(scales), 4]:
    for each aspect ratio (height / width), for each scale, (x1, y1, x2, y2) of a box of area
    scale**2, rounded half to even."""
    s = torch.as_tensor(scales, dtype=dtype, device=device)
    r = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_factor = r.sqrt()
    w_factor = 1 / h_factor
    size_wh = torch.stack(
        [torch.outer(w_factor, s).flatten(), torch.outer(h_factor, s).flatten()], dim=1
    )
    return (torch.cat([-size_wh, size_wh], dim=1) / 2).round()


def grid_anchors(
    cell_anchors: Sequence[Tensor],
    grid_sizes: Sequence[Sequence[int]],
    strides: Sequence[Sequence[int]],
) -> Tensor:
    """Anchors of all levels, Tensor[sum_l H_l * W_l * A_l, 4], in the cell anchors' dtype.

    cell_anchors (list[Tensor[A_l, 4]]): zero-centred anchors of each level.
    grid_sizes (list[(H_l, W_l)]): feature-map sizes. strides (list[(s_h, s_w)]): in pixels.
    Order: level, then location (y-major), then cell anchor. The integer shift is rounded to
    the dtype before the sum, as torchvision's int32 + float addition does.
    """
    levels = []
    for base, (gh, gw), (sh, sw) in zip(cell_anchors, grid_sizes, strides):
        dev = base.device
        xs = torch.arange(int(gw), device=dev) * int(sw)
        ys = torch.arange(int(gh), device=dev) * int(sh)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([gx, gy, gx, gy], dim=-1).to(base.dtype)  # [H, W, 4]
        levels.append((shifts[:, :, None, :] + base[None, None, :, :]).reshape(-1, 4))
    if not levels:
        raise ValueError("cell_anchors must hold at least one level")
    return torch.cat(levels)


def image_anchors(
    cell_anchors: Sequence[Tensor],
    image_size: Sequence[int],
    grid_sizes: Sequence[Sequence[int]],
    num_images: int = 1,
) -> list:
    """AnchorGenerator.forward: the strides are image_size // grid_size per dimension; the
    same anchors (one tensor each) for each of num_images images."""
    strides = [(int(image_size[0]) // int(g[0]), int(image_size[1]) // int(g[1]))
               for g in grid_sizes]
    anchors = grid_anchors(cell_anchors, grid_sizes, strides)
    return [anchors if i == 0 else anchors.clone() for i in range(num_images)]


class AnchorGenerator(nn.Module):
    """Reference of :class:`maskrcnn_fast.ops.AnchorGenerator` (one size tuple per level):
    ``(image_list, feature_maps) -> list of Tensor[A, 4]`` per image, torchvision's anchors and
    order."""

    def __init__(self, sizes, aspect_ratios):
        super().__init__()
        self.sizes, self.aspect_ratios = sizes, aspect_ratios
        self.cell_anchors = [cell_anchors(s, a) for s, a in zip(sizes, aspect_ratios)]

    def num_anchors_per_location(self):
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def forward(self, image_list, feature_maps):
        f = feature_maps[0]
        cells = [c.to(dtype=f.dtype, device=f.device) for c in self.cell_anchors]
        grids = [tuple(fm.shape[-2:]) for fm in feature_maps]
        return image_anchors(cells, image_list.tensors.shape[-2:], grids, len(image_list.image_sizes))
