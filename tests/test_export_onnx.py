"""ONNX export in standard operators, run by ONNX Runtime (CPU), against the eager model.

Skips when onnx, onnxscript or onnxruntime is missing (`pip install maskrcnn_fast[export]`).
Synthetic images (fresh seeds) at the export size, and three photographs: matplotlib's sample
photo grace_hopper.jpg (the only real photograph installed with the test dependencies) whole,
its face and its lower half mirrored, each resized to 240x320 (the model resizes them to
120x160 inside the graph). Small seeded model (tests/support/export.py); about 40 s.
"""
import importlib.util
import os

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from maskrcnn_fast.deploy.onnx import OnnxMaskRCNN, export_onnx, require  # noqa: E402
from maskrcnn_fast.deploy.onnx_ops import OPSET  # noqa: E402

from support.export import SIZE, assert_same_detections, images, small_model  # noqa: E402

PHOTO_SIZE = (240, 320)


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    return export_onnx(model, str(tmp_path_factory.mktemp("onnx") / "small.onnx"), images(2, seed=0))


def _photos():
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = Image.open(f).convert("RGB")
    w, h = photo.size
    crops = [photo, photo.crop((w // 4, 0, 3 * w // 4, h // 2)),
             photo.crop((0, h // 2, w, h)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    sized = [np.asarray(c.resize(PHOTO_SIZE[::-1], Image.Resampling.BILINEAR), dtype=np.float32) / 255 for c in crops]
    return torch.from_numpy(np.stack(sized)).permute(0, 3, 1, 2).contiguous()


def _eager(model, batch):
    with torch.no_grad():
        return model(list(batch))


def test_graph_has_standard_operators_only(onnx_path):
    graph = onnx.load(onnx_path)
    onnx.checker.check_model(graph)
    assert [(o.domain, o.version) for o in graph.opset_import] == [("", OPSET)]
    assert not graph.functions
    ops = {n.op_type for n in graph.graph.node}
    assert {"RoiAlign", "NonMaxSuppression", "TopK", "Conv"} <= ops
    assert all(n.domain == "" for n in graph.graph.node)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_equals_eager(model, onnx_path, seed, batch):
    session = OnnxMaskRCNN(onnx_path)
    assert session.image_size == SIZE and session.masks == "pasted"
    x = images(batch, seed)
    # ONNX Runtime's convolutions round differently: same labels, boxes of IoU > 0.99,
    # scores within 1e-3, pasted masks within 1e-3
    assert_same_detections(session.detections(x), _eager(model, x), score_atol=1e-3, mask_atol=1e-3)


def test_onnxruntime_on_photographs(model, tmp_path):
    x = _photos()
    path = export_onnx(model, str(tmp_path / "photo.onnx"), x[:1])
    assert_same_detections(OnnxMaskRCNN(path).detections(x), _eager(model, x), score_atol=1e-3, mask_atol=1e-3)


def test_logits_graph(model, tmp_path, seed):
    x = images(2, seed)
    path = export_onnx(model, str(tmp_path / "logits.onnx"), x, masks="logits", dynamic_batch=False)
    session = OnnxMaskRCNN(path)
    assert session.masks == "logits"
    boxes, labels, scores, masks, counts = session(x)
    assert masks.shape == (2, 20, 28, 28)
    want = _eager(model, x)
    assert_same_detections(session.detections(x), [{k: v for k, v in w.items() if k != "masks"} for w in want],
                           score_atol=1e-3)


def test_session_refuses_other_sizes(onnx_path):
    session = OnnxMaskRCNN(onnx_path)
    with pytest.raises(ValueError, match=r"images are 100x150 but .* exported for 120x150: resize them to 120x150"):
        session(torch.rand(1, 3, 100, 150))
    with pytest.raises(TypeError, match="float32"):
        session(np.zeros((1, 3, *SIZE)))


def test_missing_optional_dependency_is_named(model, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ImportError, match=r"onnxruntime is needed for ONNX: pip install 'maskrcnn_fast\[export\]'"):
        OnnxMaskRCNN(os.path.join(tmp_path, "x.onnx"))
    with pytest.raises(ImportError, match="onnxruntime"):
        require("onnx", "onnxruntime")


def test_export_onnx_refuses_training_mode(model, tmp_path):
    import copy

    with pytest.raises(RuntimeError, match=r"model\.eval\(\)"):
        export_onnx(copy.deepcopy(model).train(), str(tmp_path / "t.onnx"), images(1, 0))
