"""``maskrcnn-fast export``: bad options are one line naming the option, before any work; a
tiny checkpoint exported to ONNX (about 15 s) and to a torch.export program runs and equals the
eager model. (The .pt2 format's compile is tested through the Python API: test_export.py.)"""
import importlib.util

import pytest
import torch

from maskrcnn_fast import cli

from support.cli import cli_fails
from support.export import assert_same_detections
from support.models import save_tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The tiny model keeping every detection (random weights score low)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "checkpoint.pt", args={}, box_score_thresh=0.0)


def test_bad_options(capsys, tmp_path, ckpt):
    out = str(tmp_path / "m.pt2")
    cli_fails(capsys, ["export", "--checkpoint", ckpt, "--size", "64", "--output", out], "--size must be HEIGHTxWIDTH")
    cli_fails(capsys, ["export", "--checkpoint", ckpt, "--size", "0x64", "--output", out], "--size must be")
    cli_fails(capsys, ["export", "--checkpoint", ckpt, "--size", "64x64", "--output", str(tmp_path / "m.onnx")],
              "--output must end in .pt2 for --format pt2")
    cli_fails(capsys, ["export", "--checkpoint", ckpt, "--size", "64x64", "--output", out, "--batch", "0"],
              "--batch must be in [1, 64], got 0")
    cli_fails(capsys, ["export", "--size", "64x64", "--output", out], "--checkpoint or --weights is required")
    cli_fails(capsys, ["export", "--checkpoint", ckpt, "--size", "64x64", "--output", out, "--device", "tpu"],
              "--device must be")
    cli_fails(capsys, ["export", "--checkpoint", ckpt, "--size", "64x64", "--output", out, "--format", "tflite"],
              "--format")
    cli_fails(capsys, ["export", "--checkpoint", ckpt, "--size", "64x64", "--output", str(tmp_path / "m.onnx"),
                       "--format", "onnx", "--no-freezing"], "--no-freezing applies to --format pt2 only")


def test_onnx_without_its_packages_names_them(monkeypatch, capsys, tmp_path, ckpt):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    cli_fails(capsys, ["export", "--checkpoint", ckpt, "--size", "64x64", "--format", "onnx",
                       "--output", str(tmp_path / "m.onnx")], "--format onnx needs onnxscript: pip install")


def _eager(ckpt, x):
    from maskrcnn_fast.models.builders import model_from_checkpoint

    model, _ = model_from_checkpoint(ckpt, option="--checkpoint")
    with torch.no_grad():
        return model.eval()(list(x))


def test_export_program(capsys, tmp_path, ckpt, seed):
    out = tmp_path / "m.pt2"
    assert cli.main(["export", "--checkpoint", ckpt, "--size", "64x80", "--format", "program",
                     "--output", str(out), "--device", "cpu"]) == 0
    assert "1 to 64 images of 64x80" in capsys.readouterr().out
    from maskrcnn_fast.deploy import to_detections

    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        got = to_detections(torch.export.load(str(out)).module()(x))
    assert_same_detections(got, _eager(ckpt, x), exact=True, mask_atol=1e-6)


def test_export_onnx(capsys, tmp_path, ckpt, seed):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from maskrcnn_fast.deploy.onnx import OnnxMaskRCNN

    out = tmp_path / "m.onnx"
    assert cli.main(["export", "--checkpoint", ckpt, "--size", "64x80", "--format", "onnx", "--output", str(out),
                     "--batch", "2", "--static-batch", "--device", "cpu"]) == 0
    assert "2 images of 64x80" in capsys.readouterr().out
    x = torch.rand(2, 3, 64, 80)
    assert_same_detections(OnnxMaskRCNN(str(out)).detections(x), _eager(ckpt, x), score_atol=1e-3)


def test_help(capsys):
    assert cli.main(["export", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: maskrcnn-fast export" in out and "--format" in out and "--size" in out
