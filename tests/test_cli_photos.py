"""predict on photographs as they are: EXIF orientation, 16-bit PNGs, the score threshold before
any mask is pasted, one full-size mask at a time, labels that read on any colour."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn_fast import cli
from maskrcnn_fast.data.images import read_rgb, rgb_to_tensor
from maskrcnn_fast.inference.predict import predict_image
from maskrcnn_fast.inference.visualize import Canvas, class_colors, detections_to_records, select_detections


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return cli.model_from_checkpoint(tiny_checkpoint)[0]


def _photo(seed, h=48, w=64):
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
        img[y : y + 14, x : x + 14] = rng.integers(0, 256, 3)
    return img


def test_exif_rotated_jpeg_predicted_upright(tmp_path, tiny_checkpoint, capsys):
    exif = Image.Exif()
    exif[0x0112] = 8  # stored landscape, shown portrait (turned 90 degrees counter-clockwise)
    Image.fromarray(_photo(0, 30, 40)).save(tmp_path / "phone.jpg", exif=exif)
    out = tmp_path / "out"
    rc = cli.main(["predict", str(tmp_path / "phone.jpg"), "--checkpoint", tiny_checkpoint, "--output-dir", str(out),
                   "--score-thresh", "0", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    rec = json.loads((out / "phone.json").read_text())
    assert (rec["height"], rec["width"]) == (40, 30)
    assert Image.open(out / "phone.png").size == (30, 40)
    for d in rec["detections"]:
        assert d["segmentation"]["size"] == [40, 30]


def test_16_bit_png_is_not_white(tmp_path, model):
    gray = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)  # up to 64491 of 65535
    Image.fromarray(gray).save(tmp_path / "deep.png")
    rgb = read_rgb(str(tmp_path / "deep.png"))
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a: seen.append(a[0][0].clone()))
    try:
        picture, _ = predict_image(model, rgb, score_thresh=1.0)
    finally:
        hook.remove()
    want = torch.from_numpy(gray.astype(np.float32) / 65535)
    for c in range(3):
        torch.testing.assert_close(seen[0][c], want)
    # drawn in 8 bits: v * 255 / 65535, rounded
    assert np.array_equal(picture[:, :, 0], np.round(gray.astype(np.float64) * 255 / 65535).astype(np.uint8))


@pytest.mark.parametrize("max_paste_bytes", [1, 48 * 64 * 3, 1 << 25])
def test_threshold_before_paste_same_detections(model, seed, max_paste_bytes):
    """Pasting a few masks at a time (uint8, at most max_paste_bytes of them, one at least)
    after an in-model threshold gives exactly the records and the picture of the model's full
    output (pasted float masks) thresholded afterwards, and pastes only those above it."""
    rgb = _photo(seed)
    with torch.inference_mode():
        full = model([rgb_to_tensor(rgb)])[0]
    middle = float(full["scores"][len(full["scores"]) // 2])  # a score itself: kept (>=) by both
    per = max(1, max_paste_bytes // (48 * 64))
    for thresh in (0.0, middle, 1.0):
        kept = select_detections(full, thresh)
        want = detections_to_records(kept, None)
        calls = []
        paste = model.transform.paste_masks

        def spy(masks, boxes, size, threshold=None):
            calls.append(masks.shape[0])
            out = paste(masks, boxes, size, threshold=threshold)
            assert out.dtype == torch.uint8  # never a float plane
            return out

        model.transform.paste_masks = spy
        try:
            picture, got = predict_image(model, rgb, score_thresh=thresh, max_paste_bytes=max_paste_bytes)
        finally:
            model.transform.paste_masks = paste
        assert got == want and (thresh != middle or 0 < len(want) < len(full["scores"]))
        n = len(want)  # chunks of `per`, only those above the threshold
        assert calls == [per] * (n // per) + ([n % per] if n % per else [])
        canvas = Canvas(rgb)
        palette = class_colors(max([lab + 1 for lab in kept["labels"].tolist()], default=1))
        for m, lab in zip(kept["masks"], kept["labels"].tolist()):
            canvas.add_mask(m[0] > 0.5, palette[lab])
        for rec in want:
            canvas.add_box(rec["box"], palette[rec["label"]], f"{rec['label_name']} {rec['score']:.2f}")
        assert np.array_equal(picture, canvas.array())
    assert model.roi_heads.score_thresh == 0.05  # restored
    assert model.paste_masks_in_image  # restored


def test_no_detection_said_and_images_one_at_a_time(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    for i in range(3):
        Image.fromarray(_photo(i)).save(tmp_path / f"p{i}.png")
    import maskrcnn_fast.inference.predict as predict

    decoded, alive = [], []
    real = predict.read_rgb

    def counting(path, **kw):
        decoded.append(path)
        alive.append(len(decoded) - len(finished))
        return real(path, **kw)

    finished = []
    real_write = predict.write_outputs
    monkeypatch.setattr(predict, "read_rgb", counting)
    monkeypatch.setattr(predict, "write_outputs", lambda *a, **k: finished.append(1) or real_write(*a, **k))
    rc = cli.main(["predict", str(tmp_path), "--checkpoint", tiny_checkpoint, "--output-dir", str(tmp_path / "out"),
                   "--score-thresh", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("no detection scores >= 1 (--score-thresh)") == 3
    assert len(decoded) == 3 and alive == [1, 1, 1]  # decoded one at a time, after the previous was written


def test_labels_on_filled_background_sized_to_image():
    color = class_colors(4)[2]
    sizes = {}
    for side in (64, 1200):
        c = Canvas(np.zeros((side, side, 3), np.uint8))
        c.add_box([side / 4, side / 2, side / 2, 3 * side / 4], color, "label 0.99")
        img = c.array()
        # the label sits above the box, on its class colour, with light or dark text on it
        above = img[: int(side / 2), :]
        filled = np.all(above == np.array(color, np.uint8), axis=2)
        rows = np.nonzero(filled.any(1))[0]
        sizes[side] = rows.max() - rows.min() + 1
        label = above[rows.min() : rows.max() + 1, int(side / 4) : int(side / 4) + 5]
        assert filled[rows.min() : rows.max() + 1, int(side / 4)].all()
        assert (np.abs(img.astype(int) - np.array(color)).sum(2) > 200).any()  # the text
        assert label.size
    assert sizes[1200] >= 2 * sizes[64]
    # dark text on a light colour, light text on a dark one
    from maskrcnn_fast.inference.visualize import _text_color

    assert _text_color((250, 250, 80)) == (0, 0, 0) and _text_color((20, 20, 120)) == (255, 255, 255)


def _peak_of_predict(photo, tiny_checkpoint, out):
    """VmHWM (bytes) over ``predict photo``, counted from the RSS when it starts."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # restart VmHWM, the peak, from the current RSS
    rc = cli.main(["predict", str(photo), "--checkpoint", tiny_checkpoint, "--score-thresh", "0", "--device", "cpu",
                   "--output-dir", str(out), "--model-arg", "box_detections_per_img=40"])
    assert rc == 0
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM"))) * 1024


def test_peak_memory_is_one_image_not_one_per_detection(tmp_path, tiny_checkpoint):
    """docs/cli.md's bound (Memory): predict holds about 40 bytes per photo pixel more than on a small
    photo, whatever the number of detections. The model's own output would hold 4 bytes per
    pixel per detection (40 detections here: 960 MB); the bound tested is 48 bytes per pixel
    plus 100 MB. The same command on a small photo is the baseline: the model's loading peaks
    alike in both."""
    import os

    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc peak-memory counters")
    h, w = 2000, 3000
    y, x = np.mgrid[:h, :w]
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], 2).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(img[:64, :96]).save(tmp_path / "small.jpg", quality=90)
    del img, x, y
    out = tmp_path / "out"
    small = _peak_of_predict(tmp_path / "small.jpg", tiny_checkpoint, out)  # first: imports and pools in place
    extra = _peak_of_predict(tmp_path / "big.jpg", tiny_checkpoint, out) - small
    n = len(json.loads((out / "big.json").read_text())["detections"])
    assert n == 40  # the untrained model scores every box alike: the worst case
    assert extra < 48 * h * w + 100 * 2**20, f"{extra / 2**20:.0f} MiB more than on a small photo"
