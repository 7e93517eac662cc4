"""Training loop: the loss falls, a NaN stops it, a resume repeats the run exactly, torchrun works."""
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

from maskrcnn_fast.engine import NonFiniteLossError, Trainer, WarmupCosine, WarmupMultiStep, load_checkpoint
from support.models import TinyShapes, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(tmp_path=None, **kw):
    torch.manual_seed(0)
    opts = dict(batch_size=2, lr=0.01, warmup_iters=4, clip_grad_norm=5.0, progress=False, seed=0,
                checkpoint_dir=str(tmp_path) if tmp_path else None)
    opts.update(kw)
    return Trainer(tiny_model(), TinyShapes(8), **opts)


def test_warmup_multistep():
    f = WarmupMultiStep([10, 20], gamma=0.1, warmup_iters=4, warmup_factor=0.001)
    assert f(0) == pytest.approx(0.001)
    assert f(2) == pytest.approx(0.5005)
    assert [f(i) for i in (4, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_warmup_cosine():
    f = WarmupCosine(total_iters=14, warmup_iters=4, warmup_factor=0.001)
    assert f(0) == pytest.approx(0.001)
    assert f(2) == pytest.approx(0.5005)
    assert [f(i) for i in (4, 9, 14, 20)] == pytest.approx([1, 0.5, 0, 0], abs=1e-12)


def test_adamw_cosine_resume_repeats_exactly(tmp_path):
    kw = dict(iterations=6, optimizer="adamw", lr_schedule="cosine", lr=1e-3)
    tr = _trainer(tmp_path / "a", checkpoint_every=3, keep_checkpoints=True, **kw)
    assert isinstance(tr.optimizer, torch.optim.AdamW)
    full = tr.fit()
    # warm-up 4 of 6 steps, then the cosine: lr 1e-3 at step 4 (index 4), 0.5e-3 at index 5
    assert [r["lr"] for r in full[4:]] == pytest.approx([1e-3, 0.5e-3])
    ck3 = str(tmp_path / "a" / "checkpoint_0000003.pt")
    assert load_checkpoint(ck3)["optimizer_name"] == "adamw"
    resumed = _trainer(tmp_path / "b", resume=ck3, **kw).fit()
    for a, b in zip(full[3:], resumed):
        assert {k: v for k, v in a.items() if k != "images_per_s"} == {k: v for k, v in b.items() if k != "images_per_s"}
    wa = load_checkpoint(str(tmp_path / "a"))["model"]
    wb = load_checkpoint(str(tmp_path / "b"))["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="optimizer adamw, not sgd"):
        _trainer(iterations=6, lr_schedule="cosine", resume=ck3)
    with pytest.raises(ValueError, match="lr schedule cosine, not multistep"):
        _trainer(iterations=6, optimizer="adamw", resume=ck3)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        _trainer(iterations=6, optimizer="adam")


def test_loss_falls():
    hist = _trainer(iterations=24).fit()
    losses = [r["loss"] for r in hist]
    assert len(losses) == 24 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.5 * first, losses
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(hist[0])


def test_resume_repeats_exactly(tmp_path):
    # 8 images / batch 2 = 4 steps per epoch: step 3 is mid-epoch, step 6 in the second epoch
    full = _trainer(tmp_path / "a", iterations=6, checkpoint_every=3, keep_checkpoints=True).fit()
    ck = load_checkpoint(str(tmp_path / "a" / "checkpoint_0000003.pt"))
    assert (ck["iteration"], ck["epoch"], ck["epoch_batch"]) == (3, 0, 3)
    assert ck["model_args"] is None and len(ck["rng"]) == 1
    resumed = _trainer(tmp_path / "b", iterations=6, resume=str(tmp_path / "a" / "checkpoint_0000003.pt")).fit()
    assert [r["iteration"] for r in resumed] == [4, 5, 6]
    for a, b in zip(full[3:], resumed):
        assert {k: v for k, v in a.items() if k != "images_per_s"} == {k: v for k, v in b.items() if k != "images_per_s"}
    wa = load_checkpoint(str(tmp_path / "a"))["model"]
    wb = load_checkpoint(str(tmp_path / "b"))["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class _NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, images, targets):
        return {"loss_classifier": self.w * 0.5, "loss_mask": self.w * float("nan")}


def test_nan_loss_stops():
    tr = Trainer(_NaNModel(), TinyShapes(4), batch_size=2, iterations=3, progress=False)
    with pytest.raises(NonFiniteLossError, match="loss is nan at iteration 1 .*loss_mask=nan"):
        tr.fit()
    assert tr.model.w.item() == 1.0  # no step taken on the NaN


class _Recorder(nn.Module):
    """Records the image ids of every batch it trains on."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.batches = []

    def forward(self, images, targets):
        self.batches.append([t["image_id"] for t in targets])
        return {"loss_classifier": self.w * 0.5}


def test_no_image_left_out():
    # image 1 is alone in its aspect-ratio group: torchvision's sampler tops its batch up with
    # repeats of it rather than leaving it out; one image is a batch of 2 all the same
    m = _Recorder()
    tr = Trainer(m, TinyShapes(3), batch_size=2, epochs=3, group_ids=[0, 1, 0], progress=False, lr=0.1)
    assert tr.iters_per_epoch == 2
    hist = tr.fit()
    assert len(m.batches) == 6 and [r["epoch"] for r in hist] == [1, 1, 2, 2, 3, 3]  # counted from 1
    for e in range(3):
        epoch = m.batches[2 * e : 2 * e + 2]
        assert all(len(b) == 2 and len({[0, 1, 0][i] for i in b}) == 1 for b in epoch), epoch
        assert {i for b in epoch for i in b} == {0, 1, 2}
    assert [1, 1] in m.batches
    m = _Recorder()
    Trainer(m, TinyShapes(1), batch_size=2, iterations=1, progress=False).fit()
    assert m.batches == [[0, 0]]
    # without grouping, the last short batch is topped up, not dropped
    m = _Recorder()
    Trainer(m, TinyShapes(5), batch_size=2, epochs=1, progress=False).fit()
    assert [len(b) for b in m.batches] == [2, 2, 2] and {i for b in m.batches for i in b} == set(range(5))
    with pytest.raises(ValueError, match="empty"):
        Trainer(_Recorder(), TinyShapes(0), batch_size=2, iterations=1, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(tmp_path):
    pytest.importorskip("maskrcnn_fast.data", reason="needs maskrcnn_fast.data.SyntheticShapes")
    out, dump = tmp_path / "run", tmp_path / "dump"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASKRCNN_FAST_RANK_DUMP=str(dump),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master-port={_free_port()}",
           "-m", "maskrcnn_fast", "train", "--dataset", "synthetic", "--num-images", "8", "--image-size", "64",
           "--depth", "18", "--iterations", "3", "--batch-size", "1", "--min-size", "64", "--max-size", "64",
           "--anchor-sizes", "8", "16", "32", "64", "128", "--model-arg", "rpn_batch_size_per_image=64",
           "--model-arg", "box_batch_size_per_image=32", "--model-arg", "rpn_post_nms_top_n_train=100",
           "--lr", "0.005", "--warmup-iters", "2", "--clip-grad-norm", "5", "--workers", "0",
           "--aspect-ratio-group-factor", "-1", "--device", "cpu", "--no-progress", "--print-every", "1",
           "--output-dir", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("training ResNet-18") == 1  # only rank 0 prints
    assert r.stdout.count("[3/3]") == 1
    w0 = torch.load(dump / "rank0.pt", weights_only=True)
    w1 = torch.load(dump / "rank1.pt", weights_only=True)
    ck = load_checkpoint(str(out))
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["iteration"] == 3
    # parameters agree bit for bit; BatchNorm running statistics are per rank by design
    params = [k for k in w0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert params and all(torch.equal(w0[k], w1[k]) for k in params)
    assert all(torch.equal(w0[k], ck["model"][k]) for k in w0)


def test_data_order_is_a_function_of_seed_and_epoch():
    # the item jitter draws from the global RNG: per-item seeding makes it repeat in any process
    tr = Trainer(_NaNModel(), TinyShapes(8), batch_size=2, iterations=1, progress=False, seed=5)
    whole = [torch.stack(b[0]) for b in tr._loader(1, 0)]
    skipped = [torch.stack(b[0]) for b in tr._loader(1, 1)]
    in_workers = [torch.stack(b[0]) for b in Trainer(_NaNModel(), TinyShapes(8), batch_size=2, iterations=1,
                                                      progress=False, seed=5, workers=2)._loader(1, 1)]
    assert len(whole) == 4 and len(skipped) == len(in_workers) == 3
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(whole[1:], skipped, in_workers))
    other_epoch = [torch.stack(b[0]) for b in tr._loader(2, 0)]
    assert not all(torch.equal(a, b) for a, b in zip(whole, other_epoch))
