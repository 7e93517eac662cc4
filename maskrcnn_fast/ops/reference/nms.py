"""Pure-PyTorch nms and batched_nms: the oracle of the tests and the "torch" path of the benchmarks.

Same semantics as maskrcnn_fast.ops.nms / batched_nms (and torchvision): boxes visited by
descending score (stable: ties by index), ``inter / (area_a + area_b - inter) > iou_threshold``
in float64 for float64 inputs and float32 otherwise.

Vectorised greedy NMS: the sorted boxes are taken in blocks of ``block``; one IoU matrix between
the block and every later box that may share its category decides everything. Inside the block
the greedy order is resolved by a fixed-point iteration (keep = candidates not suppressed by a
kept earlier box of the block; it settles in at most ``block`` steps, in a few in practice), then
the block's kept boxes suppress the later boxes in one reduction.
"""
import torch
from torch import Tensor

__all__ = ["nms", "batched_nms"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _threshold(iou_threshold: float, dtype: torch.dtype) -> Tensor:
    # torchvision compares a float IoU with a double threshold; comparing in `dtype` with the
    # largest value of `dtype` not above the threshold gives the same answer.
    t = torch.tensor(float(iou_threshold), dtype=torch.float64)
    r = t.to(dtype)
    if r.double() > t:
        r = torch.nextafter(r, torch.tensor(float("-inf"), dtype=dtype))
    return r


def _suppression(a: Tensor, b: Tensor, thr: Tensor) -> Tensor:
    """[K, M] bool: box a[k] suppresses box b[m] (torchvision's order of operations)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    a, b = a.T.contiguous(), b.T.contiguous()
    w = torch.minimum(a[2, :, None], b[2, None, :]).sub_(torch.maximum(a[0, :, None], b[0, None, :]))
    h = torch.minimum(a[3, :, None], b[3, None, :]).sub_(torch.maximum(a[1, :, None], b[1, None, :]))
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
    union = (area_a[:, None] + area_b[None, :]).sub_(inter)
    return inter.div_(union).gt_(thr).bool()


def _greedy(boxes: Tensor, seg: Tensor, seg_end: Tensor, thr: Tensor, block: int) -> Tensor:
    """Greedy NMS over ``boxes`` (Tensor[N, 4], sorted by category then descending score);
    ``seg`` is the category of each box, ``seg_end`` the end of its category's run.
    Returns Tensor[N] bool: kept."""
    n = boxes.shape[0]
    alive = torch.ones(n, dtype=torch.bool, device=boxes.device)
    ends = seg_end.tolist()
    for s in range(0, n, block):
        e = min(s + block, n)
        hi = ends[e - 1]
        sup = _suppression(boxes[s:e], boxes[s:hi], thr)
        sup &= seg[s:e, None] == seg[None, s:hi]
        inner = sup[:, : e - s].triu(diagonal=1)
        cand = alive[s:e]
        keep = cand
        for _ in range(e - s + 1):
            new = cand & ~(inner & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
        alive[s:e] = keep
        if hi > e:
            alive[e:hi] &= ~(sup[:, e - s :] & keep[:, None]).any(0)
    return alive


def _check(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be Tensor[N, 4], got a tensor of shape {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must be Tensor[N] with N = {boxes.shape[0]}, got {tuple(scores.shape)}")
    if not iou_threshold >= 0:
        raise ValueError(f"iou_threshold must be >= 0, got {iou_threshold}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, block: int = 256) -> Tensor:
    """Reference nms.

    Args:
        boxes (Tensor[N, 4]): x1, y1, x2, y2.
        scores (Tensor[N]): score of each box.
        iou_threshold (float): boxes with IoU > iou_threshold are suppressed.

    Returns:
        Tensor[K] (int64): kept indices by decreasing score.
    """
    _check(boxes, scores, iou_threshold)
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    dtype = _compute_dtype(boxes.dtype)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].to(dtype)
    seg = torch.zeros(n, dtype=torch.long, device=boxes.device)
    seg_end = torch.full((n,), n, dtype=torch.long)
    alive = _greedy(b, seg, seg_end, _threshold(iou_threshold, dtype).to(boxes.device), block)
    return order[alive]


def batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, block: int = 256
) -> Tensor:
    """Reference batched_nms: NMS within each category of ``idxs``.

    Args:
        boxes (Tensor[N, 4]): x1, y1, x2, y2.
        scores (Tensor[N]): score of each box.
        idxs (Tensor[N]): integer category of each box.
        iou_threshold (float): boxes with IoU > iou_threshold are suppressed.

    Returns:
        Tensor[K] (int64): kept indices by decreasing score.
    """
    _check(boxes, scores, iou_threshold)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must be Tensor[N] with N = {boxes.shape[0]}, got {tuple(idxs.shape)}")
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    dtype = _compute_dtype(boxes.dtype)
    by_score = torch.sort(scores, descending=True, stable=True).indices
    order = by_score[torch.sort(idxs[by_score], stable=True).indices]
    seg = idxs[order]
    counts = torch.unique_consecutive(seg, return_counts=True)[1]
    seg_end = torch.repeat_interleave(torch.cumsum(counts, 0), counts).cpu()
    b = boxes[order].to(dtype)
    alive = _greedy(b, seg, seg_end, _threshold(iou_threshold, dtype).to(boxes.device), block)
    kept = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    kept[order[alive]] = True
    return by_score[kept[by_score]]
