"""The annotations' sub-pixel offset: shifting probabilities, finding the shift on
validation images, and prediction applying a model's offset."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from napari_unet import label_offset
from napari_unet.checkpoint import Checkpoint, load_checkpoint
from napari_unet.config import ModelConfig, PredictConfig, TrainConfig
from napari_unet.instances import labels_from_probabilities
from napari_unet.model import UNet
from napari_unet.predict import predict
from napari_unet.progress import run
from napari_unet.train import train


def _drawn(prob: np.ndarray, offset) -> np.ndarray:
    """The class map prediction draws from ``prob`` shifted by ``offset``."""
    moved = label_offset.shift(torch.from_numpy(prob), offset).numpy()
    return labels_from_probabilities(moved, mode="semantic", threshold=0.5)


def test_shift_moves_content_by_whole_and_fractional_pixels():
    ramp = torch.arange(10, dtype=torch.float32).repeat(4, 1)  # (4, 10), value = x
    moved = label_offset.shift(ramp, (0.0, 1.0))  # out[x] = in[x - 1]
    assert torch.equal(moved[:, 1:], ramp[:, :-1])
    assert torch.equal(moved[:, 0], ramp[:, 0])  # the edge repeats
    half = label_offset.shift(ramp, (0.0, -0.5))
    assert torch.allclose(half[:, :-1], ramp[:, :-1] + 0.5)
    rows = torch.arange(6, dtype=torch.float32)[:, None].repeat(1, 3)  # value = y
    assert torch.allclose(label_offset.shift(rows, (0.25, 0.0))[1:], rows[1:] - 0.25)
    assert torch.equal(label_offset.shift(ramp, (0.0, 0.0)), ramp)


def _discs(shape=(96, 96), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fg = np.zeros(shape)
    for _ in range(12):
        cy, cx, r = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8), rng.uniform(4, 9)
        fg = np.maximum(fg, np.clip(r - np.hypot(yy - cy, xx - cx) + 0.5, 0, 1))
    return np.stack([1 - fg, fg]).astype(np.float32)


@pytest.mark.parametrize("true_offset", [(-0.5, 0.25), (1.0, 0.0), (0.0, -0.75)])
def test_estimate_finds_the_offset_of_shifted_annotations(true_offset):
    probs = [_discs(seed=s) for s in range(3)]
    truths = [_drawn(p, true_offset) for p in probs]
    found = label_offset.estimate(probs, truths, threshold=0.5)
    assert found["offset"] == list(true_offset)
    assert found["error_shifted"] < found["error"]


def test_estimate_uses_the_most_likely_class_of_multiclass_models():
    two = _discs(seed=5)
    third = np.roll(_discs(seed=6)[1], 3, axis=1) * 0.9
    prob = np.stack([two[0] * (1 - third), two[1] * (1 - third), third]).astype(np.float32)
    prob /= prob.sum(0, keepdims=True)
    truth = _drawn(prob, (0.5, -0.5))
    assert set(np.unique(truth)) == {0, 1, 2}
    found = label_offset.estimate([prob], [truth], threshold=0.5)
    assert found["offset"] == [0.5, -0.5]


def test_estimate_keeps_no_shift_for_annotations_on_the_images_grid():
    probs = [_discs(seed=s) for s in range(3)]
    truths = [(p[1] > 0.5).astype(int) for p in probs]
    found = label_offset.estimate(probs, truths, threshold=0.5)
    assert found["offset"] == [0.0, 0.0]
    assert found["error_shifted"] == found["error"]


def test_estimate_scores_only_the_labelled_regions():
    prob = _discs()
    truth = _drawn(prob, (0.0, 1.0))
    nothing = np.zeros(truth.shape, bool)
    found = label_offset.estimate([prob], [truth], [nothing], threshold=0.5)
    assert found["error"] is None and found["offset"] == [0.0, 0.0]


def _pair(padding: str, offset):
    torch.manual_seed(0)
    mc = ModelConfig(base_channels=4, depth=2, in_channels=1, n_classes=2, padding=padding)
    state = {k: v.clone() for k, v in UNet(mc).state_dict().items()}
    task = {"mode": "semantic", "target": "two_class", "n_classes": 2, "threshold": 0.5}
    norm = {"kind": "percentile", "low": 1.0, "high": 99.8}
    return (Checkpoint(config=mc, state_dict=state, task=task, normalization=norm),
            Checkpoint(config=mc, state_dict=state, task={**task, "label_offset": offset},
                       normalization=norm))


def test_prediction_shifts_by_the_models_offset():
    plain, moved = _pair("same", [0.0, 1.0])
    assert moved.label_offset == (0.0, 1.0) and plain.label_offset == (0.0, 0.0)
    image = np.random.default_rng(1).random((80, 72)).astype(np.float32)
    cfg = PredictConfig(tile_size=48)  # several tiles
    a = run(predict(plain, image, cfg, labels=False)).probabilities
    b = run(predict(moved, image, cfg, labels=False)).probabilities
    np.testing.assert_allclose(b[:, :, 1:], a[:, :, :-1], atol=1e-5)
    half = run(predict(_pair("same", [-0.5, 0.0])[1], image, cfg, labels=False)).probabilities
    np.testing.assert_allclose(half[:, :-1], (a[:, :-1] + a[:, 1:]) / 2, atol=1e-5)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_shifted_tiles_join_without_seams(padding):
    _, moved = _pair(padding, [0.75, -0.5])
    image = np.random.default_rng(2).random((70, 90)).astype(np.float32)
    tiled = run(predict(moved, image, PredictConfig(tile_size=48), labels=False))
    whole = run(predict(moved, image, PredictConfig(tile_size=512), labels=False))
    np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-5)


def _bright_discs(seed: int, shift_down: int):
    """An image of bright discs and its labels, drawn ``shift_down`` pixels lower."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    fg = np.zeros((96, 96), bool)
    for _ in range(10):
        cy, cx, r = *rng.uniform(10, 86, 2), rng.uniform(5, 10)
        fg |= np.hypot(yy - cy, xx - cx) < r
    image = (fg + rng.normal(0, 0.15, fg.shape)).astype(np.float32)
    return image, np.roll(fg, shift_down, axis=0).astype(np.uint8)


@pytest.mark.parametrize("shift_down", [0, 1])
def test_training_finds_and_keeps_the_annotations_offset(tmp_path, shift_down):
    pairs = [_bright_discs(s, shift_down) for s in range(4)]
    events = []
    cfg = TrainConfig(mode="semantic", epochs=8, steps_per_epoch=10, batch_size=4,
                      patch_size=48, val_fraction=0.25, learning_rate=3e-3)
    result = run(train([p[0] for p in pairs], [p[1] for p in pairs], cfg,
                       model_config=tiny_config(norm="batch", base_channels=8),
                       out=tmp_path / "m.safetensors"), events.append)
    dy, dx = load_checkpoint(tmp_path / "m.safetensors").label_offset
    assert (dy, dx) == result.checkpoint.label_offset
    said = [e.message for e in events if e.kind == "info"]
    if shift_down:
        assert 0.5 <= dy <= 1.25 and abs(dx) <= 0.25
        assert any(f"lie {dy:g} px below" in m for m in said), said
    else:
        assert (dy, dx) == (0.0, 0.0)
        assert any("no sub-pixel offset" in m for m in said)
    calibration = result.checkpoint.training["label_offset"]
    assert calibration["error_shifted"] <= calibration["error"]


def test_a_cancelled_training_keeps_the_offset_of_its_best_model(tmp_path):
    """Cancel after the last epoch, before the calibration that follows it: the file still
    holds the best model with its label offset (found while the generator closes)."""
    pairs = [_bright_discs(s, 1) for s in range(4)]
    cfg = TrainConfig(mode="semantic", epochs=8, steps_per_epoch=10, batch_size=4,
                      patch_size=48, val_fraction=0.25, learning_rate=3e-3)
    gen = train([p[0] for p in pairs], [p[1] for p in pairs], cfg,
                model_config=tiny_config(norm="batch", base_channels=8),
                out=tmp_path / "m.safetensors")
    said = []
    for event in gen:
        said.append(event.message or "")
        if event.kind == "epoch" and event.epoch == cfg.epochs:
            gen.close()  # what the widget's Cancel does
            break
    assert not any(" lie " in m for m in said)  # the calibration had not run yet
    saved = load_checkpoint(tmp_path / "m.safetensors")
    dy, dx = saved.label_offset
    assert 0.5 <= dy <= 1.25 and abs(dx) <= 0.25
    found = saved.training["label_offset"]
    assert found["error_shifted"] < found["error"]
