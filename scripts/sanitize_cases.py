"""One small case of every CUDA kernel, forward and backward, for compute-sanitizer.

    compute-sanitizer --tool memcheck  python scripts/sanitize_cases.py
    compute-sanitizer --tool racecheck python scripts/sanitize_cases.py

scripts/gpu_check.sh --sanitize runs both. The cases are small on purpose (the sanitizer slows
kernels down 10-100x) but each touches the edges a kernel must guard: empty inputs, boxes
outside the image, a partial last block, padding rows, an out-of-range batch index on the
paths that guard it inside the kernel. Prints one line per case; exits non-zero on a Python
error (the sanitizer reports memory errors and races itself).
"""
import os
import sys
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import maskrcnn_fast  # noqa: F401  registers torch.ops.maskrcnn_fast

__all__ = ["CASES", "main"]

OPS = torch.ops.maskrcnn_fast
# MF_SANITIZE_DEVICE=cpu runs the same cases on the CPU kernels (a dry run of this script)
DEV = os.environ.get("MF_SANITIZE_DEVICE", "cuda")


def _boxes(n, size=64.0, g=None):
    xy = torch.rand(n, 2, generator=g) * size - 8
    wh = torch.rand(n, 2, generator=g) * size / 2
    return torch.cat([xy, xy + wh], 1).to(DEV)


def case_anchors(g):
    cells = torch.tensor([[-16.0, -8, 16, 8], [-8, -8, 8, 8], [-8, -16, 8, 16]], device=DEV)
    OPS.grid_anchors(cells.repeat(2, 1), [3, 3], [5, 7, 3, 2], [4, 4, 8, 8])


def case_box_coder(g):
    ref, codes = _boxes(37, g=g), torch.randn(37, 8, generator=g).to(DEV)
    OPS.decode_boxes(codes, ref, [10.0, 10.0, 5.0, 5.0], 4.135, [50, 60])
    OPS.encode_boxes(_boxes(37, g=g), ref, [1.0, 1.0, 1.0, 1.0])


def case_nms(g):
    b, s = _boxes(300, g=g), torch.rand(300, generator=g).to(DEV)
    OPS.nms(b, s, 0.5)
    OPS.nms(b[:0], s[:0], 0.5)
    OPS.batched_nms(b, s, torch.randint(0, 7, (300,), generator=g).to(DEV), 0.5)


def case_roi_align(g):
    x = torch.randn(2, 3, 9, 11, generator=g).to(DEV).requires_grad_()
    rois = torch.cat([torch.randint(0, 2, (13, 1), generator=g).float().to(DEV), _boxes(13, 12.0, g)], 1)
    for aligned in (False, True):
        out = OPS.roi_align(x, rois, 0.5, 3, 4, -1, aligned)
        out.sum().backward()
    OPS.roi_align(x.detach().contiguous(memory_format=torch.channels_last), rois, 1.0, 2, 2, 2, False)


def case_multilevel_roi_align(g):
    feats = [torch.randn(2, 4, 16 >> i, 20 >> i, generator=g).to(DEV).requires_grad_() for i in range(3)]
    rois = torch.cat([torch.randint(0, 2, (17, 1), generator=g).float().to(DEV), _boxes(17, 60.0, g)], 1)
    out = OPS.multilevel_roi_align(feats, rois, [0.25, 0.125, 0.0625], 7, 7, 2, False, 224, 4, 1e-6)
    out.sum().backward()


def case_paste_masks(g):
    masks = torch.rand(5, 1, 7, 7, generator=g).to(DEV)
    boxes = _boxes(5, 40.0, g)
    index = torch.tensor([0, 1, 1, 0, 1], device=DEV)
    sizes = torch.tensor([[30, 41], [37, 29]], device=DEV)
    OPS.paste_masks(masks, boxes, None, None, 33, 45, 1, None)
    OPS.paste_masks(masks, boxes, index, sizes, 40, 45, 1, 0.5)


def case_rpn_proposals(g):
    shapes = [(10, 12), (5, 6)]
    obj = [torch.randn(2, 3, h, w, generator=g).to(DEV) for h, w in shapes]
    deltas = [torch.randn(2, 12, h, w, generator=g).to(DEV) for h, w in shapes]
    cells = [torch.tensor([[-8.0, -4, 8, 4], [-4, -4, 4, 4], [-4, -8, 4, 8]], device=DEV) * s for s in (1, 2)]
    sizes = torch.tensor([[40, 48], [33, 47]], device=DEV)
    OPS.rpn_proposals(obj, deltas, cells, [4, 4, 8, 8], sizes, 50, 30, 0.7, 1e-3, 0.0)


def case_detection_postprocess(g):
    n, p, c = 2, 20, 5
    logits = torch.randn(n * p, c, generator=g).to(DEV)
    reg = torch.randn(n * p, 4 * c, generator=g).to(DEV)
    props = _boxes(n * p, 50.0, g).reshape(n, p, 4)
    counts = torch.tensor([20, 13], device=DEV)
    sizes = torch.tensor([[50, 60], [45, 52]], device=DEV)
    OPS.detection_postprocess(logits, reg, props, counts, sizes, [10.0, 10.0, 5.0, 5.0], 4.135, 0.05, 0.5, 10)


def case_training_ops(g):
    """box_iou, match_boxes and mask_targets, where this build has them."""
    gt = _boxes(6, g=g).reshape(2, 3, 4)
    anchors = _boxes(200, g=g)
    if hasattr(OPS, "box_iou"):
        OPS.box_iou(gt[0], anchors)
    if hasattr(OPS, "match_boxes"):
        counts = torch.tensor([3, 0], device=DEV)
        OPS.match_boxes(gt, counts, anchors, None, 0.7, 0.3, True)
    if hasattr(OPS, "mask_targets"):
        masks = [torch.randint(0, 2, (3, 40, 50), generator=g, dtype=torch.uint8).to(DEV),
                 torch.randint(0, 2, (2, 31, 45), generator=g, dtype=torch.uint8).to(DEV)]
        boxes = _boxes(9, 50.0, g)
        image_index = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 1], device=DEV)
        matched = torch.tensor([0, 2, 1, 0, 1, 1, 2, 0, 1], device=DEV)
        OPS.mask_targets(masks, boxes, image_index, matched, 7)


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


def main() -> int:
    if DEV == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    g = torch.Generator().manual_seed(0)
    failed = 0
    for case in CASES:
        try:
            case(g)
            if DEV == "cuda":
                torch.cuda.synchronize()
            print(f"ok    {case.__name__}")
        except Exception:  # report every case, then fail
            failed += 1
            print(f"FAIL  {case.__name__}")
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
