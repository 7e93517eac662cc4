"""nms / batched_nms against torchvision (CPU, the oracle) and the pure-PyTorch reference.

Results must be identical index lists. Scores are distinct (randperm-based) except where a test
is about ties. torchvision's public batched_nms adds per-category offsets to the coordinates,
which rounds them differently: it is compared on integer coordinates (exact offsets), and its
per-category path (_batched_nms_vanilla, exact) on random ones.
"""
import pytest
import torch
import torchvision
from torchvision import ops as tvops
from torchvision.ops.boxes import _batched_nms_vanilla

from maskrcnn_fast import ops
from maskrcnn_fast.ops import batched_nms, nms
from maskrcnn_fast.ops import reference as ref
from support.ops import LOW_DTYPES, autocast, boxes_in_square, distinct_scores, quantize, random_boxes


def _clustered(n, device="cpu", dtype=torch.float32, objects=12):
    """Boxes jittered around a few objects, as RPN proposals are: heavy suppression."""
    base = random_boxes(objects, dtype=torch.float64)
    b = base[torch.randint(0, objects, (n,))]
    size = (b[:, 2:] - b[:, :2]).repeat(1, 2)
    b = b + (torch.rand(n, 4, dtype=torch.float64) - 0.5) * 0.3 * size
    return b.to(dtype).to(device)


def _scores(n, device="cpu", dtype=torch.float32):
    return (torch.randperm(n, dtype=torch.float64) / max(n, 1)).to(dtype).to(device)


def _tv_nms(boxes, scores, thr):
    return torchvision.ops.nms(boxes.cpu(), scores.cpu(), thr)


def _upcast(t):
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


# ---- nms ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 300, 3000])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_torchvision(device, seed, n, thr):
    boxes, scores = random_boxes(n, device), _scores(n, device)
    out = nms(boxes, scores, thr)
    assert out.dtype == torch.int64 and out.device == boxes.device
    assert torch.equal(out.cpu(), _tv_nms(boxes, scores, thr))


@pytest.mark.parametrize("n", [200, 2500])
def test_nms_clustered_matches_torchvision_and_reference(device, seed, n):
    # Heavy suppression: exercises the compaction between blocks.
    boxes, scores = _clustered(n, device), _scores(n, device)
    out = nms(boxes, scores, 0.5).cpu()
    assert torch.equal(out, _tv_nms(boxes, scores, 0.5))
    assert torch.equal(out, ref.nms(boxes, scores, 0.5).cpu())
    assert len(out) < n // 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_matches_reference(device, seed, dtype):
    boxes, scores = random_boxes(500, device, dtype), _scores(500, device, dtype)
    for thr in (0.2, 0.7):
        out = nms(boxes, scores, thr)
        assert torch.equal(out.cpu(), ref.nms(boxes, scores, thr).cpu())
        assert torch.equal(out.cpu(), _tv_nms(boxes, scores, thr))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nms_half_computes_in_float(device, seed, dtype):
    # torchvision's CPU nms has no half kernel; its CUDA kernel computes half in float. Ours
    # computes in float on both devices: the answer is torchvision's on the upcast input.
    n = 200
    boxes, scores = random_boxes(n, device, dtype), _scores(n, device, dtype)
    assert scores.unique().numel() == n
    out = nms(boxes, scores, 0.5)
    assert torch.equal(out.cpu(), _tv_nms(boxes.float(), scores.float(), 0.5))
    assert torch.equal(out.cpu(), ref.nms(boxes, scores, 0.5).cpu())


def test_nms_threshold_compared_as_double(device):
    # IoU 1/3 rounds to 0.33333334f, above the double 1/3: torchvision suppresses in float32
    # (a float32 threshold would not); in float64 the IoU equals the threshold: both kept.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]], device=device)
    scores = torch.tensor([0.9, 0.8], device=device)
    for dtype in (torch.float32, torch.float64):
        b, s = boxes.to(dtype), scores.to(dtype)
        out = nms(b, s, 1.0 / 3.0)
        assert torch.equal(out.cpu(), _tv_nms(b, s, 1.0 / 3.0))
        assert torch.equal(out.cpu(), ref.nms(b, s, 1.0 / 3.0).cpu())
        assert out.tolist() == ([0] if dtype == torch.float32 else [0, 1])


def test_nms_edge_cases(device):
    empty = nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    one = nms(torch.tensor([[1.0, 2.0, 3.0, 4.0]], device=device), torch.ones(1, device=device), 0.5)
    assert one.tolist() == [0]
    cases = {
        # zero width / zero area: IoU 0 or 0/0 = NaN, never suppressed
        "degenerate": torch.tensor([[5.0, 5, 5, 20], [5, 5, 5, 20], [0, 0, 10, 10], [5, 5, 5, 5]]),
        "identical": torch.tensor([[1.0, 1, 9, 9]] * 4 + [[2.0, 2, 9, 9]]),
        "negative": torch.tensor([[-10.0, -10, -2, -2], [-9, -9, -2, -2], [-100, 5, -50, 60]]),
        "inverted": torch.tensor([[10.0, 10, 0, 0], [9, 9, 0, 0], [0, 0, 10, 10]]),
    }
    for name, boxes in cases.items():
        boxes = boxes.to(device)
        scores = _scores(len(boxes), device)
        for thr in (0.0, 0.5, 1.0, 1e9):
            out = nms(boxes, scores, thr).cpu()
            assert torch.equal(out, _tv_nms(boxes, scores, thr)), (name, thr)
            assert torch.equal(out, ref.nms(boxes, scores, thr).cpu()), (name, thr)


def test_nms_ties_follow_index_order(device, seed):
    # Not promised by torchvision across devices; ours orders ties by index on every device,
    # as torchvision's CPU nms does.
    boxes = random_boxes(400, device)
    scores = torch.randint(0, 5, (400,), device=device).float()
    assert torch.equal(nms(boxes, scores, 0.5).cpu(), _tv_nms(boxes, scores, 0.5))


def test_nms_non_contiguous(device, seed):
    n = 300
    boxes = random_boxes(n, device).T.contiguous().T  # column-major view
    scores = _scores(2 * n, device)[::2]
    assert not boxes.is_contiguous() and not scores.is_contiguous()
    out = nms(boxes, scores, 0.5)
    assert torch.equal(out.cpu(), _tv_nms(boxes.contiguous(), scores.contiguous(), 0.5))


def test_nms_nan(device, seed):
    # A NaN box has a NaN IoU with everything: kept, suppresses nothing. NaN scores sort
    # first. Same answer as torchvision on the CPU.
    n = 100
    boxes, scores = _clustered(n, device), _scores(n, device)
    boxes[3, 1] = float("nan")
    boxes[10] = float("nan")
    scores[20] = float("nan")
    scores[30] = float("nan")
    boxes[30] = torch.tensor([2000.0, 2000.0, 2010.0, 2010.0])  # overlaps nothing
    out = nms(boxes, scores, 0.5).cpu()
    assert torch.equal(out, _tv_nms(boxes, scores, 0.5))
    assert out[:2].tolist() == [20, 30]
    assert 3 in out.tolist() and 10 in out.tolist()
    inf_boxes = boxes.clone()
    inf_boxes[5] = torch.tensor([0.0, 0.0, float("inf"), float("inf")])
    assert torch.equal(nms(inf_boxes, scores, 0.5).cpu(), _tv_nms(inf_boxes, scores, 0.5))


# ---- batched_nms ----------------------------------------------------------------------------


@pytest.mark.parametrize("n,ncls", [(1, 1), (50, 3), (600, 80), (3000, 10)])
@pytest.mark.parametrize("thr", [0.0, 0.5, 0.7])
def test_batched_nms_matches_torchvision(device, seed, n, ncls, thr):
    boxes, scores = random_boxes(n, device), _scores(n, device)
    idxs = torch.randint(0, ncls, (n,), device=device)
    out = batched_nms(boxes, scores, idxs, thr)
    assert out.dtype == torch.int64
    expected = _batched_nms_vanilla(boxes.cpu(), scores.cpu(), idxs.cpu(), thr)
    assert torch.equal(out.cpu(), expected)


@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_batched_nms_public_torchvision_integer_boxes(device, seed, idx_dtype):
    # Integer coordinates make torchvision's coordinate offsets exact in float32.
    n = 400
    boxes, scores = random_boxes(n, device, integer=True), _scores(n, device)
    idxs = torch.randint(0, 20, (n,), device=device).to(idx_dtype)
    out = batched_nms(boxes, scores, idxs, 0.5)
    expected = torchvision.ops.batched_nms(boxes.cpu(), scores.cpu(), idxs.cpu(), 0.5)
    assert torch.equal(out.cpu(), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_batched_nms_dtypes(device, seed, dtype):
    n = 250
    boxes, scores = random_boxes(n, device, dtype), _scores(n, device, dtype)
    idxs = torch.randint(0, 5, (n,), device=device)
    out = batched_nms(boxes, scores, idxs, 0.5)
    expected = _batched_nms_vanilla(_upcast(boxes).cpu(), _upcast(scores).cpu(), idxs.cpu(), 0.5)
    assert torch.equal(out.cpu(), expected)
    assert torch.equal(out.cpu(), ref.batched_nms(boxes, scores, idxs, 0.5).cpu())


def test_batched_nms_matches_reference(device, seed):
    n = 1500
    boxes, scores = _clustered(n, device, torch.float64), _scores(n, device, torch.float64)
    # Arbitrary labels: negative, huge, sparse.
    labels = torch.tensor([-7, 0, 3, 10**12, -(10**15)], device=device)
    idxs = labels[torch.randint(0, 5, (n,), device=device)]
    out = batched_nms(boxes, scores, idxs, 0.6)
    assert torch.equal(out.cpu(), ref.batched_nms(boxes, scores, idxs, 0.6).cpu())
    assert torch.equal(out.cpu(), _batched_nms_vanilla(boxes.cpu(), scores.cpu(), idxs.cpu(), 0.6))


def test_batched_nms_one_class_is_nms(device, seed):
    n = 700
    boxes, scores = _clustered(n, device), _scores(n, device)
    idxs = torch.full((n,), 3, device=device)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), nms(boxes, scores, 0.5))


def test_batched_nms_large_class(device, seed):
    # One category above the size where a category gets all threads to itself.
    n = 6000
    boxes, scores = random_boxes(n, device), _scores(n, device)
    idxs = (torch.rand(n, device=device) < 0.2).long()  # ~4800 boxes in category 0
    out = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(out.cpu(), _batched_nms_vanilla(boxes.cpu(), scores.cpu(), idxs.cpu(), 0.5))


def test_batched_nms_one_box_per_class(device, seed):
    n = 300
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]], device=device).repeat(n, 1)
    scores = _scores(n, device)
    out = batched_nms(boxes, scores, torch.arange(n, device=device), 0.5)
    assert torch.equal(out, torch.sort(scores, descending=True).indices)
    # The same boxes in one category: only the best survives.
    out = batched_nms(boxes, scores, torch.zeros(n, dtype=torch.long, device=device), 0.5)
    assert out.tolist() == [int(scores.argmax())]


def test_batched_nms_edge_cases(device, seed):
    e = batched_nms(torch.zeros(0, 4, device=device), torch.zeros(0, device=device),
                    torch.zeros(0, dtype=torch.long, device=device), 0.5)
    assert e.shape == (0,) and e.dtype == torch.int64
    n = 200
    boxes = random_boxes(2 * n, device)[::2]
    scores = _scores(n, device)
    idxs = torch.randint(0, 4, (2 * n,), device=device)[::2]
    scores[7] = float("nan")
    boxes[9, 2] = float("nan")
    out = batched_nms(boxes, scores, idxs, 0.5)
    expected = _batched_nms_vanilla(boxes.contiguous().cpu(), scores.cpu(), idxs.contiguous().cpu(), 0.5)
    # NaN scores first (torchvision's vanilla path re-sorts unstably; only the NaN is first).
    assert out[0].item() == 7 and 9 in out.tolist()
    assert sorted(out.tolist()) == sorted(expected.tolist())


# ---- bad input ------------------------------------------------------------------------------


def test_bad_input(device):
    b, s = torch.rand(5, 4, device=device), torch.rand(5, device=device)
    i = torch.zeros(5, dtype=torch.long, device=device)
    with pytest.raises((RuntimeError, ValueError), match="boxes"):
        nms(torch.rand(5, 5, device=device), s, 0.5)
    with pytest.raises((RuntimeError, ValueError), match="boxes"):
        nms(torch.rand(20, device=device), s, 0.5)
    with pytest.raises((RuntimeError, ValueError), match="scores"):
        nms(b, torch.rand(5, 1, device=device), 0.5)
    with pytest.raises((RuntimeError, ValueError), match="boxes and scores"):
        nms(b, torch.rand(6, device=device), 0.5)
    with pytest.raises((RuntimeError, ValueError), match="boxes"):
        nms(b.long(), s, 0.5)
    with pytest.raises((RuntimeError, ValueError), match="scores"):
        nms(b, s.double(), 0.5)
    for thr in (-0.1, float("nan")):
        with pytest.raises((RuntimeError, ValueError), match="iou_threshold"):
            nms(b, s, thr)
        with pytest.raises((RuntimeError, ValueError), match="iou_threshold"):
            batched_nms(b, s, i, thr)
    with pytest.raises((RuntimeError, ValueError), match="idxs"):
        batched_nms(b, s, i.float(), 0.5)
    with pytest.raises((RuntimeError, ValueError), match="idxs"):
        batched_nms(b, s, i.bool(), 0.5)
    with pytest.raises((RuntimeError, ValueError), match="idxs"):
        batched_nms(b, s, torch.zeros(4, dtype=torch.long, device=device), 0.5)
    with pytest.raises((RuntimeError, ValueError), match="idxs"):
        batched_nms(b, s, i[:, None], 0.5)
    with pytest.raises((RuntimeError, ValueError), match="boxes"):
        batched_nms(b[:, :3], s, i, 0.5)


@pytest.mark.cuda  # the meta device stands in without a GPU
def test_device_mismatch():
    b, s = torch.rand(5, 4), torch.rand(5)
    other = "cuda" if torch.cuda.is_available() else "meta"
    with pytest.raises((RuntimeError, ValueError), match="device"):
        nms(b, s.to(other), 0.5)
    with pytest.raises((RuntimeError, ValueError), match="device"):
        batched_nms(b, s, torch.zeros(5, dtype=torch.long, device=other), 0.5)


# ---- registration ---------------------------------------------------------------------------


def test_opcheck(device, seed):
    n = 60
    boxes, scores = _clustered(n, device), _scores(n, device)
    idxs = torch.randint(0, 4, (n,), device=device)
    torch.library.opcheck(torch.ops.maskrcnn_fast.nms.default, (boxes, scores, 0.5))
    torch.library.opcheck(torch.ops.maskrcnn_fast.batched_nms.default, (boxes, scores, idxs, 0.5))


def test_more_boxes_than_the_kernels_index(device):
    """Box indices are int32 in the CUDA kernels (bit arithmetic up to 2^30 boxes): over 2^30 is
    an error naming `boxes` on every device, before any allocation (stride-0 views here)."""
    n = (1 << 30) + 1
    b = torch.zeros(1, 4, device=device).expand(n, 4)
    s = torch.zeros(1, device=device).expand(n)
    with pytest.raises(RuntimeError, match=r"boxes: at most 2\^30 boxes are supported, got 1073741825"):
        nms(b, s, 0.5)
    with pytest.raises(RuntimeError, match=r"boxes: at most 2\^30 boxes are supported"):
        batched_nms(b, s, torch.zeros(1, dtype=torch.int64, device=device).expand(n), 0.5)


# ---- drop-in for torchvision.ops.nms and batched_nms: autocast, quantized tensors --------------
#
# torchvision registers an autocast kernel for nms that casts float16 / bfloat16 to float32; on
# quantized tensors (CPU) nms is its qnms kernel: ours are bit for bit the same.

@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("low", ["boxes", "scores", "both"])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_autocast_nms(device, seed, dtype, low, thr):
    boxes, scores = boxes_in_square(200, device=device), distinct_scores(200, device)
    if low in ("boxes", "both"):
        boxes = boxes.to(dtype)
    if low in ("scores", "both"):
        scores = scores.to(dtype)
    with autocast(device, dtype):
        ours, theirs = ops.nms(boxes, scores, thr), tvops.nms(boxes, scores, thr)
    assert torch.equal(ours, theirs)


def _per_class_nms(boxes, scores, idxs, thr):
    """torchvision's batched_nms definition, class by class (its per-class path): its public
    function shifts the boxes by class in their own dtype first, which in float16 / bfloat16
    rounds the coordinates (its coordinate trick), so it is not the oracle under autocast."""
    keep = torch.cat([torch.where(idxs == c)[0][tvops.nms(boxes[idxs == c], scores[idxs == c], thr)]
                      for c in torch.unique(idxs)])
    return keep[scores[keep].float().sort(descending=True)[1]]


@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("mixed", [False, True])
def test_autocast_batched_nms(device, seed, dtype, mixed):
    boxes, scores = boxes_in_square(200, device=device, dtype=dtype), distinct_scores(200, device)
    scores = scores if mixed else scores.to(dtype)
    idxs = torch.randint(0, 5, (200,), device=device)
    with autocast(device, dtype):
        ours = ops.batched_nms(boxes, scores, idxs, 0.5)
        theirs = _per_class_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("qdtype", [torch.quint8, torch.qint8])
@pytest.mark.parametrize("scale, zero_point", [(1.0, 0), (2.0, 50), (3.0, 10), (0.5, 7)])
@pytest.mark.parametrize("iou", [0.2, 0.5, 0.8])
def test_quantized_nms_matches_torchvision(seed, qdtype, scale, zero_point, iou):
    """Integer coordinates: many exact IoU ties with the threshold, and many tied scores."""
    boxes = boxes_in_square(300, 100.0)
    scores = torch.rand(300) * 100
    qboxes = quantize(boxes, scale, zero_point, qdtype)
    qscores = quantize(scores, scale, zero_point, qdtype)
    theirs = tvops.nms(qboxes, qscores, iou)
    assert torch.equal(ops.nms(qboxes, qscores, iou), theirs)
    idxs = torch.randint(0, 4, (300,))
    ours = ops.batched_nms(qboxes, qscores, idxs, iou)
    # torchvision's batched_nms fails on quantized tensors; its definition, class by class:
    want = torch.cat([torch.where(idxs == c)[0][tvops.nms(qboxes[idxs == c], qscores[idxs == c], iou)]
                      for c in range(4)])
    assert torch.equal(ours.sort()[0], want.sort()[0])
    s = qscores.int_repr()[ours]
    assert bool((s[:-1] >= s[1:]).all())
