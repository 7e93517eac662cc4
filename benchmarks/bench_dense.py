"""Dense scenes (issue 18): one R50-FPN training iteration on a 1024x1024 image with K small
round objects, and inference with 3,000 detections, ours beside torchvision in the same run,
each case in its own child process whose memory is watched.

Cases (group ``dense``; ``python -m maskrcnn_fast bench -k dense`` runs only these):

- ``dense_train[K=10|100|1000|3000]``: batch 1, a ``SyntheticShapes`` image of 1024x1024 with
  exactly K shapes of half-extent 6-14 px (``SIZE_RANGE``), random weights (torchvision's
  model at seed 0; ours loads its state_dict key for key), torchvision's fine-tuning
  configuration (frozen batch norms, the trunk's last 3 layers trained, as ``bench_train.py``)
  and its default RPN/ROI settings; the image is resized to 800x800 as torchvision does. One
  iteration: forward with targets, the five losses, backward; the samplers seeded alike.
  ``fused`` is our model on its masks' compact form (``mask_format="packed"`` where
  ``SyntheticShapes`` has it, else the full-size masks), ``torchvision`` torchvision's MaskRCNN
  on the full-size masks (its target format).
- ``dense_infer[3000 dets]``: eval mode on the K=3000 image, ``box_detections_per_img=3000``,
  ``box_score_thresh=0``, 3000 proposals; the time runs to every detection's binary mask:
  torchvision's pasted D x 1 x H x W probabilities thresholded one at a time, ours (where the
  model has ``paste_masks_in_image``) its box masks pasted a few at a time (``mask_crops``).

Each case runs in a child process (``run_capped``): the parent polls the child's resident set
(``/proc/<pid>/status``) every 20 ms and kills it (SIGKILL) when it passes the cap
(``MF_DENSE_RSS_CAP_GB``, default 16 GiB) or when the machine's available memory falls below
``MF_DENSE_MIN_AVAILABLE_GB`` (default 1.5 GiB): the case is then reported as out of memory,
with the resident set at the kill, and the machine is never exhausted (the child's
``oom_score_adj`` is also raised, so that the kernel would pick it first). The child reports its
iteration's time, its losses and its peak resident set (VmHWM, which includes the model, the
data and the warm-up: the growth per instance against K=10 is what the objects cost).

Timing: one iteration per case (about 30-60 s on 2 cores), after one cheap warm-up iteration
on a 256x256 image (threads, allocator, library set-up). The pytest-benchmark median of each
case is the child's whole run (start, model, data, iteration); benchmarks/report.py prints the
child's own measurements in a table of its own (``extra_info['dense']``). Our backbone's memory
format is fixed by ``MASKRCNN_FAST_CHANNELS_LAST`` (default here ``0``: NCHW, torchvision's; the
automatic choice would time both formats inside the measured iteration).

Environment: ``MF_DENSE_RSS_CAP_GB``, ``MF_DENSE_MIN_AVAILABLE_GB``, ``MF_DENSE_TIMEOUT_S``
(per case, default 1800), ``MF_DENSE_K`` (e.g. ``10,1000``: fewer training cases),
``MF_DENSE_INFER=0`` (no inference cases), ``MF_DENSE_MASKS`` (ours' masks: ``auto``, the
default, packed where ``SyntheticShapes`` has ``mask_format``; ``dense``: the full-size masks,
as torchvision's).

Run alone (no pytest): ``python benchmarks/bench_dense.py [--k 10 1000] [--no-infer]`` prints
the same table.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IMAGE_SIZE = 1024
KS = (10, 100, 1000, 3000)
SIZE_RANGE = (6 / IMAGE_SIZE, 14 / IMAGE_SIZE)  # half-extent 6-14 px
DATA_SEED = 0
INFER_K = 3000
INFER_DETS = 3000
GIB = 1 << 30
CAP_ENV = "MF_DENSE_RSS_CAP_GB"
FLOOR_ENV = "MF_DENSE_MIN_AVAILABLE_GB"
TIMEOUT_ENV = "MF_DENSE_TIMEOUT_S"
RESULT_ENV = "MF_DENSE_RESULT"  # where a child writes its JSON measurements
MASKS_ENV = "MF_DENSE_MASKS"  # ours: auto (packed where the data set has it), packed or dense
IMPLS = ("fused", "torchvision")

__all__ = ["run_capped", "rss_cap", "proc_status", "mem_available", "case_command", "run_case"]


# ---- the child-process harness -----------------------------------------------------------------

def _env_float(name, default):
    v = os.environ.get(name, "").strip()
    try:
        return float(v) if v else float(default)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {v!r}") from None


def rss_cap() -> int:
    """The resident-set cap of a case in bytes: MF_DENSE_RSS_CAP_GB GiB, default 16."""
    return int(_env_float(CAP_ENV, 16) * GIB)


def proc_status(pid) -> dict:
    """{'VmRSS': bytes, 'VmHWM': bytes, ...} of /proc/<pid>/status ({} once it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if key.startswith("Vm") and len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def mem_available() -> int:
    """The machine's MemAvailable in bytes (a large number where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def run_capped(cmd, cap_bytes, *, min_available=None, timeout_s=None, env=None, poll_s=0.02, cwd=None) -> dict:
    """Runs ``cmd`` (argv) as a child process and watches its resident set.

    The child is killed (SIGKILL) when its VmRSS passes ``cap_bytes``, when the machine's
    MemAvailable falls below ``min_available`` bytes (default MF_DENSE_MIN_AVAILABLE_GB, 1.5
    GiB), or after ``timeout_s`` seconds. The child finds in its environment ``MF_DENSE_RESULT``,
    a path where it may write a JSON object of its own measurements.

    Returns a dict: ``status`` "ok" (exit 0), "out of memory" (killed at the cap or for the
    machine; also a SIGKILL from elsewhere, e.g. the kernel's OOM killer), "timeout" or "failed"
    (another exit status); ``returncode``; ``peak_rss`` (bytes, the child's largest resident set:
    its VmHWM, the larger of the last one polled and the ``vmhwm`` its JSON reports; not wait4's
    ru_maxrss, which on Linux carries the parent's high-water mark over the child's exec, so a
    large parent, a long pytest run say, would show as the child's peak); ``rss_at_kill`` (bytes, the resident set when it
    was killed, else None); ``reason`` (why it was killed, else None); ``wall_s``; ``result``
    (the child's JSON, or None); ``log`` (the last 2,000 characters of its stdout and stderr).
    """
    if min_available is None:
        min_available = int(_env_float(FLOOR_ENV, 1.5) * GIB)
    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="mf_dense_") as tmp:
        result_path = os.path.join(tmp, "result.json")
        log_path = os.path.join(tmp, "log.txt")
        env[RESULT_ENV] = result_path
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:  # the kernel's OOM killer takes this child first, never a neighbour's process
            with open(f"/proc/{proc.pid}/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        rss_at_kill, reason, status, hwm = None, None, None, 0
        try:
            while True:
                pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                now = proc_status(proc.pid)
                rss = now.get("VmRSS", 0)
                hwm = max(hwm, now.get("VmHWM", 0))
                avail = mem_available()
                if rss > cap_bytes:
                    reason = f"resident set {rss / GIB:.2f} GiB passed the cap of {cap_bytes / GIB:.2f} GiB"
                elif avail < min_available:
                    reason = (f"the machine's available memory fell to {avail / GIB:.2f} GiB (floor "
                              f"{min_available / GIB:.2f} GiB) at a resident set of {rss / GIB:.2f} GiB")
                elif timeout_s is not None and time.perf_counter() - t0 > timeout_s:
                    reason = f"timeout after {timeout_s:.0f} s"
                if reason:
                    rss_at_kill = rss
                    os.kill(proc.pid, signal.SIGKILL)
                    _, status, _ = os.wait4(proc.pid, 0)
                    break
                time.sleep(poll_s)
        except BaseException:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                proc.returncode = -9
            raise
        wall = time.perf_counter() - t0
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        result = None
        if os.path.isfile(result_path):
            try:
                with open(result_path) as f:
                    result = json.load(f)
            except (OSError, json.JSONDecodeError):
                result = None
        peak = max(hwm, int((result or {}).get("vmhwm") or 0))
        if reason and reason.startswith("timeout"):
            state = "timeout"
        elif reason or rc == -signal.SIGKILL:
            state = "out of memory"
            if not reason:
                reason = f"killed by SIGKILL from outside (the kernel's OOM killer?) at a peak of {peak / GIB:.2f} GiB"
                rss_at_kill = peak
        else:
            state = "ok" if rc == 0 else "failed"
        with open(log_path, "rb") as f:
            log_text = f.read().decode("utf-8", "replace")[-2000:]
    return {"status": state, "returncode": rc, "peak_rss": peak, "rss_at_kill": rss_at_kill, "reason": reason,
            "wall_s": wall, "result": result, "log": log_text}


# ---- the cases, as child processes ------------------------------------------------------------

def case_command(mode, impl, k):
    """argv of one case's child: ``python benchmarks/bench_dense.py --child MODE IMPL K``."""
    return [sys.executable, os.path.join(HERE, "bench_dense.py"), "--child", mode, impl, str(k)]


def run_case(mode, impl, k) -> dict:
    """One case in a capped child; the returned dict (run_capped's, without the log unless the
    child failed) is what extra_info['dense'] records."""
    env = dict(os.environ)
    env.setdefault("MASKRCNN_FAST_CHANNELS_LAST", "0")
    # the package of this checkout, as `python -m pytest benchmarks` from its root imports it
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cap = rss_cap()
    out = run_capped(case_command(mode, impl, k), cap, env=env, timeout_s=_env_float(TIMEOUT_ENV, 1800), cwd=ROOT)
    out.update(mode=mode, impl=impl, k=k, cap=cap, channels_last=env["MASKRCNN_FAST_CHANNELS_LAST"])
    if out["status"] == "ok":
        out.pop("log")
    return out


def _torchvision_model(**kwargs):
    import torchvision
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    trunk = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
    return torchvision.models.detection.MaskRCNN(_resnet_fpn_extractor(trunk, 3), num_classes=91, **kwargs)


def _model(impl, kwargs):
    import torch

    torch.manual_seed(0)
    tv = _torchvision_model(**kwargs)
    if impl == "torchvision":
        return tv
    from maskrcnn_fast.models import maskrcnn_resnet50_fpn

    state = tv.state_dict()
    del tv
    # a trunk state_dict makes the builder take the pretrained-backbone configuration
    trunk = {k[len("backbone.body."):]: v for k, v in state.items() if k.startswith("backbone.body.")}
    trunk |= {"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    model = maskrcnn_resnet50_fpn(ops=impl, weights_backbone=trunk, **kwargs)
    model.load_state_dict(state)
    return model


def _data(impl, k, image_size=IMAGE_SIZE):
    """(image, target) of the K-shape image; ours asks for the compact masks where the data
    set offers them. -> (image, target, mask format)."""
    import inspect

    from maskrcnn_fast.data import SyntheticShapes

    kw = dict(image_size=image_size, min_shapes=k, max_shapes=k, seed=DATA_SEED,
              size_range=SIZE_RANGE if image_size == IMAGE_SIZE else (0.05, 0.1))
    fmt = "dense"
    want = os.environ.get(MASKS_ENV, "auto").strip() or "auto"
    if want not in ("auto", "packed", "dense"):
        raise ValueError(f"{MASKS_ENV} must be auto, packed or dense, got {want!r}")
    if impl != "torchvision" and want != "dense" and "mask_format" in inspect.signature(SyntheticShapes).parameters:
        kw["mask_format"] = fmt = "packed"
    image, target = SyntheticShapes(1, **kw)[0]
    return image, {key: target[key] for key in ("boxes", "labels", "masks")}, fmt


def _vm():
    s = proc_status("self")
    return {"vmrss": s.get("VmRSS"), "vmhwm": s.get("VmHWM")}


def _child_train(impl, k):
    import torch

    model = _model(impl, {}).train()
    # warm-up: one iteration on a small image (threads, allocator, library set-up), cheap
    small, small_t, _ = _data(impl, 4, image_size=256)
    sizes = model.transform.min_size, model.transform.max_size
    model.transform.min_size, model.transform.max_size = (256,), 256
    torch.manual_seed(0)
    sum(model([small], [small_t]).values()).backward()
    model.zero_grad(set_to_none=True)
    model.transform.min_size, model.transform.max_size = sizes
    del small, small_t

    t0 = time.perf_counter()
    image, target, fmt = _data(impl, k)
    data_s = time.perf_counter() - t0
    before = _vm()
    torch.manual_seed(0)  # the same sampled anchors and proposals for every impl
    t0 = time.perf_counter()
    losses = model([image], [target])
    sum(losses.values()).backward()
    iter_s = time.perf_counter() - t0
    return {"time_s": iter_s, "data_s": data_s, "mask_format": fmt, "instances": int(target["labels"].numel()),
            "losses": {name: float(v.detach()) for name, v in losses.items()}, "rss_before": before["vmrss"],
            **_vm()}


def _child_infer(impl, k):
    """Inference to binary masks: torchvision's D x 1 x H x W probabilities thresholded one
    detection at a time; ours, where the model offers it (``paste_masks_in_image = False``),
    each detection's box mask pasted a few at a time and cut to its extent (``mask_crops``)."""
    import torch

    kwargs = dict(box_detections_per_img=INFER_DETS, box_score_thresh=0.0, rpn_pre_nms_top_n_test=INFER_DETS,
                  rpn_post_nms_top_n_test=INFER_DETS)
    model = _model(impl, kwargs).eval()
    crops = None
    if impl != "torchvision" and hasattr(model, "paste_masks_in_image"):
        try:
            from maskrcnn_fast.models.mask_rcnn import mask_crops as crops
        except ImportError:
            crops = None
        if crops is not None:
            model.paste_masks_in_image = False
    small, _, _ = _data(impl, 4, image_size=256)
    with torch.no_grad():
        model([small])
    image, _, _ = _data("torchvision", k)  # the image only
    before = _vm()
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model([image])[0]
        model_s = time.perf_counter() - t0
        pixels = 0
        if crops is not None:
            for crop, _ in crops(out["box_masks"], out["boxes"], tuple(image.shape[-2:]),
                                 paste_masks=model.transform.paste_masks):
                pixels += int(crop.sum())
            form = "box_masks " + str(list(out["box_masks"].shape)) + ", pasted a few at a time (mask_crops)"
        else:
            for m in out["masks"]:
                pixels += int((m[0] > 0.5).sum())
            form = "masks " + str(list(out["masks"].shape)) + " " + str(out["masks"].dtype)
        iter_s = time.perf_counter() - t0
    return {"time_s": iter_s, "model_s": model_s, "detections": int(out["boxes"].shape[0]), "mask_pixels": pixels,
            "masks": form, "rss_before": before["vmrss"], **_vm()}


def _child_main(mode, impl, k):
    fn = {"train": _child_train, "infer": _child_infer}[mode]
    result = fn(impl, int(k))
    path = os.environ.get(RESULT_ENV)
    if path:
        with open(path, "w") as f:
            json.dump(result, f)
    else:
        print(json.dumps(result))


# ---- pytest-benchmark --------------------------------------------------------------------------

def _ks():
    v = os.environ.get("MF_DENSE_K", "").strip()
    return tuple(int(x) for x in v.split(",")) if v else KS


def _bench_case(benchmark, device, group, mode, impl, k):
    if str(device).startswith("cuda"):
        pytest.skip("the dense group measures host memory on the CPU")
    if mode == "train" and k not in _ks():
        pytest.skip(f"K={k} not in MF_DENSE_K")
    if mode == "infer" and os.environ.get("MF_DENSE_INFER", "1").strip() == "0":
        pytest.skip("MF_DENSE_INFER=0")
    benchmark.group = group
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["device"] = "cpu"
    out = benchmark.pedantic(run_case, args=(mode, impl, k), rounds=1, iterations=1)
    benchmark.extra_info["dense"] = out
    if out["status"] in ("failed", "timeout"):
        pytest.fail(f"{group} {impl}: {out['status']} ({out['reason'] or out['returncode']}):\n{out.get('log', '')}")


# impl varies fastest: ours and torchvision's iteration back to back, under the same load
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k", KS)
def bench_dense_train(benchmark, device, k, impl):
    _bench_case(benchmark, device, f"dense_train[K={k}]", "train", impl, k)


@pytest.mark.parametrize("impl", IMPLS)
def bench_dense_infer(benchmark, device, impl):
    _bench_case(benchmark, device, f"dense_infer[{INFER_DETS} dets]", "infer", impl, INFER_K)


# ---- standalone --------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description="the dense group without pytest: every case, then the table")
    p.add_argument("--k", type=int, nargs="+", default=list(KS))
    p.add_argument("--no-infer", action="store_true")
    p.add_argument("--json", help="also write the cases' records here (report.py reads them)")
    a = p.parse_args(argv)
    records = []
    cases = [("train", impl, k) for k in a.k for impl in IMPLS]
    if not a.no_infer:
        cases += [("infer", impl, INFER_K) for impl in IMPLS]
    for mode, impl, k in cases:
        group = f"dense_train[K={k}]" if mode == "train" else f"dense_infer[{INFER_DETS} dets]"
        out = run_case(mode, impl, k)
        print(f"{group} {impl}: {out['status']}, peak {out['peak_rss'] / GIB:.2f} GiB, "
              f"{(out['result'] or {}).get('time_s', float('nan')):.1f} s", flush=True)
        records.append({"group": group, "name": group, "stats": {"median": out["wall_s"]},
                        "extra_info": {"impl": impl, "device": "cpu", "dense": out}})
    if a.json:
        with open(a.json, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
    sys.path.insert(0, HERE)
    import report

    head, rows, notes = report.dense_table(records)
    print(report._render(head, rows))
    print("\n".join(notes))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child_main(*sys.argv[2:])
    else:
        main()
