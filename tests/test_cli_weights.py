"""Pretrained weights on the command line: torchvision's names or files, torch hub's cache, one
line when a download is impossible, batch-norm eps from the weights' content, never their name.

No test reaches the network: torch hub's folder is a temporary one, filled with locally made
files named as torchvision's downloads, or its download is made to fail.
"""
import argparse
import hashlib
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.ops.misc import FrozenBatchNorm2d

from maskrcnn_fast import cli
from maskrcnn_fast import weights
from maskrcnn_fast.models import builders, maskrcnn_resnet50_fpn
from support.models import tiny_model

COCO_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
# the demo's small model on 4 synthetic 64x64 images
_SMALL = ["--dataset", "synthetic", "--num-images", "2", "--image-size", "64", "--min-size", "64",
          "--max-size", "64", "--anchor-sizes", "8", "16", "32", "64", "128",
          "--model-arg", "rpn_batch_size_per_image=32", "--model-arg", "box_batch_size_per_image=16",
          "--model-arg", "rpn_post_nms_top_n_train=50", "--model-arg", "rpn_post_nms_top_n_test=20",
          "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-progress", "--lr", "0.001"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch hub's checkpoints folder, empty and private to the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def offline(monkeypatch):
    def no_network(url, *a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def _one_error_line(capsys, rc, *fragments):
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "URLError" not in err
    for f in fragments:
        assert f in err, err


def test_no_network_says_which_file_and_where(hub, offline, capsys, tmp_path):
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    rc = cli.main(["predict", str(img), "--weights", "COCO_V1", "--device", "cpu", "--output-dir", str(tmp_path / "o")])
    _one_error_line(capsys, rc, "maskrcnn-fast: error: cannot download MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
                    f"fetch https://download.pytorch.org/models/{COCO_FILE} and put it in {hub}/")
    rc = cli.main(["train", *_SMALL, "--iterations", "1", "--output-dir", str(tmp_path / "r"),
                   "--weights-backbone", "ResNet50_Weights.IMAGENET1K_V1"])
    _one_error_line(capsys, rc, "cannot download ResNet50_Weights.IMAGENET1K_V1",
                    f"fetch https://download.pytorch.org/models/resnet50-0676ba61.pth and put it in {hub}/")
    with pytest.raises(weights.WeightsUnavailableError, match="fetch .*" + COCO_FILE):
        maskrcnn_resnet50_fpn(weights="DEFAULT")
    # a damaged file in the cache: say which, not how torch.load failed to unpickle it
    (hub / COCO_FILE).write_bytes(b"\0" * 10)
    rc = cli.main(["eval", "--weights", "MaskRCNN_ResNet50_FPN_Weights.COCO_V1", "--device", "cpu"])
    _one_error_line(capsys, rc, f"cannot read {hub / COCO_FILE}", "delete it")


def test_weight_names_are_checked(capsys):
    rc = cli.main(["predict", "x.png", "--weights", "COCO_V2", "--device", "cpu"])
    assert rc == 2 and "--weights: 'COCO_V2' is neither a file nor one of torchvision's" in capsys.readouterr().err
    rc = cli.main(["train", *_SMALL, "--depth", "18", "--weights-backbone", "ResNet50_Weights.IMAGENET1K_V1"])
    assert "--weights-backbone: ResNet50_Weights.IMAGENET1K_V1 are ResNet50 weights, the backbone is ResNet-18" \
        in capsys.readouterr().err and rc == 2
    rc = cli.main(["predict", "x.png", "--weights-backbone", "IMAGENET1K_V1", "--device", "cpu"])
    assert rc == 2 and "--weights-backbone: a backbone alone" in capsys.readouterr().err
    rc = cli.main(["eval", "--device", "cpu"])
    assert rc == 2 and "--checkpoint or --weights is required" in capsys.readouterr().err


def test_train_from_imagenet_backbone_in_the_cache(hub, offline, tmp_path, capsys):
    torch.manual_seed(0)
    trunk = torchvision.models.resnet18().state_dict()
    torch.save(trunk, hub / "resnet18-f37072fd.pth")  # torchvision's file name for IMAGENET1K_V1
    out = tmp_path / "run"
    rc = cli.main(["train", *_SMALL, "--depth", "18", "--iterations", "1", "--output-dir", str(out),
                   "--weights-backbone", "ResNet18_Weights.IMAGENET1K_V1", "--checkpoint-every", "1",
                   "--keep-checkpoints"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "from backbone weights ResNet18_Weights.IMAGENET1K_V1" in cap.out
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    sd = ck["model"]
    # torchvision's fine-tuning set-up: frozen batch norms, conv1 and layer1 not trained
    assert "backbone.body.bn1.num_batches_tracked" not in sd
    assert torch.equal(sd["backbone.body.conv1.weight"], trunk["conv1.weight"])
    assert torch.equal(sd["backbone.body.layer1.0.conv1.weight"], trunk["layer1.0.conv1.weight"])
    assert not torch.equal(sd["backbone.body.layer4.0.conv1.weight"], trunk["layer4.0.conv1.weight"])
    kw = ck["model_args"]["kwargs"]
    assert kw["frozen_batch_norm"] is True and kw["trainable_backbone_layers"] == 3
    # resume and predict rebuild that model from the checkpoint alone (no weights option)
    rc = cli.main(["train", *_SMALL, "--depth", "18", "--iterations", "2", "--output-dir", str(tmp_path / "b"),
                   "--resume", str(out / "checkpoint_0000001.pt")])
    assert rc == 0, capsys.readouterr().err
    model, _ = cli.model_from_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, FrozenBatchNorm2d))


def test_finetune_from_other_classes(tmp_path, capsys):
    torch.manual_seed(0)
    src = tiny_model(num_classes=6).state_dict()
    torch.save(src, tmp_path / "six.pth")
    out = tmp_path / "run"
    rc = cli.main(["train", *_SMALL, "--iterations", "1", "--output-dir", str(out), "--weights",
                   str(tmp_path / "six.pth"), "--trainable-backbone-layers", "0"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "ResNet-18 Mask R-CNN (4 classes) from --weights" in cap.out
    assert "its 6 class-dependent tensors start fresh: it has 6 classes" in cap.out
    sd = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert sd["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    body = [k for k in sd if k.startswith("backbone.body.") and not k.endswith("num_batches_tracked")]
    assert body and all(torch.equal(sd[k], src[k]) for k in body)  # no trunk layer trained
    rc = cli.main(["train", *_SMALL, "--iterations", "1", "--output-dir", str(out), "--depth", "50",
                   "--weights", str(tmp_path / "six.pth")])
    assert rc == 2 and "is a ResNet-18 model, not --depth 50" in capsys.readouterr().err


def _eps(model):
    return {m.eps for m in model.modules() if isinstance(m, FrozenBatchNorm2d)}


def test_eps_from_content_not_name(tmp_path, monkeypatch):
    from maskrcnn_fast.weights import checkpoint_eps, read_weights

    torch.manual_seed(0)
    sd = tiny_model().state_dict()
    named = tmp_path / COCO_FILE  # torchvision's name, other content: the default eps
    torch.save(sd, named)
    assert checkpoint_eps(read_weights(str(named))) is None
    renamed = tmp_path / "my_coco_model.pth"
    torch.save(sd, renamed)
    digest = hashlib.sha256(renamed.read_bytes()).hexdigest()[:8]
    # stands for torchvision's COCO_V1 file (whose sha256 starts with bf2d0c1e) under another name
    monkeypatch.setattr(weights.eps, "_ZERO_EPS_SHA256", {digest: "test"})
    assert checkpoint_eps(read_weights(str(renamed))) == 0.0
    assert checkpoint_eps(read_weights(str(renamed)), explicit=1e-3) == 1e-3  # --frozen-bn-eps
    assert _eps(cli.model_from_checkpoint(str(renamed), overrides={"min_size": 64})[0]) == {0.0}
    assert _eps(builders.maskrcnn_resnet_fpn(18, weights=str(renamed))) == {0.0}  # the API alike
    # torchvision's reference scripts, fine-tuned from COCO_V1: their args say so
    ref = tmp_path / "model_25.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model="maskrcnn_resnet50_fpn", weights="COCO_V1")}, ref)
    assert checkpoint_eps(read_weights(str(ref))) == 0.0
    torch.save({"model": sd, "args": argparse.Namespace(model="maskrcnn_resnet50_fpn", weights=None,
                                                        weights_backbone="ResNet50_Weights.IMAGENET1K_V1")}, ref)
    assert checkpoint_eps(read_weights(str(ref))) is None
    # ours keep what they were built with
    torch.save({"model": sd, "model_args": {"kwargs": {"frozen_bn_eps": 0.0}}}, ref)
    assert checkpoint_eps(read_weights(str(ref))) == 0.0


@pytest.fixture(scope="module")
def coco_v1_in_cache(tmp_path_factory):
    """A ResNet-50 91-class state_dict saved as torchvision's COCO_V1 download (random values)."""
    folder = tmp_path_factory.mktemp("torch") / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(maskrcnn_resnet50_fpn(num_classes=91).state_dict(), folder / COCO_FILE)
    return folder.parent.parent


def test_predict_with_coco_v1_from_the_cache(coco_v1_in_cache, monkeypatch, offline, tmp_path, capsys):
    monkeypatch.setenv("TORCH_HOME", str(coco_v1_in_cache))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    model, margs = cli.model_from_checkpoint("COCO_V1", overrides={"min_size": 64, "max_size": 64})
    assert _eps(model) == {0.0}  # as torchvision's builder sets for these weights
    assert margs["classes"][1] == "person" and margs["depth"] == 50
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "out"
    rc = cli.main(["predict", str(img), "--weights", "DEFAULT", "--min-size", "64", "--max-size", "64",
                   "--device", "cpu", "--output-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert (out / "a.json").exists()
