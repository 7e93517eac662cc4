"""Failures found by the differential fuzz tests (tests/fuzz), each as an explicit minimal
example. Reference fixes and oracle (test-side) fixes are documented where the behaviour lives:
the comment of each test says what failed and which side was wrong."""
import math

import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from maskrcnn_fast.ops import decode_boxes, encode_boxes, rpn_proposals
from maskrcnn_fast.ops import reference as ref


def test_reference_decode_boxes_empty(device):
    # Found: the reference reshaped with -1, ambiguous for K = 0 (RuntimeError), and its
    # clipping's `width` shadowed the column count (wrong shape with C = 0 and an image_size).
    for codes, boxes, size in [(torch.zeros(0, 8), torch.zeros(0, 4), None),
                               (torch.zeros(0, 0), torch.zeros(0, 4), (5, 5)),
                               (torch.zeros(1, 0), torch.zeros(1, 4), (0, 1)),
                               (torch.zeros(2, 4), torch.zeros(2, 4), (3, 7))]:
        codes, boxes = codes.to(device), boxes.to(device)
        want = ref.decode_boxes(codes, boxes, image_size=size)
        got = decode_boxes(codes, boxes, image_size=size)
        assert want.shape == got.shape == codes.shape
        assert torch.equal(got, want)


def test_reference_rpn_proposals_no_images(device):
    # Found: the reference flattened the logits with reshape(n, -1), ambiguous for N = 0.
    ob, de = torch.zeros(0, 2, 3, 2, device=device), torch.zeros(0, 8, 3, 2, device=device)
    cells = ref.cell_anchors([8], [0.5, 1.0])
    sizes = torch.zeros(0, 2, dtype=torch.int64, device=device)
    args = ([ob], [de], [cells.to(device)], [(4, 4)], sizes, 5, 3, 0.7, 0.0, 0.0)
    for fn in (rpn_proposals, ref.rpn_proposals):
        b, s, c = fn(*args)
        assert b.shape == (0, 3, 4) and s.shape == (0, 3) and c.shape == (0,)


def test_encode_bfloat16_intermediate_overflow(device):
    # Found: bfloat16 encode gave +-Inf where the float64 reference is finite (3.3e38, inside
    # bfloat16's range). Not a kernel bug: half/bfloat16 are computed in float32 in
    # torchvision's operation order, wx * (dx_ctr) overflows first, exactly as torchvision's
    # own bfloat16 and float32 encodes do. The fuzz oracle now also accepts the float32
    # evaluation of the reference.
    r = torch.tensor([[3e38, 0.0, 3e38, 0.0]], dtype=torch.bfloat16, device=device)
    p = torch.tensor([[0.0, 0.0, 9.0, 0.0]], dtype=torch.bfloat16, device=device)
    w = (10.0, 10.0, 5.0, 5.0)
    got = encode_boxes(r, p, w).cpu()
    tv = TVBoxCoder(w).encode_single(r.cpu(), p.cpu())
    assert torch.equal(got.isnan(), tv.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(tv))
    assert got[0, 0] == math.inf and got[0, 2] == -math.inf
    assert torch.isfinite(ref.encode_boxes(r.double(), p.double(), w)[0, 0])


def test_rpn_half_filters_on_rounded_boxes(device):
    # Found: a float16 proposal kept that the float32 op on the same (upcast) inputs drops. Not
    # a kernel bug: the stored coordinates are rounded to float16 first and min_size is tested
    # on them, as torchvision's float16 arithmetic does (height 0.9999 in float32 becomes
    # 9.5 - 8.5 = 1.0 in float16). The fuzz oracle for half/bfloat16 now checks invariants,
    # and equality with float32 only where no threshold can flip.
    cell = torch.tensor([[8.0, 8.0, 10.0, 10.0]])
    deltas = torch.tensor([0.0, 0.0, 0.0, math.log(0.9999 / 2)]).reshape(1, 4, 1, 1)
    ob = torch.full((1, 1, 1, 1), 2.0)
    sizes = torch.tensor([[20, 20]], device=device)
    out = {}
    for dtype in (torch.float16, torch.float32):
        b, s, c = rpn_proposals([ob.to(device, dtype)], [deltas.to(device, dtype)],
                                [cell.to(device, dtype)], [(4, 4)], sizes, 5, 5, 0.7, 1.0, 0.0)
        out[dtype] = (b.cpu(), c.cpu())
    b16, c16 = out[torch.float16]
    assert c16.tolist() == [1] and b16[0, 0].tolist() == [8.0, 8.5, 10.0, 9.5]
    assert out[torch.float32][1].tolist() == [0]


def test_reference_roi_align_backward_all_rois_empty():
    # Found: with aligned=True a zero-size ROI samples nothing (adaptive grid 0); when every ROI
    # was like that the reference's output left input's graph and autograd.grad raised. The
    # reference now keeps the output in the graph (zero gradient), as the fused op does.
    x = torch.rand(1, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    rois = torch.zeros(1, 5, dtype=torch.float64)
    grad = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    from maskrcnn_fast.ops import roi_align
    for fn in (roi_align, ref.roi_align):
        out = fn(x, rois, 1, 1.0, -1, True)
        assert out.tolist() == [[[[0.0]]]]
        assert torch.autograd.grad(out, x, grad)[0].tolist() == [[[[0.0]]]]


def test_decode_half_rounds_bbox_xform_clip(device):
    # Found: float16 decode 3 ulps from the float64 reference for a clamped dw. Not a kernel
    # bug: bbox_xform_clip is rounded to float16 before the clamp, as torch.clamp rounds a Python
    # scalar for a float16 tensor, so ours equals torchvision's float16 decode. The fuzz oracle
    # now gives the reference the rounded clip.
    clip = math.log(1000.0 / 16)
    b = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.half, device=device)
    codes = torch.tensor([[0.0, 0.0, 150.0, 0.0]], dtype=torch.half, device=device)
    got = decode_boxes(codes, b, (1.0, 1.0, 1.0, 1.0), clip).cpu()
    tv = TVBoxCoder((1.0, 1.0, 1.0, 1.0), clip).decode_single(codes.cpu(), b.cpu())
    assert torch.equal(got, tv)
    clip16 = float(torch.tensor(clip).half())
    want = ref.decode_boxes(codes.double().cpu(), b.double().cpu(), (1.0, 1.0, 1.0, 1.0), clip16)
    assert torch.equal(got, want.half())


def test_roi_align_finite_rois_that_overflow_when_scaled(device):
    # Found: torchvision's CPU roi_align segfaults (out-of-bounds read through a NaN sample
    # position) on finite float32 ROIs whose corners overflow once scaled (3e38 * 2 = inf). Ours
    # gives zeros for them, as for non-finite ROIs, and the reference agrees. The fuzz test now
    # compares those rows with the reference only.
    from maskrcnn_fast.ops import roi_align
    x = torch.rand(1, 2, 8, 3, device=device)
    rois = torch.tensor([[0.0, 3e38, 4.0, 3e38, 0.9], [0.0, -2.0, 3e38, -0.95, 0.0],
                         [0.0, 6.0, 4.0, 12.0, 5.8]], device=device)
    out = roi_align(x, rois, (2, 1), 2.0, 1, True)
    assert bool((out[:2] == 0).all())
    want = ref.roi_align(x.double().cpu(), rois.double().cpu(), (2, 1), 2.0, 1, True)
    torch.testing.assert_close(out.cpu().double(), want, rtol=1e-5, atol=1e-5)


def test_rpn_tie_across_levels_goes_to_the_lower_level(device):
    # Found: ours and torchvision kept different boxes when two levels held the same logit (a
    # tie, whose order torchvision leaves to an unstable sort). Not a bug: ours documents ties
    # going to the lower level, and the reference agrees. The fuzzer now draws logits distinct
    # over all levels.
    cells = [torch.tensor([[-1.0, -1.0, 1.0, 1.0]], device=device),
             torch.tensor([[-2.0, -2.0, 2.0, 2.0]], device=device)]
    ob = [torch.full((1, 1, 1, 1), 2.5, device=device)] * 2
    de = [torch.zeros(1, 4, 1, 1, device=device)] * 2
    sizes = torch.tensor([[16, 16]], device=device)
    for fn in (rpn_proposals, ref.rpn_proposals):
        b, s, c = fn(ob, de, cells, [(8, 8), (16, 16)], sizes, 5, 1, 0.7, 0.0, 0.0)
        assert c.tolist() == [1] and b[0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_roi_align_adaptive_grid_follows_the_input_dtype(device):
    # Found: float32 roi_align 0.31 away from the float64 reference. Not a kernel bug: the ROI
    # height 2.229 - 0.229 rounds above 2 in float32, so the adaptive grid has 3 samples per
    # side instead of 2; torchvision's float32 result is ours bit for bit. The fuzz test now
    # compares float32 with the reference evaluated in float32.
    import torchvision
    from maskrcnn_fast.ops import roi_align
    x = torch.rand(1, 1, 1, 1, device=device)
    rois = torch.tensor([[0.0, 0.0, 0.229, 0.0, 2.229]], device=device)
    out = roi_align(x, rois, 1, 1.0, -1, False).cpu()
    assert torch.equal(out, torchvision.ops.roi_align(x.cpu(), rois.cpu(), 1, 1.0, -1, False))
    assert torch.equal(out, ref.roi_align(x.cpu(), rois.cpu(), 1, 1.0, -1, False))


def test_roi_align_inverted_roi_aligned_adaptive(device):
    # Found: torchvision's CPU roi_align raises ("cannot create std::vector larger than
    # max_size()": a negative adaptive grid) for an inverted ROI with aligned=True; ours gives
    # zeros (no samples, as torchvision's CUDA kernel does), like the reference. The fuzz test
    # now leaves such ROIs out of the torchvision comparison.
    from maskrcnn_fast.ops import roi_align
    x = torch.rand(1, 1, 1, 1, device=device, requires_grad=True)
    rois = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]], device=device)
    out = roi_align(x, rois, 1, 1.0, -1, True)
    assert out.tolist() == [[[[0.0]]]]
    assert torch.equal(out.detach().cpu(), ref.roi_align(x.detach().cpu(), rois.cpu(), 1, 1.0, -1, True))
    assert torch.autograd.grad(out, x, torch.ones_like(out))[0].tolist() == [[[[0.0]]]]


def test_multilevel_backward_tiny_roi_follows_the_dtype(device):
    # Found: the float32 multilevel_roi_align gradient differed from the float64 reference's for
    # a ROI 3e-12 px high with aligned=True: in float32 the -0.5 shift absorbs the height (no
    # sample, zero gradient), in float64 it does not. Not a kernel bug; the fuzz test now
    # compares float32 forward and backward with the reference evaluated in float32.
    from maskrcnn_fast.ops import multilevel_roi_align
    feats = [torch.rand(1, 1, 2, 2, device=device, requires_grad=True)]
    rois = torch.tensor([[0.0, 0.0, 0.0, 1.0, 3.1773e-12]], device=device)
    out = multilevel_roi_align(feats, rois, 1, [0.5], -1, True)
    fr = [feats[0].detach().cpu().clone().requires_grad_(True)]
    want = ref.multilevel_roi_align(fr, rois.cpu(), 1, [0.5], -1, True)
    assert torch.equal(out.detach().cpu(), want.detach())
    g = torch.autograd.grad(out, feats, torch.ones_like(out))[0].cpu()
    assert torch.equal(g, torch.autograd.grad(want, fr, torch.ones_like(want))[0])
