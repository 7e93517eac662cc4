"""Command line: bad arguments end in one clear line; predict, eval and bench do their work."""
import json
import os
import subprocess
import sys

import pytest
import torch

from maskrcnn_fast import cli
from maskrcnn_fast.data.images import load_image
from support import needs_pycocotools
from support.cli import cli_fails
from support.models import TinyShapes, tiny_model, tiny_model_args


def write_png(img, path):
    """uint8 Tensor[3, H, W] -> PNG file."""
    from PIL import Image

    Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    ds = TinyShapes(2, jitter=False)
    for i in range(2):
        write_png((ds[i][0] * 255).to(torch.uint8), str(d / f"im{i}.png"))
    return d


def test_bad_arguments(capsys, tmp_path, tiny_checkpoint, images):
    missing = str(tmp_path / "nope.pt")
    cli_fails(capsys, ["eval", "--checkpoint", missing], "checkpoint not found")
    cli_fails(capsys, ["predict", str(images), "--checkpoint", missing], "checkpoint not found")
    cli_fails(capsys, ["predict", str(tmp_path / "nope.png"), "--checkpoint", tiny_checkpoint], "input not found")
    cli_fails(capsys, ["train", "--dataset", "imagenet", "--device", "cpu"], "unknown dataset 'imagenet'")
    cli_fails(capsys, ["train", "--dataset", "coco", "--device", "cpu"], "--data-path")
    cli_fails(capsys, ["train", "--dataset", "coco", "--data-path", str(tmp_path), "--ann-file", missing,
                       "--device", "cpu"], "annotation file not found")
    cli_fails(capsys, ["train", "--resume", missing, "--device", "cpu"], "--resume: checkpoint not found")
    cli_fails(capsys, ["train", "--depth", "19"], "invalid choice")
    cli_fails(capsys, ["train", "--epochs", "2", "--iterations", "3"], "not allowed with")
    cli_fails(capsys, ["frobnicate"], "invalid choice")
    cli_fails(capsys, [], "required")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    cli_fails(capsys, ["predict", str(bad), "--checkpoint", tiny_checkpoint, "--device", "cpu"], "cannot read image")
    cli_fails(capsys, ["predict", str(images), "--checkpoint", tiny_checkpoint, "--num-classes", "91",
                       "--device", "cpu"],
              "has 4 classes")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\0" * 64)
    cli_fails(capsys, ["predict", str(images), "--checkpoint", str(junk), "--device", "cpu"], "cannot read checkpoint")
    if not torch.cuda.is_available():
        cli_fails(capsys, ["predict", str(images), "--checkpoint", tiny_checkpoint, "--device", "cuda"],
                  "no CUDA device")
        cli_fails(capsys, ["train", "--amp", "--device", "cpu"], "--amp needs a CUDA device")


def test_coco_commands_name_pycocotools_when_it_is_missing(monkeypatch, capsys, tmp_path, tiny_checkpoint, images):
    for name in ("pycocotools", "pycocotools.mask", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # as where it is not installed
    need = "needs pycocotools, which is not installed (pip install pycocotools)"
    cli_fails(capsys, ["eval", "--checkpoint", tiny_checkpoint, "--dataset", "synthetic", "--num-images", "2",
                       "--device", "cpu"],
              "eval " + need)
    cli_fails(capsys, ["predict", str(images), "--checkpoint", tiny_checkpoint, "--output-dir", str(tmp_path / "p"),
                       "--device", "cpu"], need)
    assert not (tmp_path / "p").exists()
    cli_fails(capsys, ["train", *_SMALL, "--iterations", "1", "--eval-at-end", "--output-dir", str(tmp_path / "t")],
              "train --eval-at-end " + need)
    assert not (tmp_path / "t").exists()  # refused before training
    (tmp_path / "img").mkdir()
    (tmp_path / "ann.json").write_text('{"images": [], "annotations": [], "categories": []}')
    cli_fails(capsys, ["train", "--dataset", "coco", "--data-path", str(tmp_path / "img"), "--ann-file",
                       str(tmp_path / "ann.json"), "--device", "cpu"], need)
    # bad arguments still come first
    cli_fails(capsys, ["eval", "--checkpoint", str(tmp_path / "nope.pt")], "checkpoint not found")


def test_bad_argument_in_a_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "maskrcnn_fast", "eval", "--checkpoint", str(tmp_path / "x.pt")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == f"maskrcnn-fast: error: --checkpoint: checkpoint not found: {tmp_path / 'x.pt'}"


def _check_outputs(out, names):
    for n in names:
        assert (out / f"{n}.png").stat().st_size > 0
        rec = json.loads((out / f"{n}.json").read_text())
        assert rec["height"] == rec["width"] == 64
        for d in rec["detections"]:
            assert d["score"] >= 0.0 and len(d["box"]) == 4 and d["label_name"] in TinyShapes.classes + ["a", "b", "c"]
            assert "segmentation" in d and d["segmentation"]["size"] == [64, 64]


@needs_pycocotools
def test_predict_writes_png_and_json(tmp_path, capsys, tiny_checkpoint, images):
    out = tmp_path / "out"
    rc = cli.main(["predict", str(images), "--checkpoint", tiny_checkpoint, "--output-dir", str(out),
                   "--score-thresh", "0",
                   "--device", "cpu", "--no-progress"])
    assert rc == 0
    _check_outputs(out, ["im0", "im1"])
    assert load_image(str(out / "im0.png")).shape == (3, 64, 64)
    assert capsys.readouterr().out.count("detections ->") == 2


@needs_pycocotools
def test_predict_plain_state_dict(tmp_path, tiny_checkpoint, images):
    # a torchvision-style .pth: a bare state_dict; depth and classes come from its tensors
    sd = tmp_path / "weights.pth"
    torch.save(torch.load(tiny_checkpoint, weights_only=True)["model"], sd)
    out = tmp_path / "out"
    rc = cli.main(["predict", str(images / "im1.png"), "--checkpoint", str(sd), "--output-dir", str(out),
                   "--min-size", "64", "--max-size", "64", "--score-thresh", "0", "--device", "cpu"])
    assert rc == 0
    assert (out / "im1.png").exists() and (out / "im1.json").exists()
    # torchvision's reference scripts: {"model", "optimizer", ..., "args": argparse.Namespace}
    import argparse

    ref = tmp_path / "model_25.pth"
    torch.save({"model": torch.load(sd, weights_only=True), "optimizer": {}, "epoch": 25,
                "args": argparse.Namespace(lr=0.02, data_path="/coco")}, ref)
    rc = cli.main(["predict", str(images / "im0.png"), "--checkpoint", str(ref), "--output-dir", str(out),
                   "--min-size", "64", "--max-size", "64", "--device", "cpu"])
    assert rc == 0 and (out / "im0.json").exists()


def test_infer_depth():
    for depth in (18, 50):
        from maskrcnn_fast.models import maskrcnn_resnet_fpn

        keys = maskrcnn_resnet_fpn(depth, num_classes=2).state_dict()
        assert cli.infer_depth(keys) == depth


@needs_pycocotools
def test_eval_prints_table(tmp_path, capsys, tiny_checkpoint):
    pytest.importorskip("maskrcnn_fast.data", reason="needs SyntheticShapes")
    js = tmp_path / "eval.json"
    rc = cli.main(["eval", "--checkpoint", tiny_checkpoint, "--dataset", "synthetic", "--num-images", "2",
                   "--device", "cpu", "--no-progress", "--output-json", str(js)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "AP50" in out and "bbox" in out and "segm" in out
    assert js.exists()


def test_bench_runs_what_make_bench_runs(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, cwd=None: calls.append((cmd, cwd)) or 0)
    assert cli.main(["bench", "--out", str(tmp_path), "-k", "nms"]) == 0
    (pytest_cmd, cwd), (report_cmd, _) = calls
    assert cwd == ROOT
    assert pytest_cmd[1:] == ["-m", "pytest", "benchmarks", "-q", "-o", "python_files=bench_*.py",
                              "-o", "python_functions=bench_*", "--benchmark-only",
                              f"--benchmark-json={tmp_path}/bench.json", "--benchmark-columns=median,iqr,rounds",
                              "--benchmark-sort=name", "-k", "nms"]
    assert report_cmd[1:] == ["benchmarks/report.py", f"{tmp_path}/bench.json", "--out", str(tmp_path)]


@needs_pycocotools
def test_train_then_eval_on_a_coco_folder(tmp_path, capsys):
    from support.coco import make_coco_folder

    root, ann, _ = make_coco_folder(tmp_path / "coco")
    out = tmp_path / "run"
    data = ["--dataset", "coco", "--data-path", str(root), "--ann-file", str(ann)]
    model = ["--min-size", "64", "--max-size", "64", "--model-arg", "rpn_batch_size_per_image=64",
             "--model-arg", "box_batch_size_per_image=32", "--device", "cpu", "--no-progress"]
    rc = cli.main(["train", *data, *model, "--depth", "18", "--iterations", "2", "--batch-size", "1",
                   "--workers", "0", "--lr", "0.001", "--output-dir", str(out), "--seed", "3"])
    assert rc == 0, capsys.readouterr().err
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["iteration"] == 2
    assert ck["model_args"]["num_classes"] == 4 and ck["model_args"]["depth"] == 18
    assert ck["model_args"]["classes"][1:] == ["circle", "blob", "square"]
    capsys.readouterr()
    rc = cli.main(["eval", "--checkpoint", str(out), *data, *model])
    assert rc == 0
    assert "segm" in capsys.readouterr().out


def test_help_of_every_command(capsys):
    for argv in ([], ["train"], ["eval"], ["predict"], ["bench"]):
        assert cli.main([*argv, "--help"]) == 0
        assert "usage: maskrcnn-fast" in capsys.readouterr().out


def test_synthetic_pngs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "maskrcnn_fast.data", "--out", str(tmp_path), "--num", "2",
                        "--seed", "7", "--image-size", "48"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from maskrcnn_fast.data import SyntheticShapes

    img = load_image(str(tmp_path / "shapes_7_0001.png"))
    assert (img - SyntheticShapes(2, 48, seed=7)[1][0]).abs().max() <= 0.5 / 255 + 1e-6
    assert sorted(os.listdir(tmp_path)) == ["shapes_7_0000.png", "shapes_7_0001.png"]


# the demo's options at toy sizes: small widths, AdamW, cosine, one thread, an AP floor
_SMALL = ["--dataset", "synthetic", "--num-images", "4", "--image-size", "64", "--depth", "18",
          "--fpn-channels", "16", "--box-head-width", "32", "--mask-head-width", "8",
          "--min-size", "64", "--max-size", "64", "--anchor-sizes", "8", "16", "32", "64", "128",
          "--model-arg", "rpn_batch_size_per_image=32", "--model-arg", "box_batch_size_per_image=16",
          "--model-arg", "rpn_post_nms_top_n_train=50", "--model-arg", "rpn_post_nms_top_n_test=20",
          "--batch-size", "2", "--optimizer", "adamw", "--lr-schedule", "cosine", "--warmup-iters", "1",
          "--workers", "0", "--device", "cpu", "--no-progress", "--threads", "1"]


@needs_pycocotools
def test_train_small_model_adamw_cosine(tmp_path, capsys):
    pytest.importorskip("maskrcnn_fast.data", reason="needs SyntheticShapes")
    out = tmp_path / "run"
    rc = cli.main(["train", *_SMALL, "--iterations", "2", "--output-dir", str(out), "--eval-at-end",
                   "--val-num-images", "2", "--val-data-seed", "1000", "--min-mask-ap50", "0.99",
                   "--checkpoint-every", "1", "--keep-checkpoints"])
    cap = capsys.readouterr()
    assert rc == 1, cap.err  # two steps reach no AP50 of 0.99
    assert cap.err.strip().startswith("maskrcnn-fast: error: mask AP50 ") and "below --min-mask-ap50 0.99" in cap.err
    assert "segm" in cap.out and "adamw lr 0.001 (cosine)" in cap.out
    assert torch.get_num_threads() == 1
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["optimizer_name"] == "adamw" and ck["lr_schedule"] == "cosine" and ck["iteration"] == 2
    kw = ck["model_args"]["kwargs"]
    assert (kw["fpn_channels"], kw["box_head_width"], kw["mask_head_width"]) == (16, 32, 8)
    sd = ck["model"]
    rpn_w = [v for k, v in sd.items() if k.startswith("rpn.head.") and v.ndim == 4]
    assert rpn_w and all(v.shape[1] == 16 for v in rpn_w)
    assert sd["roi_heads.box_head.fc6.weight"].shape == (32, 16 * 7 * 7)
    assert sd["roi_heads.mask_predictor.conv5_mask.weight"].shape[:2] == (8, 8)

    # eval and predict rebuild the same model from the checkpoint alone
    model, _ = cli.model_from_checkpoint(str(out / "checkpoint.pt"))
    assert model.state_dict()["roi_heads.box_head.fc6.weight"].shape == (32, 16 * 7 * 7)
    rc = cli.main(["eval", "--checkpoint", str(out), "--dataset", "synthetic", "--num-images", "2",
                   "--device", "cpu", "--no-progress", "--min-mask-ap50", "0", "--threads", "1"])
    assert rc == 0 and "mask AP50" in capsys.readouterr().out
    imgs = tmp_path / "imgs"
    from maskrcnn_fast.data.synthetic import write_synthetic_pngs

    write_synthetic_pngs(str(imgs), 1, seed=3, image_size=64)
    rc = cli.main(["predict", str(imgs), "--checkpoint", str(out / "checkpoint.pt"), "--output-dir",
                   str(tmp_path / "pred"), "--score-thresh", "0", "--device", "cpu"])
    assert rc == 0 and (tmp_path / "pred" / "shapes_3_0000.png").exists()

    # resume: exact continuation with the same options; other widths or optimizer refused
    ck1 = str(out / "checkpoint_0000001.pt")
    capsys.readouterr()
    rc = cli.main(["train", *_SMALL, "--iterations", "2", "--output-dir", str(tmp_path / "b"), "--resume", ck1])
    assert rc == 0, capsys.readouterr().err
    wa = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    wider = list(_SMALL)
    wider[wider.index("--fpn-channels") + 1] = "32"
    cli_fails(capsys, ["train", *wider, "--iterations", "2", "--resume", ck1], "fpn-channels 16, not 32")
    sgd = [a for a in _SMALL if a not in ("--optimizer", "adamw")]
    cli_fails(capsys, ["train", *sgd, "--iterations", "2", "--resume", ck1], "optimizer adamw, not sgd")


def test_bad_new_train_arguments(capsys):
    cli_fails(capsys, ["train", "--threads", "0", "--device", "cpu"], "--threads must be >= 1")
    cli_fails(capsys, ["train", "--optimizer", "adam"], "invalid choice")
    cli_fails(capsys, ["train", "--lr-schedule", "cosine", "--lr-steps", "3", "--device", "cpu"], "--lr-steps applies")
    cli_fails(capsys, ["train", "--min-mask-ap50", "0.7", "--device", "cpu"], "needs --eval-at-end")
    cli_fails(capsys, ["train", "--max-dets", "100", "300", "--device", "cpu"], "--max-dets needs --eval-at-end")
    cli_fails(capsys, ["train", "--max-dets", "300", "100", "--eval-at-end", "--device", "cpu"],
              "--max-dets must be increasing")
    cli_fails(capsys, ["train", "--max-dets", "0", "--eval-at-end", "--device", "cpu"], "--max-dets must be >= 1")
    cli_fails(capsys, ["train", "--fpn-channels", "0", "--depth", "18", "--num-images", "2", "--iterations", "1",
                       "--device", "cpu"], "fpn-channels must be a positive integer")


# ---- checked before the work -----------------------------------------------------------------------
def test_errors_name_the_option(capsys):
    base = ["train", "--num-images", "2", "--device", "cpu"]
    for argv, match in [
        (["--lr", "0"], "--lr must be > 0, got 0"),
        (["--lr", "-0.1"], "--lr must be > 0, got -0.1"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--momentum", "-1"], "--momentum must be >= 0"),
        (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
        (["--warmup-factor", "0"], "--warmup-factor must be in (0, 1]"),
        (["--clip-grad-norm", "0"], "--clip-grad-norm must be > 0"),
        (["--image-size", "4"], "--image-size must be >= 8"),
        (["--min-size", "0"], "--min-size must be >= 1"),
        (["--lr-steps", "0", "3"], "--lr-steps must be >= 1 (each), got 0"),
        (["--iterations", "0"], "--iterations must be >= 1"),
        (["--eval-at-end", "--min-mask-ap50", "70"], "--min-mask-ap50 must be in [0, 1] (AP as the table prints it)"),
        (["--trainable-backbone-layers", "2"], "--trainable-backbone-layers needs --weights or --weights-backbone"),
        (["--weights", "COCO_V1", "--weights-backbone", "IMAGENET1K_V1"], "give one"),
    ]:
        cli_fails(capsys, base + argv, match)
    cli_fails(capsys, ["eval", "--checkpoint", "x.pt", "--min-mask-ap50", "1.5"], "--min-mask-ap50 must be in [0, 1]")
    cli_fails(capsys, ["eval", "--checkpoint", "x.pt", "--batch-size", "0"], "--batch-size must be >= 1")
    cli_fails(capsys, ["predict", "x.png", "--checkpoint", "x.pt", "--score-thresh", "1.5"],
              "--score-thresh must be in [0, 1], got 1.5")


def test_output_paths_fail_at_once(tmp_path, capsys, tiny_checkpoint, images):
    a_file = tmp_path / "taken"
    a_file.write_text("")
    small = ["--num-images", "2", "--image-size", "64", "--depth", "18", "--iterations", "1", "--device", "cpu"]
    cli_fails(capsys, ["train", *small, "--output-dir", str(a_file)], f"--output-dir {a_file} is a file, not a folder")
    cli_fails(capsys, ["train", *small, "--output-dir", str(a_file / "run")], "cannot write there")
    (tmp_path / "run" / "history.json").mkdir(parents=True)
    cli_fails(capsys, ["train", *small, "--output-dir", str(tmp_path / "run")], "history.json there is a folder")
    cli_fails(capsys, ["predict", str(images), "--checkpoint", tiny_checkpoint, "--output-dir", str(a_file),
                       "--device", "cpu"],
              "--output-dir")
    cli_fails(capsys, ["eval", "--checkpoint", tiny_checkpoint, "--num-images", "2", "--device", "cpu", "--output-json",
                       str(tmp_path)], "is a folder, not a file")
    # a missing folder is made before the evaluation, not found missing after it
    js = tmp_path / "new" / "deeper" / "eval.json"
    rc = cli.main(["eval", "--checkpoint", tiny_checkpoint, "--num-images", "1", "--device", "cpu", "--no-progress",
                   "--output-json", str(js)])
    assert rc == 0 and js.exists() and (js.parent / "eval.metrics.json").exists()


def _photo_args(root, ann, train=True):
    return ["--dataset", "coco", "--data-path", str(root), "--ann-file", str(ann), "--min-size", "64",
            "--max-size", "64", "--model-arg", "rpn_batch_size_per_image=32", "--model-arg",
            "box_batch_size_per_image=16", "--device", "cpu", "--no-progress"] + (
                ["--depth", "18", "--workers", "0"] if train else [])


def test_coco_folder_checked_before_training(tmp_path, capsys):
    from support.coco import make_photo_coco_folder

    root, ann = make_photo_coco_folder(tmp_path / "coco")
    args = [*_photo_args(root, ann), "--iterations", "1", "--output-dir", str(tmp_path / "run")]
    js = json.loads(ann.read_text())
    (root / "wide2.png").rename(root / "moved.png")
    cli_fails(capsys, ["train", *args], f"--data-path {root}: 1 of the 4 images {ann} lists are missing, "
                                        f"e.g. {root / 'wide2.png'}")
    (root / "moved.png").rename(root / "wide2.png")
    js["annotations"][0]["category_id"] = 4
    ann.write_text(json.dumps(js))
    cli_fails(capsys, ["train", *args], f"--ann-file {ann}: annotation 1 (image 1) has category_id 4, "
                                        "which is not in categories (ids [1, 2])")
    torch.save({"model": tiny_model(3).state_dict(), "model_args": tiny_model_args(3)}, tmp_path / "ck.pt")
    ann.write_text("{not json")
    cli_fails(capsys, ["eval", "--checkpoint", str(tmp_path / "ck.pt"), *_photo_args(root, ann, False)],
              f"--ann-file {ann}")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    ann.write_text(json.dumps({"images": js["images"], "categories": js["categories"]}))
    cli_fails(capsys, ["eval", "--checkpoint", str(tmp_path / "ck.pt"), *_photo_args(root, ann, False)],
              "has no annotations (crowd regions aside): there is no ground truth to score against")


def test_worker_error_names_the_file(tmp_path, capsys):
    from support.coco import make_photo_coco_folder

    root, ann = make_photo_coco_folder(tmp_path / "coco")
    (root / "wide2.png").write_bytes(b"not a png")  # exists, so it passes the up-front check
    args = [a if a != "0" else "1" for a in _photo_args(root, ann)]  # --workers 1
    cli_fails(capsys, ["train", *args, "--iterations", "4", "--batch-size", "1", "--aspect-ratio-group-factor",
                       "-1", "--output-dir", str(tmp_path / "run")], "wide2.png")


def test_photo_folder_trains_on_every_image(tmp_path, capsys):
    """The aspect-ratio groups are {wide, wide2}, {tall16} and {phone}: three full batches of 2
    per epoch (tall16 and phone each with itself), where dropping leftovers gave one."""
    from support.coco import make_photo_coco_folder

    from maskrcnn_fast.cli.datasets import dataset_from_args as _dataset

    root, ann = make_photo_coco_folder(tmp_path / "coco")
    out = tmp_path / "run"
    rc = cli.main(["train", *_photo_args(root, ann), "--epochs", "1", "--batch-size", "2", "--lr", "0.001",
                   "--output-dir", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.splitlines()[0] == (
        "instances.json: 4 of 5 images (1 without an annotation over 1 pixel wide and high: skipped); "
        "annotations: 1 iscrowd (not trained as objects), 2 of zero width or height inside the image (dropped), "
        "1 reaching outside the image (clipped to it)")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 3
    assert json.loads((out / "history.json").read_text())[0]["epoch"] == 1
    ds = _dataset(cli.make_parser().parse_args(["train", *_photo_args(root, ann)]), train=True)
    assert all(ds[i][1]["iscrowd"].sum() == 0 for i in range(len(ds)))  # crowd regions are not objects


def test_eval_model_that_predicts_category_ids(tmp_path, capsys):
    # torchvision's COCO models have a class per category id (91 for ids 1..90): a data set with
    # those ids is scored with them as labels rather than refused for its 80 contiguous labels
    from support.coco import make_coco_folder

    root, ann, _ = make_coco_folder(tmp_path / "coco")  # category ids 3, 5, 7
    torch.save({"model": tiny_model(8).state_dict(), "model_args": tiny_model_args(8)}, tmp_path / "ids.pt")
    rc = cli.main(["eval", "--checkpoint", str(tmp_path / "ids.pt"), "--dataset", "coco", "--data-path", str(root),
                   "--ann-file", str(ann), "--device", "cpu", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "segm" in cap.out
