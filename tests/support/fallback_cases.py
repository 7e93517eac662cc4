"""One small call of every torch.ops.maskrcnn_fast op (forward, and backward where gradients
flow) and of a small Mask R-CNN (eval and train): tests/test_fallback.py runs them with the
compiled extension, in this process, and without it, in a subprocess, and compares.

As a script, ``python tests/support/fallback_cases.py OUT`` imports maskrcnn_fast (recording the
warnings of the import and of the calls apart), runs the cases and saves a dict to OUT with
torch.save: results, import_warnings, call_warnings, build_info, file.
"""
import sys
import warnings

import torch


def _boxes(g, n, size=60.0, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * size
    wh = 1 + torch.rand(n, 2, generator=g, dtype=dtype) * size / 2
    return torch.cat([xy, xy + wh], 1)


def _grads(fn, *inputs):
    """(fn(*inputs), d sum(w * out) / d inputs) for a fixed random w."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*inputs)
    w = torch.rand(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    grads = torch.autograd.grad((out * w).sum(), inputs)
    return [out.detach()] + [x.detach() for x in grads]


def _model_cases():
    from maskrcnn_fast.models import maskrcnn_resnet_fpn

    small = dict(num_classes=4, min_size=128, max_size=160, box_score_thresh=0.0,
                 rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100,
                 rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
                 box_batch_size_per_image=32, box_detections_per_img=20)
    torch.manual_seed(0)
    model = maskrcnn_resnet_fpn(18, **small).eval()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 128, 150, generator=g)
    with torch.no_grad():
        (det,) = model([image])
    out = {f"model.eval.{k}": v for k, v in det.items()}
    boxes = torch.tensor([[10.0, 12.0, 70.0, 90.0], [60.0, 30.0, 140.0, 110.0]])
    masks = torch.zeros(2, 128, 150, dtype=torch.uint8)
    masks[0, 20:80, 15:60] = 1
    masks[1, 40:100, 70:130] = 1
    target = {"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks}
    model.train()
    torch.manual_seed(7)
    losses = model([image], [target])
    sum(losses.values()).backward()
    out.update({f"model.train.{k}": v.detach() for k, v in losses.items()})
    out["model.train.grad.fpn"] = next(
        p.grad for n, p in model.named_parameters() if "fpn" in n and p.grad is not None)
    return out


def run_cases():
    """{name: Tensor} for every op, deterministic."""
    from maskrcnn_fast import ops

    g = torch.Generator().manual_seed(0)
    r = {}
    cells = [torch.tensor([[-8.0, -4.0, 8.0, 4.0], [-5.0, -5.0, 5.0, 5.0]]),
             torch.tensor([[-16.0, -16.0, 16.0, 16.0]])]
    r["grid_anchors"] = ops.grid_anchors(cells, [(3, 4), (2, 2)], [(8, 8), (16, 16)])
    ref_boxes = _boxes(g, 12)
    codes = torch.randn(12, 8, generator=g) * 0.5
    r["decode_boxes"] = ops.decode_boxes(codes, ref_boxes, (10.0, 10.0, 5.0, 5.0))
    r["decode_boxes.clip"] = ops.decode_boxes(codes, ref_boxes, (1.0, 1.0, 1.0, 1.0),
                                              image_size=(50, 40))
    r["encode_boxes"] = ops.encode_boxes(_boxes(g, 12), ref_boxes, (10.0, 10.0, 5.0, 5.0))

    boxes = _boxes(g, 40)
    scores = torch.rand(40, generator=g)
    r["nms"] = ops.nms(boxes, scores, 0.4)
    r["batched_nms"] = ops.batched_nms(boxes, scores, torch.randint(0, 3, (40,), generator=g), 0.4)

    feat = torch.rand(2, 3, 16, 20, generator=g, dtype=torch.float64)
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0], [0.0]]),
                      _boxes(g, 4, 15.0, torch.float64)], 1)
    out, grad = _grads(lambda x: ops.roi_align(x, rois, (3, 4), 1.0, 2, True), feat)
    r["roi_align"], r["_roi_align_backward"] = out, grad
    r["roi_align.channels_last.stride"] = torch.tensor(ops.roi_align(
        feat.contiguous(memory_format=torch.channels_last), rois, 2, 0.5, -1, False).stride())

    levels = [torch.rand(2, 3, 32 // 2**i, 40 // 2**i, generator=g) for i in range(3)]
    mrois = torch.cat([torch.tensor([[0.0], [1.0], [0.0], [1.0], [0.0]]),
                       torch.tensor([[2.0, 2.0, 20.0, 22.0], [10.0, 4.0, 90.0, 100.0],
                                     [0.0, 0.0, 150.0, 120.0], [30.0, 30.0, 36.0, 33.0],
                                     [5.0, 40.0, 60.0, 110.0]])], 1)
    out, *grads = _grads(lambda *f: ops.multilevel_roi_align(
        list(f), mrois, (2, 2), [0.25, 0.125, 0.0625], 2, False), *levels)
    r["multilevel_roi_align"] = out
    for i, gr in enumerate(grads):
        r[f"_multilevel_roi_align_backward.{i}"] = gr

    masks = torch.rand(3, 1, 8, 8, generator=g)
    pboxes = _boxes(g, 3, 30.0)
    r["paste_masks"] = ops.paste_masks(masks, pboxes, (40, 36))
    r["paste_masks.threshold"] = ops.paste_masks(masks, pboxes, (40, 36), threshold=0.5)
    r["paste_masks_batched"] = ops.paste_masks_batched(
        masks, pboxes, torch.tensor([0, 1, 1]), [(40, 36), (30, 44)])

    objectness = [torch.randn(2, 3, 8, 10, generator=g), torch.randn(2, 3, 4, 5, generator=g)]
    deltas = [torch.randn(2, 12, 8, 10, generator=g) * 0.2,
              torch.randn(2, 12, 4, 5, generator=g) * 0.2]
    anchors = [torch.tensor([[-8.0, -8.0, 8.0, 8.0], [-11.0, -6.0, 11.0, 6.0],
                             [-6.0, -11.0, 6.0, 11.0]]) * s for s in (1, 2)]
    sizes = torch.tensor([[64, 80], [60, 70]])
    props, pscores, counts = ops.rpn_proposals(objectness, deltas, anchors, [(8, 8), (16, 16)],
                                               sizes, 50, 30, 0.7, 1e-3, 0.0)
    r["rpn_proposals.boxes"], r["rpn_proposals.scores"], r["rpn_proposals.counts"] = (
        props, pscores, counts)
    logits = torch.randn(2 * 30, 4, generator=g)
    regression = torch.randn(2 * 30, 16, generator=g) * 0.1
    for i, t in enumerate(ops.detection_postprocess(logits, regression, props, counts, sizes,
                                                    score_thresh=0.1, detections_per_img=10)):
        r[f"detection_postprocess.{i}"] = t

    pdata = (torch.rand(40, generator=g) > 0.5).to(torch.uint8)
    prows = torch.tensor([[0, 2, 3, 5, 4, 12, 10, 18, 15], [20, 0, 0, 4, 5, 8, 8, 8, 8]])
    r["packed_mask_targets"] = ops.packed_mask_targets(pdata, prows, _boxes(g, 4, 14.0), torch.tensor([0, 1, 1, 0]), 7)

    r.update(_model_cases())
    return r


def main(out_path):
    with warnings.catch_warnings(record=True) as at_import:
        warnings.simplefilter("always")
        import maskrcnn_fast
    with warnings.catch_warnings(record=True) as at_call:
        warnings.simplefilter("always")
        results = run_cases()
    ours = [str(w.message) for w in at_import if "maskrcnn_fast" in str(w.message)]
    torch.save({
        "results": results,
        "import_warnings": ours,
        "call_warnings": [str(w.message) for w in at_call],
        "build_info": maskrcnn_fast.build_info(),
        "file": maskrcnn_fast.__file__,
    }, out_path)


if __name__ == "__main__":
    main(sys.argv[1])
