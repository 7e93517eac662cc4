"""Every CUDA result equals the CPU result of the same op on the same input.

Both kernels call the same csrc/common/ functions and both are compiled without FMA
contraction, so forward results are bitwise equal. Gradients that CUDA accumulates with atomics
(roi_align backward) differ only in summation order and are compared with a tolerance.
Skipped where no GPU or no CUDA kernels are present.
"""
import pytest
import torch

from conftest import CUDA_AVAILABLE
from maskrcnn_fast import ops

pytestmark = pytest.mark.skipif(not CUDA_AVAILABLE, reason="no GPU, or the CUDA kernels are not built")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _boxes(n, h, w, dtype=torch.float32):
    xy = torch.rand(n, 2) * torch.tensor([w, h]) * 1.1 - 10
    wh = torch.rand(n, 2) * torch.tensor([w, h]) / 3
    return torch.cat([xy, xy + wh], 1).to(dtype)


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b.cpu()), (a - b.cpu()).abs().max()


@pytest.mark.parametrize("dtype", DTYPES)
def test_anchors_cuda(dtype, seed):
    sizes = ((32,), (64,), (128,))
    ratios = ((0.5, 1.0, 2.0),) * 3
    gen = ops.AnchorGenerator(sizes, ratios)

    class IL:
        def __init__(self, t):
            self.tensors, self.image_sizes = t, [(t.shape[-2], t.shape[-1])] * t.shape[0]

    feats = [torch.zeros(2, 1, h, w, dtype=dtype) for h, w in [(50, 68), (25, 34), (13, 17)]]
    img = torch.zeros(2, 3, 200, 272, dtype=dtype)
    a = gen(IL(img), feats)
    b = gen(IL(img.cuda()), [f.cuda() for f in feats])
    for x, y in zip(a, b):
        _same(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_coder_cuda(dtype, seed):
    coder = ops.BoxCoder((10.0, 10.0, 5.0, 5.0))
    boxes = _boxes(500, 300, 400, dtype)
    codes = (torch.randn(500, 4 * 7) * 2).to(dtype)
    _same(coder.decode_single(codes, boxes, image_size=(300, 400)),
          coder.decode_single(codes.cuda(), boxes.cuda(), image_size=(300, 400)))
    gt = _boxes(500, 300, 400, dtype)
    _same(coder.encode_single(gt, boxes), coder.encode_single(gt.cuda(), boxes.cuda()))


@pytest.mark.parametrize("n", [0, 1, 300, 5000])
def test_nms_cuda(n, seed):
    boxes = _boxes(n, 600, 800)
    scores = torch.randperm(n).float() / max(n, 1)
    _same(ops.nms(boxes, scores, 0.6), ops.nms(boxes.cuda(), scores.cuda(), 0.6))
    idxs = torch.randint(0, 80, (n,))
    _same(ops.batched_nms(boxes, scores, idxs, 0.5),
          ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_cuda(dtype, aligned, sampling_ratio, seed):
    x = torch.randn(2, 16, 40, 52, dtype=dtype)
    boxes = _boxes(60, 160, 208, dtype)
    rois = torch.cat([torch.randint(0, 2, (60, 1)).to(dtype), boxes], 1)
    a = ops.roi_align(x, rois, (7, 7), 0.25, sampling_ratio, aligned)
    b = ops.roi_align(x.cuda(), rois.cuda(), (7, 7), 0.25, sampling_ratio, aligned)
    _same(a, b)
    if dtype == torch.float64:
        xa, xb = x.clone().requires_grad_(), x.cuda().requires_grad_()
        g = torch.randn_like(a)
        ops.roi_align(xa, rois, (7, 7), 0.25, sampling_ratio, aligned).backward(g)
        ops.roi_align(xb, rois.cuda(), (7, 7), 0.25, sampling_ratio, aligned).backward(g.cuda())
        torch.testing.assert_close(xa.grad, xb.grad.cpu(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multilevel_roi_align_cuda(dtype, seed):
    pool = ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    feats = {str(i): torch.randn(2, 8, 200 >> i, 272 >> i, dtype=dtype) for i in range(4)}
    boxes = [_boxes(40, 800, 1088, dtype), _boxes(25, 800, 1088, dtype)]
    shapes = [(800, 1088), (760, 1000)]
    a = pool(feats, boxes, shapes)
    b = pool({k: v.cuda() for k, v in feats.items()}, [t.cuda() for t in boxes], shapes)
    _same(a, b)


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_paste_masks_cuda(threshold, seed):
    masks = torch.rand(30, 1, 28, 28)
    boxes = _boxes(30, 300, 400)
    a = ops.paste_masks(masks, boxes, (300, 400), threshold=threshold)
    b = ops.paste_masks(masks.cuda(), boxes.cuda(), (300, 400), threshold=threshold)
    _same(a, b)
