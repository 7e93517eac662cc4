"""The user's CUDA paths end to end, each checked against the same path on the CPU: ``train``
with and without ``--amp``, ``eval``, ``predict`` on a folder, ``export --format pt2`` and its
package run, ``capture_cuda_graph`` of ``optimize_for_inference``'s model, and the distributed
set-up (torchrun on two GPUs where there are two, else one process through the NCCL set-up).
scripts/gpu_check.sh runs this file as its own step, user-paths, in this order (the .pt2 compile,
the longest, last: a step cut by its budget keeps what it finished).

Each case has a ``where`` parameter:
- ``cuda`` (marked ``cuda``): on the GPU, where one and the CUDA kernels exist;
- ``emu``: its twin, which ``gpu_check.sh --rehearse`` runs instead (no GPU): the same commands
  with ``--device cpu`` inside :func:`maskrcnn_fast.emulated.cuda`, so that our ops run the CUDA
  kernels' code (emulated) and everything else runs on the CPU. What has no CPU form is said in
  the case: AMP (the twin checks the refusal), the graph capture, the .pt2 compile, NCCL.
The commands run in this process through ``cli.main``, which ``python -m maskrcnn_fast`` calls
(the emulated kernels are switched on per process, and a GPU process costs a CUDA context).

Tolerances. The oracle is the same path on the CPU, in the same test.
- emu: our ops' emulated kernels give the CPU kernels' bits (tests/test_cuda_matches_cpu.py)
  except gradients the CUDA kernels sum with atomics (roi_align backward, in the threads'
  order): the first step's gradients differ by a few float32 roundings, and steps 2 and 3 run
  at weights that differ by those (an NMS near-tie can then move a proposal): training losses
  within rtol 1e-3 (``TOL["emu"]``); inference has no atomics: detections equal within 1e-6.
- cuda, float32: cuDNN convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32;
  10-bit mantissa, about 5e-4 relative per product) and a GPU sums in other orders, so the RPN's
  proposals and NMS near-ties can differ in a few boxes: losses within rtol 5e-2 of the CPU's at
  each of 3 steps, and at least 90% of the detections matched (same label, IoU > 0.9, score
  within 2e-2) both ways.
- cuda, AMP: float16 autocast (11-bit significand, 4.9e-4 per rounding, through ~20 layers):
  the first step's losses (the same weights) within rtol 1e-1; GradScaler may skip a step whose
  float16 gradients overflow, so the later steps are only finite.
Randomness: the samplers draw ``torch.randperm`` from the device's generator (CPU and CUDA
differ), so the training cases sample every labelled anchor and proposal: the losses then do not
depend on the draw. Data order and flips use CPU generators seeded by ``--seed``.
"""
import json
import os
import socket
import subprocess
import sys
from contextlib import nullcontext

import pytest
import torch

import maskrcnn_fast
from maskrcnn_fast import cli, emulated
from support import CUDA_AVAILABLE, NO_CUDA_REASON, needs_pycocotools
from support.export import box_iou
from support.models import TinyShapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WHERE = [
    pytest.param("emu", marks=pytest.mark.skipif(not emulated.available(),
                                                 reason=f"no emulated CUDA kernels: {emulated.error()}")),
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA_AVAILABLE, reason=NO_CUDA_REASON)]),
]
# (loss rtol per step, detections: fraction matched, score atol, IoU)
TOL = {"emu": dict(loss=1e-3, matched=1.0, score=1e-6, iou=0.999),
       "cuda": dict(loss=5e-2, amp_loss=1e-1, matched=0.9, score=2e-2, iou=0.9)}

# The tiny model (tests/support/models.py's sizes, narrower): every anchor and proposal sampled
# in training; in inference every proposal kept (a 64 px image has 1023 anchors, 768 on the
# largest level) and the 100 best detections.
_MODEL = ["--min-size", "64", "--max-size", "64",
          "--model-arg", "rpn_batch_size_per_image=100000", "--model-arg", "box_batch_size_per_image=100000",
          "--model-arg", "rpn_pre_nms_top_n_test=1024", "--model-arg", "rpn_post_nms_top_n_test=1024",
          "--model-arg", "box_detections_per_img=100", "--no-progress"]
_TRAIN = ["train", "--dataset", "synthetic", "--num-images", "4", "--image-size", "64", "--depth", "18",
          "--fpn-channels", "16", "--box-head-width", "32", "--mask-head-width", "8",
          "--anchor-sizes", "8", "16", "32", "64", "128",
          "--iterations", "3", "--batch-size", "2", "--lr", "0.002", "--warmup-iters", "1", "--workers", "0",
          "--aspect-ratio-group-factor", "-1", "--seed", "3", "--print-every", "1", *_MODEL]


@pytest.fixture(params=WHERE)
def where(request):
    if request.param == "emu":  # the rehearsal's machine is small and busy
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        yield "emu"
        torch.set_num_threads(n)
    else:
        yield "cuda"


def _on(where):
    """(--device, the context the command runs in)."""
    return ("cpu", emulated.cuda()) if where == "emu" else ("cuda", nullcontext())


def _run(argv, ctx=None):
    with ctx or nullcontext():
        rc = cli.main(argv)
    assert rc == 0, argv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint trained 3 steps on the CPU (scores less flat than random weights'), and its
    history: the CPU oracle of the training cases and the model of the inference cases."""
    out = tmp_path_factory.mktemp("train_cpu")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run([*_TRAIN, "--device", "cpu", "--output-dir", str(out)])
    finally:
        torch.set_num_threads(n)
    return str(out / "checkpoint.pt"), json.loads((out / "history.json").read_text())


def _losses_close(got, want, rtol, steps=None):
    """Each step's losses (total and parts) within rtol, relative to that step's total loss."""
    assert len(got) == len(want) > 0
    for i, (g, w) in enumerate(list(zip(got, want))[:steps]):
        for k in w:
            if k.startswith("loss"):
                assert abs(g[k] - w[k]) <= rtol * abs(w["loss"]), (i + 1, k, g[k], w[k], rtol)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
def test_train(where, amp, trained, tmp_path, capsys):
    """``train --dataset synthetic`` 3 steps: the same losses as on the CPU. On emu, ``--amp``
    has no CPU form (autocast and GradScaler are CUDA's): its twin checks that the command
    refuses it, in one line, before any work."""
    dev, ctx = _on(where)
    if amp and where == "emu":
        capsys.readouterr()
        assert cli.main([*_TRAIN, "--device", dev, "--output-dir", str(tmp_path), "--amp"]) == 2
        assert capsys.readouterr().err.strip() == "maskrcnn-fast: error: --amp needs a CUDA device"
        assert not (tmp_path / "history.json").exists()
        return
    _run([*_TRAIN, "--device", dev, "--output-dir", str(tmp_path), *(["--amp"] if amp else [])], ctx)
    got = json.loads((tmp_path / "history.json").read_text())
    want = trained[1]
    assert len(got) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in got)
    if amp:
        _losses_close(got, want, TOL[where]["amp_loss"], steps=1)
    else:
        _losses_close(got, want, TOL[where]["loss"])
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["iteration"] == 3 and all(v.device.type == "cpu" for v in ck["model"].values())


def _matched(got, want, tol):
    """The fraction of want's detections (dicts of boxes, labels, scores) that have their own in
    got: the same label, IoU > tol["iou"], score within tol["score"]."""
    if len(want["boxes"]) == 0:
        return 1.0 if len(got["boxes"]) == 0 else 0.0
    ious = box_iou(want["boxes"].double(), got["boxes"].double())
    ok = (ious > tol["iou"]) & (want["labels"][:, None] == got["labels"][None]) \
        & ((want["scores"][:, None] - got["scores"][None]).abs() <= tol["score"])
    free = torch.ones(len(got["boxes"]), dtype=torch.bool)
    n = 0
    for j in torch.argsort(want["scores"], descending=True).tolist():
        cand = ok[j] & free
        if cand.any():
            free[int(cand.nonzero()[0])] = False
            n += 1
    return n / len(want["boxes"])


def _agree(got, want, tol):
    """Both ways, at least tol["matched"] of the detections match (1.0: the same detections)."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = ({k: v.detach().cpu().float() for k, v in d.items() if k in ("boxes", "labels", "scores")}
                for d in (g, w))
        assert len(w["boxes"]) > 0, i
        a, b = _matched(g, w, tol), _matched(w, g, tol)
        assert min(a, b) >= tol["matched"], (i, a, b, len(g["boxes"]), len(w["boxes"]), tol)


def _from_records(records, key_box="box"):
    return {"boxes": torch.tensor([r[key_box] for r in records], dtype=torch.float64).reshape(-1, 4),
            "labels": torch.tensor([r["label"] for r in records]),
            "scores": torch.tensor([r["score"] for r in records], dtype=torch.float64)}


@needs_pycocotools
def test_predict_folder(where, trained, tmp_path):
    """``predict`` on a folder of two PNGs: the same detections in each JSON as on the CPU."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    ds = TinyShapes(2, jitter=False)
    for i in range(2):
        img = (ds[i][0] * 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        Image.fromarray(img).save(folder / f"im{i}.png")
    dev, ctx = _on(where)
    args = ["predict", str(folder), "--checkpoint", trained[0], "--score-thresh", "0", *_MODEL]
    _run([*args, "--device", "cpu", "--output-dir", str(tmp_path / "cpu")])
    _run([*args, "--device", dev, "--output-dir", str(tmp_path / where)], ctx)
    got, want = ([_from_records(json.loads((tmp_path / d / f"im{i}.json").read_text())["detections"])
                  for i in range(2)] for d in (where, "cpu"))
    _agree(got, want, TOL[where])


@needs_pycocotools
def test_eval(where, trained, tmp_path):
    """``eval`` on 4 synthetic images: the same detections (its --output-json) and AP as on the
    CPU (AP within 0.02 on cuda: the few detections a near-tie moves)."""
    dev, ctx = _on(where)
    args = ["eval", "--checkpoint", trained[0], "--dataset", "synthetic", "--num-images", "4", *_MODEL]
    _run([*args, "--device", "cpu", "--output-json", str(tmp_path / "cpu.json")])
    _run([*args, "--device", dev, "--output-json", str(tmp_path / f"{where}.json")], ctx)
    got, want = (json.loads((tmp_path / f"{d}.json").read_text()) for d in (where, "cpu"))
    for image_id in sorted({r["image_id"] for r in want}):
        g, w = ([dict(r, box=[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]],
                      label=r["category_id"]) for r in res if r["image_id"] == image_id] for res in (got, want))
        _agree([_from_records(g)], [_from_records(w)], TOL[where])
    mg, mw = (json.loads((tmp_path / f"{d}.metrics.json").read_text()) for d in (where, "cpu"))
    for kind in ("bbox", "segm"):
        for k, v in mw[kind].items():
            assert abs(mg[kind][k] - v) <= (0.02 if where == "cuda" else 1e-9), (kind, k, mg[kind][k], v)


def _cpu_model(checkpoint):
    from maskrcnn_fast.models.builders import model_from_checkpoint

    model, _ = model_from_checkpoint(checkpoint, option="--checkpoint")
    return model.eval()


def test_capture_cuda_graph_of_optimize_for_inference(where, trained, seed):
    """``capture_cuda_graph(optimize_for_inference(model), images)`` replayed on new images:
    the eager CPU model's detections (batch norms folded: float rounding only). On emu there is
    no graph: the twin runs the optimised model's static-shape forward (what the graph records)
    on the emulated kernels."""
    model = _cpu_model(trained[0])
    first = [torch.rand(3, 64, 64), torch.rand(3, 56, 64)]
    images = [torch.rand_like(im) for im in first]
    with torch.no_grad():
        want = model(images)
        if where == "cuda":
            opt = maskrcnn_fast.optimize_for_inference(model.cuda())
            captured = maskrcnn_fast.capture_cuda_graph(opt, [im.cuda() for im in first])
            got = captured([im.cuda() for im in images])
        else:
            opt = maskrcnn_fast.optimize_for_inference(model)
            opt.static_shapes = True
            with emulated.cuda():
                got = opt(images)
    _agree(got, want, TOL[where])


# One process trains 2 steps through the distributed set-up: the process group (nccl on CUDA,
# gloo on the CPU), DistributedDataParallel, the collectives of the loop; the same run without
# a process group on the CPU is the oracle. Prints both histories as JSON.
_DIST = r"""
import contextlib, json, os, sys
import torch, torch.distributed as dist
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests"))
from maskrcnn_fast import emulated
from maskrcnn_fast.engine import Trainer
from maskrcnn_fast.engine.distributed import DistInfo
from maskrcnn_fast.models.builders import build_model
from support.models import TinyShapes, tiny_model_args

where = sys.argv[1]
torch.set_num_threads(1 if where == "emu" else torch.get_num_threads())
def fit(device, info):
    args = tiny_model_args()
    args["kwargs"].update(rpn_batch_size_per_image=100000, box_batch_size_per_image=100000,
                          rpn_pre_nms_top_n_train=1024, rpn_post_nms_top_n_train=1024,
                          fpn_channels=16, box_head_width=32, mask_head_width=8)
    torch.manual_seed(0)
    tr = Trainer(build_model(args), TinyShapes(4), batch_size=2, iterations=2, lr=0.002, warmup_iters=1,
                 progress=False, seed=0, device=device, dist_info=info)
    if info is not None:
        assert isinstance(tr.model, torch.nn.parallel.DistributedDataParallel), type(tr.model)
    return [{k: v for k, v in r.items() if k.startswith("loss")} for r in tr.fit()]

want = fit("cpu", None)
device = "cuda:0" if where == "cuda" else "cpu"
if where == "cuda":
    torch.cuda.set_device(0)
dist.init_process_group("nccl" if where == "cuda" else "gloo", rank=0, world_size=1,
                        init_method="tcp://127.0.0.1:" + os.environ["PORT"])
with emulated.cuda() if where == "emu" else contextlib.nullcontext():
    got = fit(device, DistInfo(0, 1, 0, True))
dist.destroy_process_group()
print("HISTORIES " + json.dumps([got, want]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_set_up(where, trained, tmp_path):
    """Two GPUs: ``torchrun --nproc_per_node 2 -m maskrcnn_fast train`` (NCCL); the ranks end
    with the same parameters and the losses are the CPU's (gloo, two processes). One GPU (the
    lent machines): one process through the NCCL set-up, DistributedDataParallel included,
    against the same run without a process group on the CPU. On emu: the gloo set-up, the ops
    on the emulated kernels."""
    env = dict(os.environ, ROOT=ROOT, PORT=str(_free_port()), OMP_NUM_THREADS="1" if where == "emu" else "4",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if where == "cuda" and torch.cuda.device_count() >= 2:
        histories = []
        for dev in ("cpu", "cuda"):
            out, dump = tmp_path / dev, tmp_path / f"dump_{dev}"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                   f"--master-port={_free_port()}", "-m", "maskrcnn_fast", *_TRAIN, "--device", dev,
                   "--output-dir", str(out)]
            r = subprocess.run(cmd, cwd=ROOT, env=dict(env, MASKRCNN_FAST_RANK_DUMP=str(dump)), capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            w0, w1 = (torch.load(dump / f"rank{i}.pt", weights_only=True) for i in (0, 1))
            params = [k for k in w0 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
            assert params and all(torch.equal(w0[k], w1[k]) for k in params)
            histories.append(json.loads((out / "history.json").read_text()))
        _losses_close(histories[1], histories[0], TOL["cuda"]["loss"])
        return
    r = subprocess.run([sys.executable, "-c", _DIST, where], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got, want = json.loads(r.stdout.split("HISTORIES ", 1)[1])
    assert len(got) == 2
    _losses_close(got, want, TOL[where]["loss"])


def test_export_pt2_and_run_the_package(where, trained, tmp_path, seed):
    """``export --device cuda --format pt2``, then the package run on the GPU: the eager CPU
    model's detections. On emu the AOTInductor compile is left out (minutes of C++ on the
    CPU): the twin exports ``--format program``, the torch.export program the package is
    compiled from, and runs it on the emulated kernels."""
    from maskrcnn_fast.deploy import load_package, to_detections

    dev, ctx = _on(where)
    fmt = "pt2" if where == "cuda" else "program"
    out = tmp_path / "m.pt2"
    _run(["export", "--checkpoint", trained[0], "--size", "64x64", "--format", fmt, "--device", dev,
          "--output", str(out), "--min-size", "64", "--max-size", "64"])
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = _cpu_model(trained[0])(list(x))
        if where == "cuda":
            got = load_package(str(out)).detections(x.cuda())
        else:
            with ctx:
                got = to_detections(torch.export.load(str(out)).module()(x))
    _agree(got, want, TOL[where])
