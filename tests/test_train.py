from dataclasses import replace

import numpy as np
import pytest
from _samplers import AbortingAtExitSampler, AbortingSampler
from conftest import tiny_config

from napari_unet.checkpoint import load_checkpoint
from napari_unet.config import TrainConfig
from napari_unet.errors import InputError
from napari_unet.progress import run
from napari_unet.synthetic import touching_cells
from napari_unet.train import train


@pytest.fixture(scope="module")
def cells():
    pairs = [touching_cells((96, 96), n_cells=10, radius=8, seed=s) for s in range(3)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def quick(**kw):
    base = dict(epochs=2, steps_per_epoch=5, batch_size=2, patch_size=48, val_fraction=0.34)
    base.update(kw)
    return TrainConfig(**base)


def test_loss_falls(cells):
    images, labels = cells
    events = []
    run(train(images, labels, quick(epochs=8, steps_per_epoch=10, augment=False,
                                    learning_rate=3e-3),
              model_config=tiny_config(norm="batch", base_channels=8)), events.append)
    losses = [e.loss for e in events if e.kind == "epoch"]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2])


def test_distance_target_trains_a_distance_channel_and_predicts_objects(cells, tmp_path):
    from napari_unet.losses import unet_loss
    from napari_unet.predict import predict
    from napari_unet.targets import instance_targets, pack_distance

    images, labels = cells
    result = run(train(images, labels, quick(target="distance"),
                       model_config=tiny_config(norm="batch", base_channels=8),
                       out=tmp_path / "d.safetensors"))
    ckpt = load_checkpoint(tmp_path / "d.safetensors")
    assert ckpt.target == "distance" and ckpt.config.distance
    assert ckpt.config.n_classes == 2 and ckpt.config.out_channels == 3
    assert ckpt.state_dict["head.weight"].shape[0] == 3
    out = run(predict(ckpt, images[0]))
    assert out.probabilities.shape == (3, 96, 96)
    np.testing.assert_allclose(out.probabilities[:2].sum(0), 1.0, atol=1e-4)
    assert 0 <= out.probabilities[2].min() and out.probabilities[2].max() <= 1
    assert out.labels.shape == (96, 96) and result.checkpoint.target == "distance"

    # the loss reaches the distance channel: perfect logits there cost less
    import torch

    packed, w = instance_targets(labels[0], target="distance")
    cls, dist = packed % 2, (packed // 2) / 1000
    logit = torch.log(torch.tensor(np.clip(dist, 1e-4, 1 - 1e-4)) /
                      torch.tensor(np.clip(1 - dist, 1e-4, 1)))
    cls_logits = torch.tensor(np.stack([1 - cls, cls]) * 8.0)
    good = torch.cat([cls_logits, logit[None]])[None].float()
    bad = torch.cat([cls_logits, torch.zeros(1, 96, 96, dtype=torch.float64)])[None].float()
    t = torch.tensor(pack_distance(cls, dist))[None]
    wt = torch.tensor(w)[None]
    assert unet_loss(good, t, wt, distance=True) < unet_loss(bad, t, wt, distance=True) - 0.05


def test_without_validation_images_no_validation_score_is_claimed(cells, tmp_path):
    """With nothing held out the lowest training loss chooses the epoch kept; that is not a
    validation score, and no event, result, model file or report calls it one."""
    import json

    from napari_unet.report import report_paths

    images, labels = cells
    out = tmp_path / "m.safetensors"
    events = []
    result = run(train(images, labels, quick(val_fraction=0), model_config=tiny_config(),
                       out=out), events.append)
    assert [e.val for e in events if e.kind == "epoch"] == [None, None]
    assert result.best_score is None and result.best_epoch in (1, 2)
    assert [h["score"] for h in result.history] == [-h["loss"] for h in result.history]
    saved = load_checkpoint(out)
    assert saved.training["validation"] is None
    assert "threshold" not in saved.task and saved.threshold == 0.5  # none calibrated
    numbers = json.loads(report_paths(out)[1].read_text())
    assert numbers["best_score"] is None

    # fine-tuned without validation: the starting model's calibration is kept
    calibrated = replace(saved, task={**saved.task, "threshold": 0.85,
                                      "label_offset": [0.5, 0.0]})
    tuned = run(train(images, labels, quick(val_fraction=0), init_from=calibrated)).checkpoint
    assert tuned.threshold == 0.85 and tuned.label_offset == (0.5, 0.0)


def test_events_result_and_saved_best_model(cells, tmp_path):
    images, labels = cells
    out = tmp_path / "model.safetensors"
    events = []
    result = run(train(images, labels, quick(), model_config=tiny_config(), out=out),
                 events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and "CPU" in events[0].message
    assert kinds.count("step") == 10 and kinds.count("epoch") == 2 and "saved" in kinds
    assert [e.step for e in events if e.kind == "step"] == list(range(1, 11))
    assert result.path == out and out.exists()
    assert result.best_score is not None and len(result.history) == 2
    ck = load_checkpoint(out)
    assert ck.config.in_channels == 1 and ck.config.n_classes == 2
    assert ck.training["best_epoch"] == result.best_epoch
    # the size of the cells it learnt (radius 8 +-20 %, some cut by neighbours), for rescaling
    assert 12 < ck.object_diameter < 18


def test_a_single_image_gives_a_strip_of_itself_for_validation():
    image, labels = touching_cells((200, 260), n_cells=40, radius=10, seed=0)
    gen = train([image], [labels], quick(val_fraction=0.2),
                model_config=tiny_config(padding="same"))
    start = next(gen)  # 20 % of 260 px is 52, less than the strip's least width
    assert start.message.endswith("; the right 64 px of the image held out for validation")
    result = run(gen)
    assert result.checkpoint.training["validation_images"] == 1
    assert result.checkpoint.training["validation_strips"] == 1
    assert all("dice" in h for h in result.history)  # every epoch validated
    # labelled on its left part only: the strip is taken where the objects are
    half = labels * (np.arange(260) < 150)
    gen = train([image], [half], quick(), model_config=tiny_config(padding="same"))
    assert next(gen).message.endswith("the left 88 px of the image held out for validation")
    gen.close()


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_a_strip_is_predicted_as_it_is_in_its_image(padding):
    """The validation strip is predicted with the network's context of real image beside
    it and scored on the strip alone: its probabilities are those of the whole image (cut
    off without the context, the border effects would differ)."""
    import torch

    from napari_unet.device import resolve_device
    from napari_unet.model import UNet
    from napari_unet.train import _probabilities, hold_out_strips, prepare

    image, labels = touching_cells((200, 260), n_cells=40, radius=10, seed=0)
    prep = prepare([image], [labels], quick(val_fraction=0.2))
    mc = tiny_config(padding=padding, in_channels=prep.channels, n_classes=prep.n_classes)
    torch.manual_seed(0)
    net = UNet(mc).eval()
    cpu = resolve_device("cpu")
    whole = _probabilities(net, prep, [0], cpu)[0][..., -64:]  # the right 64 px
    held, idx = hold_out_strips(prep, 0.2, True, context=mc.context(), grid=2 ** mc.depth)
    assert held.images[idx[0]].shape[1] >= 64 + mc.context()
    assert held.regions[idx[0]].sum() == 200 * 64 and held.regions[idx[0]][:, -64:].all()
    assert held.images[0].shape[1] == 260 - 64  # the training part is the rest
    strip = _probabilities(net, held, idx, cpu)[0][..., -64:]
    np.testing.assert_allclose(strip, whole, atol=1e-5)
    alone, idx = hold_out_strips(prep, 0.2, True)  # no context: mirrored at the cut
    assert not np.allclose(_probabilities(net, alone, idx, cpu)[0], whole, atol=1e-3)


def test_a_few_images_give_strips_many_give_whole_images():
    """Holding out one of two (or five) images would take much of what is learnt from:
    each gives a strip instead. From six images on, whole ones are held out."""
    pairs = [touching_cells((200, 260), n_cells=40, radius=10, seed=s) for s in range(6)]
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    gen = train(images[:2], labels[:2], quick(val_fraction=0.2),
                model_config=tiny_config(padding="same"))
    assert next(gen).message.endswith("2 training and 2 validation image(s), patches 48 px, "
                                      "5 steps per epoch; a strip of 2 of the 2 images (64 px "
                                      "across) held out for validation")
    result = run(gen)
    assert result.checkpoint.training["validation_strips"] == 2
    assert all("dice" in h for h in result.history)
    result = run(train(images[:5], labels[:5], quick(val_fraction=0.2),
                       model_config=tiny_config(padding="same")))
    assert result.checkpoint.training["validation_strips"] == 5  # up to five: strips
    # six images: one of them held out whole (20 % of 6)
    result = run(train(images, labels, quick(val_fraction=0.2),
                       model_config=tiny_config(padding="same")))
    assert result.checkpoint.training["validation_strips"] == 0
    assert result.checkpoint.training["validation_images"] == 1


@pytest.mark.parametrize("shape,val_fraction", [((100, 120), 0.2), ((200, 260), 0.0)])
def test_no_strip_of_a_small_image_or_without_validation(shape, val_fraction):
    image, labels = touching_cells(shape, n_cells=12, radius=8, seed=0)
    result = run(train([image], [labels], quick(val_fraction=val_fraction),
                       model_config=tiny_config(padding="same")))
    assert result.checkpoint.training["validation_images"] == 0
    assert result.checkpoint.training["validation_strips"] == 0
    assert not any("dice" in h for h in result.history)


def test_fine_tune_starts_from_the_model(cells, tmp_path):
    images, labels = cells
    first = tmp_path / "a.safetensors"
    run(train(images, labels, quick(), model_config=tiny_config(), out=first))
    # no validation images: the fine-tuned model is kept whatever it scores
    result = run(train(images, labels, quick(epochs=1, freeze_encoder=True, val_fraction=0),
                       init_from=first, out=tmp_path / "b.safetensors"))
    a, b = load_checkpoint(first), load_checkpoint(tmp_path / "b.safetensors")
    assert b.config == a.config
    enc = "inc.0.weight"
    np.testing.assert_array_equal(a.state_dict[enc].numpy(), b.state_dict[enc].numpy())
    head = "head.weight"
    assert not np.array_equal(a.state_dict[head].numpy(), b.state_dict[head].numpy())
    assert b.training["fine_tuned_from"] == str(first)
    assert result.steps == 5


def _scripted_validation(monkeypatch, scores):
    import napari_unet.train as train_module

    scores = iter(scores)
    monkeypatch.setattr(train_module, "validate",
                        lambda *a, **k: {"score": next(scores), "threshold": 0.7})


def test_fine_tuning_keeps_the_starting_model_when_no_epoch_beats_it(cells, tmp_path,
                                                                    monkeypatch):
    from napari_unet.train import STARTING_MODEL_KEPT

    images, labels = cells
    first = tmp_path / "a.safetensors"
    run(train(images, labels, quick(val_fraction=0), model_config=tiny_config(), out=first))
    _scripted_validation(monkeypatch, [0.8, 0.5, 0.6])  # the start, then epochs 1 and 2
    events = []
    out = tmp_path / "b.safetensors"
    result = run(train(images, labels, quick(), init_from=first, out=out), events.append)
    info = [e for e in events if e.kind == "info"]
    assert len(info) == 1 and "0.800" in info[0].message and info[0].val["score"] == 0.8
    assert [e.kind for e in events].index("info") < [e.kind for e in events].index("step")
    assert result.best_epoch == 0 and result.best_score == 0.8 and len(result.history) == 2
    assert result.report is not None and result.report.exists()  # drawn with epoch 0
    a, b = load_checkpoint(first), load_checkpoint(out)
    for k, v in a.state_dict.items():
        np.testing.assert_array_equal(v.numpy(), b.state_dict[k].numpy())
    assert b.training["best_epoch"] == 0 and b.training["steps"] == 0
    assert b.threshold == 0.7  # calibrated on the new validation images
    assert b.training["fine_tuned_from"] == str(first)
    assert "model you started from" in STARTING_MODEL_KEPT


def test_fine_tuning_replaces_the_starting_model_by_a_better_epoch(cells, tmp_path,
                                                                  monkeypatch):
    images, labels = cells
    first = tmp_path / "a.safetensors"
    run(train(images, labels, quick(val_fraction=0), model_config=tiny_config(), out=first))
    _scripted_validation(monkeypatch, [0.5, 0.7, 0.7])
    out = tmp_path / "b.safetensors"
    result = run(train(images, labels, quick(), init_from=first, out=out))
    assert result.best_epoch == 2 and load_checkpoint(out).training["steps"] == 10
    head = "head.weight"
    assert not np.array_equal(load_checkpoint(first).state_dict[head].numpy(),
                              load_checkpoint(out).state_dict[head].numpy())


def test_fine_tuning_cancelled_at_once_leaves_the_starting_model(cells, tmp_path):
    images, labels = cells
    first = tmp_path / "a.safetensors"
    run(train(images, labels, quick(val_fraction=0), model_config=tiny_config(), out=first))
    out = tmp_path / "b.safetensors"
    gen = train(images, labels, quick(epochs=50), init_from=first, out=out)
    for event in gen:
        if event.kind == "info":
            break
    gen.close()  # what Cancel does
    b = load_checkpoint(out)
    assert b.training["best_epoch"] == 0 and b.training["validation"]["score"] >= 0
    np.testing.assert_array_equal(load_checkpoint(first).state_dict["head.weight"].numpy(),
                                  b.state_dict["head.weight"].numpy())


def test_time_budget_is_kept(cells):
    import time

    images, labels = cells
    t0 = time.perf_counter()
    result = run(train(images, labels, quick(epochs=None, time_budget=3.0),
                       model_config=tiny_config()))
    assert time.perf_counter() - t0 < 3.0 + 2.0
    assert result.stopped == "time budget" and result.steps > 0


def test_closing_the_generator_keeps_a_model(cells, tmp_path):
    images, labels = cells
    out = tmp_path / "m.safetensors"
    gen = train(images, labels, quick(epochs=50), model_config=tiny_config(), out=out)
    for event in gen:
        if event.kind == "step" and event.step == 3:
            break
    gen.close()  # what Cancel does
    assert load_checkpoint(out).training["steps"] == 3


def test_semantic_multiclass_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 64, 3)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 10:30] = 1
    labels[40:60, 35:60] = 2
    image[labels == 1] += 2
    image[labels == 2, 1] -= 2
    result = run(train([image, image[::-1]], [labels, labels[::-1]],
                       quick(mode="semantic"), model_config=tiny_config()))
    assert result.checkpoint.config.in_channels == 3
    assert result.checkpoint.config.n_classes == 3
    assert result.checkpoint.mode == "semantic"
    assert result.checkpoint.object_diameter is None  # classes, not cells: nothing to rescale


def test_grey_images_saved_as_rgb_train_and_fine_tune_a_grey_model(cells, tmp_path):
    images, labels = cells
    zero = np.zeros_like(images[1])
    rgb = [np.stack([images[0]] * 3, -1), np.stack([zero, images[1], zero], -1)]
    gen = train(rgb + images[2:], labels, quick(), model_config=tiny_config(),
                out=tmp_path / "grey.safetensors")
    start = next(gen)
    assert start.message.endswith("; image 1 read as grey (its three colour channels are "
                                  "equal); image 2 read as grey (only its green channel "
                                  "holds signal)")
    result = run(gen)
    assert result.checkpoint.config.in_channels == 1
    # fine-tuning a grey model on them (as the shipped nuclei model on RGB exports)
    tuned = run(train(rgb, labels[:2], quick(), init_from=result.checkpoint))
    assert tuned.checkpoint.config.in_channels == 1
    # grey images join colour ones as three equal channels
    colour = np.stack([images[0], images[0][::-1], zero], -1)
    mixed = run(train([colour, images[1]], labels[:2], quick(), model_config=tiny_config()))
    assert mixed.checkpoint.config.in_channels == 3


@pytest.mark.parametrize("labels,match", [
    ([np.zeros((64, 64), np.uint16)], "no object"),
    ([np.zeros((60, 64), np.uint16)], "differ"),
    ([-np.ones((64, 64), np.int32)], "negative"),
])
def test_bad_training_input_is_one_clear_sentence(labels, match):
    with pytest.raises(InputError, match=match):
        next(train([np.zeros((64, 64), np.uint8)], labels, quick()))


def test_batch_prefetcher_hands_over_batches_and_errors():
    from napari_unet.data import BatchPrefetcher

    class Sampler:
        def __init__(self):
            self.n = 0

        def batch(self, size):
            self.n += 1
            if self.n == 3:
                raise ValueError("broken batch")
            return self.n

    pre = BatchPrefetcher(Sampler(), 4)
    assert [pre.get(), pre.get()] == [1, 2]
    with pytest.raises(ValueError, match="broken batch"):
        pre.get()
    pre.close()


def test_patches_from_worker_processes_and_bf16_steps(cells, tmp_path):
    """The GPU paths that a CPU can run: patches made in a spawned worker process, and
    training steps under bf16 autocast."""
    images, labels = cells
    result = run(train(images, labels, quick(loader_workers=1, precision="bf16"),
                       model_config=tiny_config(norm="batch"), out=tmp_path / "m.safetensors"))
    assert result.steps == 10
    training = load_checkpoint(result.path).metadata()["training"]
    assert training["precision"] == "bf16" and training["config"]["loader_workers"] == 1
    assert all(np.isfinite(h["loss"]) for h in result.history)


def test_process_batches_are_seeded_per_worker(cells):
    from napari_unet.data import PatchSampler
    from napari_unet.loader import ProcessBatches

    images, labels = cells
    targets = [(lab > 0).astype(np.int64) for lab in labels]
    weights = [np.ones(lab.shape, np.float32) for lab in labels]
    sampler = PatchSampler([img[..., None].astype(np.float32) for img in images], targets,
                           weights, in_size=32, out_size=32, foreground_bias=0.5,
                           augment=None, rng=np.random.default_rng(0))
    batches = ProcessBatches(sampler, 2, workers=2, seed=5)
    try:
        got = [batches.get()[0].numpy() for _ in range(4)]
    finally:
        batches.close()
    assert got[0].shape == (2, 1, 32, 32)
    # the two workers draw different patches
    assert not np.array_equal(got[0], got[1])


def test_a_worker_process_that_dies_says_where(capfd):
    from napari_unet.loader import ProcessBatches

    batches = ProcessBatches(AbortingSampler(), 2, workers=1, seed=0)
    try:
        with pytest.raises(RuntimeError, match="DataLoader worker"):
            batches.get()
    finally:
        batches.close()
    err = capfd.readouterr().err
    # the worker's faulthandler printed its stack before it died
    assert "Fatal Python error: Aborted" in err and "in batch" in err


def test_a_worker_process_that_dies_while_stopped_loses_nothing():
    """torch reports a worker killed by a signal wherever the parent is at that moment; one
    that dies after being told to stop must not turn a finished training into an error."""
    import signal

    from napari_unet.loader import ProcessBatches

    batches = ProcessBatches(AbortingAtExitSampler(), 2, workers=2, seed=0)
    for _ in range(2):  # one batch from each worker, in turn
        assert batches.get()[0].shape == (2, 1, 8, 8)
    workers = list(batches._it._workers)
    batches.close()  # worker 1 aborts while close() waits for worker 0
    assert [w.exitcode for w in workers] == [0, -signal.SIGABRT]


def test_a_single_epochs_spike_in_validation_is_not_the_model_kept(cells, monkeypatch):
    """A few validation images score single epochs noisily: the kept model is the one whose
    score, averaged with the epochs before it, is best, not an early epoch's lucky spike."""
    import napari_unet.train as train_module

    scores = iter([0.3, 0.9, 0.4, 0.7, 0.8, 0.8])
    monkeypatch.setattr(train_module, "validate",
                        lambda *a, **k: {"score": next(scores), "threshold": 0.5})
    images, labels = cells
    result = run(train(images, labels, quick(epochs=6, steps_per_epoch=1),
                       model_config=tiny_config()))
    assert result.best_epoch == 6  # not epoch 2 (0.9 alone)
    assert result.best_score == pytest.approx((0.7 + 0.8 + 0.8) / 3)
    # the report says which epochs that score averages
    from napari_unet.report import summary

    assert "best validation score 0.7667\n(map averaged over epochs 4-6)" in summary(
        "m", result, "map")


def test_offsets_target_trains_vector_channels_and_predicts_objects(cells, tmp_path):
    from napari_unet.losses import unet_loss
    from napari_unet.predict import predict
    from napari_unet.targets import instance_targets

    images, labels = cells
    run(train(images, labels, quick(target="offsets"),
              model_config=tiny_config(norm="batch", base_channels=8),
              out=tmp_path / "o.safetensors"))
    ckpt = load_checkpoint(tmp_path / "o.safetensors")
    assert ckpt.target == "offsets" and ckpt.config.offsets and not ckpt.config.distance
    assert ckpt.config.out_channels == 4 and ckpt.state_dict["head.weight"].shape[0] == 4
    out = run(predict(ckpt, images[0]))
    assert out.probabilities.shape == (4, 96, 96)
    np.testing.assert_allclose(out.probabilities[:2].sum(0), 1.0, atol=1e-4)
    assert out.labels.shape == (96, 96)

    # the loss reaches the vector channels: the right vectors cost less than none
    import torch

    from napari_unet.losses import centre_offsets
    from napari_unet.targets import unpack_ids

    packed, w = instance_targets(labels[0], target="offsets")
    t, wt = torch.tensor(packed)[None], torch.tensor(w)[None]
    cls, ids = unpack_ids(t)
    vec, _ = centre_offsets(ids, wt > 0)
    cls_logits = (torch.stack([1 - cls, cls], 1) * 8.0).float()
    good = torch.cat([cls_logits, vec], 1)
    bad = torch.cat([cls_logits, torch.zeros_like(vec)], 1)
    assert unet_loss(good, t, wt, offsets=True) < unet_loss(bad, t, wt, offsets=True) - 0.1


def test_an_error_in_the_event_handler_closes_the_training_at_once(cells, tmp_path):
    """Ctrl-C in the command line's progress bar (or any error of the caller's handler)
    closes the generator before the exception goes on: the best model is saved by then."""
    out = tmp_path / "m.safetensors"

    def stop_after_the_first_save(event):
        if event.kind == "saved":
            raise KeyboardInterrupt

    gen = train(*cells, quick(epochs=50), model_config=tiny_config(), out=out)
    with pytest.raises(KeyboardInterrupt):
        run(gen, stop_after_the_first_save)
    assert gen.gi_frame is None  # closed, not left for the garbage collector
    assert load_checkpoint(out).training["validation"] is not None


def test_fine_tuning_says_when_it_keeps_the_models_kind_over_the_one_asked_for(cells,
                                                                              tmp_path,
                                                                              capsys):
    """A model's outputs are what it was made for: fine-tuning an instances model 'as
    semantic' fine-tunes it as it is, which it did without a word. On the command line a
    --mode or --target not given is the model's (no warning)."""
    from _models import thresholding_model

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.cli import main
    from napari_unet.io import write_tiff

    images, labels = cells
    events = []
    result = run(train(images, labels, quick(mode="semantic", val_fraction=0),
                       init_from=thresholding_model()), events.append)
    assert result.checkpoint.mode == "instances"
    assert [e.message for e in events if e.kind == "warning"] == [
        "The model to fine-tune segments objects (two_class target), so it is fine-tuned "
        "as such, not for classes (semantic)."]
    semantic = save_checkpoint(tmp_path / "s.safetensors", thresholding_model("semantic"))
    for k, (image, lab) in enumerate(zip(images, labels)):
        write_tiff(tmp_path / "i" / f"{k}.tif", image)
        write_tiff(tmp_path / "l" / f"{k}.tif", (lab > 0).astype(np.uint8))
    args = ["-q", "train", str(tmp_path / "i"), str(tmp_path / "l"), "--out",
            str(tmp_path / "t.safetensors"), "--epochs", "1", "--steps-per-epoch", "1",
            "--val-fraction", "0", "--from", str(semantic)]
    assert main(args) == 0
    assert "warning" not in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "t.safetensors").mode == "semantic"
    assert main([*args, "--mode", "instances"]) == 0
    assert "segments classes (semantic), so it is fine-tuned as such" in (
        capsys.readouterr().err)


def _running_out_of_memory(monkeypatch, most: int):
    """The loss of more than ``most`` patches at once raises CUDA's out-of-memory error
    (as a GPU too small for the batch does); records the batch sizes that went through."""
    import torch

    import napari_unet.losses as losses

    seen, loss = [], losses.unet_loss

    def limited(logits, *args, **kwargs):
        if len(logits) > most:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        seen.append(len(logits))
        return loss(logits, *args, **kwargs)

    monkeypatch.setattr(losses, "unet_loss", limited)
    return seen


def test_a_batch_too_large_for_the_device_goes_through_in_parts(cells, tmp_path, monkeypatch):
    """Out of memory for a batch of 4 patches, then of 2: the training says so and goes on
    with each batch in parts of one patch, their gradients added up (same steps, a model
    saved); the step's loss is the same as the whole batch's."""
    seen = _running_out_of_memory(monkeypatch, most=1)
    images, labels = cells
    events = []
    result = run(train(images, labels, quick(batch_size=4), model_config=tiny_config(),
                       out=tmp_path / "m.safetensors"), events.append)
    warned = [e.message for e in events if e.kind == "warning" and "out of memory" in e.message]
    assert len(warned) == 2 and "in 2 parts" in warned[0] and "in 4 parts" in warned[1]
    assert [e.step for e in events if e.kind == "step"] == list(range(1, 11))
    assert set(seen) == {1} and result.path.exists()


def test_parts_add_up_to_the_whole_batchs_step():
    """A batch in two parts gives the same loss and, for a network without batch norm and
    the weighted cross-entropy over patches of which every pixel counts, the same weights
    after the step as in one."""
    import torch

    from napari_unet.config import ModelConfig
    from napari_unet.model import UNet
    from napari_unet.targets import instance_targets
    from napari_unet.train import _step

    pairs = [touching_cells((48, 48), n_cells=n, radius=7, seed=s) for n, s in ((4, 3), (7, 5))]
    targets = [instance_targets(labels) for _, labels in pairs]
    batch = (np.stack([image[None] for image, _ in pairs]).astype(np.float32),
             np.stack([t for t, _ in targets]).astype(np.int64),
             np.stack([w for _, w in targets]).astype(np.float32))
    assert all((w > 0).all() for _, w in targets)
    after = []
    for parts in (1, 2):
        torch.manual_seed(0)
        net = UNet(ModelConfig(base_channels=4, depth=2, padding="same", norm="none",
                               dropout=0.0))
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        loss = _step(net, opt, scaler, batch, torch.device("cpu"), "fp32", 0.0, net.config,
                     parts)
        after.append((loss, [p.detach().clone() for p in net.parameters()]))
    assert after[0][0] == pytest.approx(after[1][0], rel=1e-5)
    for a, b in zip(after[0][1], after[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_out_of_memory_for_one_patch_is_a_sentence(cells, monkeypatch):
    _running_out_of_memory(monkeypatch, most=0)
    images, labels = cells
    with pytest.raises(InputError, match="ran out of memory training on one patch of 48 px"):
        run(train(images, labels, quick(batch_size=2), model_config=tiny_config()))
