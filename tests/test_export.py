"""torch.export of the static-shape inference and its AOTInductor .pt2 package, against the
eager model; bad inputs to both.

The .pt2 package is compiled once per session (tests/support/export.py: about a minute on 2
loaded cores, most of it g++); test_export_cpp.py runs the same package from C++.
"""
import copy

import pytest
import torch

import maskrcnn_fast
from maskrcnn_fast.deploy import DeployModel, describe, load_package, to_detections

from support.export import SIZE, assert_same_detections, compiled_package, images, small_model


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def program(model):
    return maskrcnn_fast.export(model, images(2, seed=0))


def _eager(model, batch):
    with torch.no_grad():
        return model(list(batch))


def test_program_keeps_our_ops_and_static_shapes(program):
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    ours = sorted({t for t in targets if t.startswith("maskrcnn_fast.")})
    assert ours == [
        "maskrcnn_fast.detection_postprocess.default",
        "maskrcnn_fast.multilevel_roi_align.default",
        "maskrcnn_fast.paste_masks.default",
        "maskrcnn_fast.rpn_proposals.default",
    ]
    # no data-dependent size: the only symbol is the batch size
    symbols = {str(s) for n in program.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)
               for d in n.meta["val"].shape if isinstance(d, torch.SymInt) for s in d.node.expr.free_symbols}
    assert len(symbols) == 1, symbols
    assert describe(program) == {"image_size": "120x150", "batch": "1-64", "device": "cpu", "masks": "pasted"}


@pytest.mark.parametrize("batch", [1, 3])
def test_program_equals_eager(model, program, seed, batch):
    x = images(batch, seed)
    with torch.no_grad():
        out = program.module()(x)
    boxes, labels, scores, masks, counts = out
    d = model.roi_heads.detections_per_img
    assert boxes.shape == (batch, d, 4) and masks.shape == (batch, d, *SIZE) and counts.shape == (batch,)
    assert_same_detections(to_detections(out), _eager(model, x), exact=True, mask_atol=1e-6)


def test_mask_logits_and_no_masks(model, seed):
    x = images(2, seed)
    want = _eager(model, x)
    with torch.no_grad():
        logits = DeployModel(model, SIZE, masks="logits")(x)
        none = DeployModel(model, SIZE, masks="none")(x)
    assert logits[3].shape == (2, 20, 28, 28) and none[3].shape == (2, 20, 0, 0)
    for r, w in zip(to_detections(logits, "logits"), want):
        # pasting the logits' sigmoid with the boxes gives the eager masks
        pasted = maskrcnn_fast.ops.paste_masks(r["masks"].sigmoid()[:, None], r["boxes"], SIZE)
        torch.testing.assert_close(pasted, w["masks"], atol=1e-6, rtol=0)
    assert_same_detections(to_detections(none, "none"), [{k: v for k, v in w.items() if k != "masks"} for w in want],
                           exact=True)


def test_optimized_model_exports(model, seed):
    fast = maskrcnn_fast.optimize_for_inference(model)
    x = images(2, seed)
    with torch.no_grad():
        out = maskrcnn_fast.export(fast, x, dynamic_batch=False).module()(x)
    assert_same_detections(to_detections(out), _eager(model, x), mask_atol=1e-3)


def test_pt2_package_equals_eager(model, seed):
    eager, path = compiled_package()
    pkg = load_package(path)
    assert pkg.image_size == SIZE and pkg.masks == "pasted" and pkg.batch == (1, 64)
    for batch in (1, 2):
        x = images(batch, seed + batch)
        # compiled convolutions round differently: boxes within IoU 0.99, scores 1e-4
        assert_same_detections(pkg.detections(x), _eager(eager, x), score_atol=1e-4, mask_atol=1e-3)


# ---- bad input ------------------------------------------------------------------------------


def test_export_refuses_training_mode(model):
    m = copy.deepcopy(model).train()
    with pytest.raises(RuntimeError, match=r"training mode.*model\.eval\(\)"):
        maskrcnn_fast.export(m, images(1, 0))


def test_export_refuses_images_on_another_device(model):
    x = images(1, 0).to("meta")
    with pytest.raises(ValueError, match=r"example_images are on meta but the model is on cpu.*\.to\(device\)"):
        maskrcnn_fast.export(model, x)


def test_export_refuses_bad_examples(model):
    with pytest.raises(ValueError, match="one size"):
        maskrcnn_fast.export(model, [torch.rand(3, 64, 64), torch.rand(3, 64, 80)])
    with pytest.raises(TypeError, match="floating point"):
        maskrcnn_fast.export(model, torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"Tensor\[N, 3, H, W\]"):
        maskrcnn_fast.export(model, torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="masks must be one of"):
        maskrcnn_fast.export(model, images(1, 0), masks="full")
    with pytest.raises(ValueError, match="ops='fused'"):
        from maskrcnn_fast.models import maskrcnn_resnet_fpn

        maskrcnn_fast.export(maskrcnn_resnet_fpn(18, num_classes=3, ops="torch").eval(), images(1, 0))


def test_pt2_refuses_other_sizes():
    _, path = compiled_package()
    pkg = load_package(path)
    with pytest.raises(ValueError, match=r"images are 100x150 but .* was exported for 120x150: resize them"):
        pkg(torch.rand(1, 3, 100, 150))
    with pytest.raises(ValueError, match="takes 1 to 64"):
        pkg(torch.rand(65, 3, *SIZE))
    with pytest.raises(TypeError, match="float32"):
        pkg(torch.rand(1, 3, *SIZE, dtype=torch.float64))
    with pytest.raises(FileNotFoundError):
        load_package(path + ".missing.pt2")
