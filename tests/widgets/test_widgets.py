import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import dock, set_quick, start_and_wait_for_a_step, wait_done
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QPushButton

from napari_unet._widgets._forms import FROM_FILE, choice, choose
from napari_unet.checkpoint import load_checkpoint
from napari_unet.config import PredictConfig
from napari_unet.predict import predict
from napari_unet.progress import run
from napari_unet.synthetic import touching_cells


@pytest.mark.parametrize("name", ["Train", "Predict", "Touching-cell separation"])
def test_every_widget_docks(make_napari_viewer, name):
    viewer = make_napari_viewer()
    widget = dock(viewer, name)
    assert any(w is widget for w in viewer.window.dock_widgets.values())
    assert any(name in key for key in viewer.window.dock_widgets)


@pytest.mark.parametrize("name,inside", [("Train", ("w0", "lr", "padding")),
                                         ("Predict", ("tile", "threshold", "tta"))])
def test_advanced_settings_start_folded_away(make_napari_viewer, qtbot, name, inside):
    widget = dock(make_napari_viewer(), name)

    def shown(field):
        return getattr(widget, field).isVisibleTo(widget)

    assert not widget.advanced.expanded
    assert not any(shown(field) for field in inside)
    assert shown("device") and shown("amount" if name == "Train" else "diameter")
    widget.advanced.toggle.click()
    assert widget.advanced.expanded
    assert all(shown(field) for field in inside)
    if name == "Predict":  # the threshold is typed only when the model's is not used
        assert not widget.threshold.isEnabled()
        widget.own_threshold.setChecked(False)
        assert widget.threshold.isEnabled()


@pytest.mark.parametrize("name", ["Train", "Predict"])
def test_the_device_is_found_off_the_gui_thread(make_napari_viewer, qtbot, monkeypatch,
                                                  name):
    """The widgets open without waiting for torch's import or a GPU's start: the device a
    choice resolves to is found in a thread, and the label keeps the last choice's answer
    even when an earlier, slower one (a GPU starting) arrives after it."""
    import threading

    import napari_unet._widgets._device as device_module

    on_gui, answered = [], []

    def slowly(choice):
        on_gui.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.5 if choice == "cuda" else 0)
        answered.append(choice)
        return f"resolved {choice}"

    monkeypatch.setattr(device_module, "describe", slowly)
    widget = dock(make_napari_viewer(), name)
    qtbot.waitUntil(lambda: widget.device_label.text() == "resolved auto")
    widget.device.setCurrentText("cuda")
    widget.device.setCurrentText("cpu")
    qtbot.waitUntil(lambda: answered[-1:] == ["cuda"])  # the slow one, last
    qtbot.wait(100)  # its answer reaches the GUI thread
    assert widget.device_label.text() == "resolved cpu" and not any(on_gui)


def test_training_through_the_widget_saves_a_model(cells_viewer, qtbot, models_home):
    predict = dock(cells_viewer, "Predict")  # docked before: offered the new model at once
    widget = dock(cells_viewer, "Train")
    assert widget.image.currentText() == "cells"
    qtbot.waitUntil(lambda: "CPU" in widget.device_label.text())
    set_quick(widget)
    before = {layer.name for layer in cells_viewer.layers}
    widget.controls.start_btn.click()
    assert not widget.controls.start_btn.isEnabled() and widget.controls.cancel_btn.isEnabled()
    wait_done(qtbot, widget)
    saved = list(models_home.glob("*.safetensors"))
    assert len(saved) == 1 and widget.last_model == str(saved[0])
    assert load_checkpoint(saved[0]).config.base_channels == 8
    assert "Finished" in widget.status.text() and len(widget.plot.loss) == 1
    assert _drawn(widget.plot, (255, 140, 0))  # one epoch: a dot of loss
    widget.plot.clear()
    assert not _drawn(widget.plot, (255, 140, 0))
    widget.plot.add(0.4, 0.6)
    assert _drawn(widget.plot, (255, 140, 0)) and _drawn(widget.plot, (60, 140, 255))
    assert {layer.name for layer in cells_viewer.layers} == before
    assert str(saved[0]) in values(widget.start_from)
    assert choice(predict.model) == str(saved[0])
    assert predict.model.currentText() == saved[0].stem  # listed by name, not by path
    assert str(saved[0]) in predict.model.itemData(predict.model.currentIndex(),
                                                   Qt.ToolTipRole)
    assert "the one just trained" in predict.status.text()


def test_save_model_to_takes_a_name_without_its_suffix_or_a_folder(cells_viewer, qtbot,
                                                                   tmp_path, models_home):
    """'Save model to: mymodel' wrote a file that no model list offered afterwards; a folder
    given there is where the model goes."""
    widget = dock(cells_viewer, "Train")
    qtbot.waitUntil(lambda: "CPU" in widget.device_label.text())
    set_quick(widget)
    widget.out.edit.setText(str(tmp_path / "mymodel"))
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert not (tmp_path / "mymodel").exists()
    assert widget.last_model == str(tmp_path / "mymodel.safetensors")
    assert load_checkpoint(widget.last_model) and "mymodel.safetensors" in widget.status.text()
    # a folder: a new model file in it, named as in ~/napari-unet/models
    folder = tmp_path / "my models"
    folder.mkdir()
    widget.out.edit.setText(str(folder))
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    saved = list(folder.glob("cells-*.safetensors"))
    assert len(saved) == 1 and widget.last_model == str(saved[0]) and load_checkpoint(saved[0])


def values(box) -> list[str]:
    """What the items of a model list stand for (paths for model files)."""
    return [box.itemData(i) or box.itemText(i) for i in range(box.count())]


def _drawn(plot, rgb) -> bool:
    """Whether the plot's picture holds pixels of colour ``rgb`` (one epoch: a dot)."""
    image = plot.grab().toImage()
    return any(image.pixelColor(x, y).getRgb()[:3] == rgb
               for x in range(image.width()) for y in range(image.height()))


def test_the_model_lists_offer_files_saved_since_and_keep_the_choice(cells_viewer, qtbot,
                                                                     model_file,
                                                                     models_home):
    """Opening a model list looks for models saved since (by the command line, say), and
    a chosen model stays chosen when newer ones push it out of the newest ten."""
    import os
    import shutil

    predict, train = dock(cells_viewer, "Predict"), dock(cells_viewer, "Train")
    models_home.mkdir(parents=True, exist_ok=True)

    def save(k):
        path = models_home / f"m{k:02d}.safetensors"
        shutil.copy(model_file, path)
        os.utime(path, (1_000_000 + k, 1_000_000 + k))
        return str(path)

    first = save(0)
    for box in (predict.model, train.start_from):
        assert first not in values(box)
        box.showPopup()
        box.hidePopup()
        assert first in values(box)
        assert choose(box, first) and box.currentText() == "m00"
    for k in range(1, 12):
        save(k)
    for box in (predict.model, train.start_from):
        box.showPopup()
        box.hidePopup()
        assert choice(box) == first and save(11) in values(box)
    assert predict.model_path() == first
    assert train.configs()[2] == first  # the model to fine-tune


def test_add_all_pairs_every_image_with_the_labels_named_after_it(make_napari_viewer):
    """~30 images open with their labels: one click pairs them, by name; a prediction
    nobody corrected, an image without labels and one with two candidates are not paired,
    and the status names the last two."""
    from napari_unet._widgets._outputs import MODEL

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    for name in ("a", "a 2", "b", "c", "d"):
        viewer.add_image(rng.random((32, 32)), name=name)
    lab = np.zeros((32, 32), np.int32)
    lab[4:12, 4:12] = 1
    for name in ("a labels", "a 2 labels", "b_mask", "d labels", "d.labels"):
        viewer.add_labels(lab.copy(), name=name)
    viewer.add_labels(lab.copy(), name="c segmentation", metadata={MODEL: "nuclei"})
    viewer.add_image(rng.integers(0, 255, (32, 32), dtype=np.uint8), name="e")
    viewer.add_image(lab.astype(np.uint16), name="e_labels")  # a label TIFF opened as image
    train = dock(viewer, "Train")
    train.add_all_pairs()
    pairs = [train.pairs.item(i).text().split("  ⟷  ") for i in range(train.pairs.count())]
    assert pairs == [["a", "a labels"], ["a 2", "a 2 labels"], ["b", "b_mask"]]
    assert "no labels layer named after 'c'" in train.status.text()
    assert "more than one labels layer named after 'd'" in train.status.text()
    assert "'e'" in train.status.text()  # no labels layer for it ...
    assert "'e_labels' look like labels opened as images" in train.status.text()
    assert "'e_labels'" not in train.status.text().split("no labels layer")[1].split(";")[0]
    train.add_all_pairs()  # nothing twice
    assert train.pairs.count() == 3
    images, labels, _, names = train.snapshot()
    assert len(images) == len(labels) == 3 and names[1] == "a 2 / a 2 labels"
    [button] = [b for b in train.findChildren(QPushButton) if b.text() == "Clear"]
    button.click()
    assert train.pairs.count() == 0


def test_add_files_opens_images_with_their_label_files_and_pairs_them(
        make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Images with Cellpose-style label files in one folder: *Add files…* opens each as
    napari opens it (the label file as labels), pairs them, names an image without a label
    file, takes a layer already open from a file as it is, and a float label file napari
    cannot open as labels is said in the status; the pairs then train."""
    import tifffile
    from imageio.v3 import imwrite
    from napari.layers import Labels
    from qtpy.QtWidgets import QFileDialog

    folder = tmp_path / "annotated"
    folder.mkdir()
    for k in range(2):
        image, labels = touching_cells((64, 64), n_cells=5, radius=7, seed=k)
        tifffile.imwrite(folder / f"img{k}.tif", image)
        imwrite(folder / f"img{k}_masks.png", labels.astype(np.uint16))
    tifffile.imwrite(folder / "lonely.tif", image)
    tifffile.imwrite(folder / "odd.tif", image)
    tifffile.imwrite(folder / "odd_masks.tif", np.full((64, 64), 0.5, np.float32))
    viewer = make_napari_viewer()
    viewer.open(str(folder / "img0.tif"), plugin="napari")  # opened before, by hand
    train = dock(viewer, "Train")
    chosen = [str(folder / n) for n in ("img0.tif", "img1.tif", "lonely.tif", "odd.tif")]
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: (chosen, ""))
    asked = []  # lonely.tif has no label file: a folder of them is asked for, none given
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        lambda *a, **k: asked.append(a) or "")
    [button] = [b for b in train.findChildren(QPushButton) if b.text() == "Add files…"]
    button.click()
    text = train.status.text()
    assert text.startswith("Opened and added 2 pair(s); no label file for lonely.tif "), text
    assert "odd.tif or odd_masks.tif could not be opened" in text
    assert len(asked) == 1 and "lonely.tif" in asked[0][1]
    pairs = [train.pairs.item(i).text().split("  ⟷  ") for i in range(train.pairs.count())]
    assert pairs == [["img0", "img0_masks"], ["img1", "img1_masks"]]
    assert [layer.name for layer in viewer.layers if layer.name.startswith("img0")] == [
        "img0", "img0_masks"]  # the open image taken as it was, not opened twice
    assert [layer.name for layer in viewer.layers] == ["img0", "img0_masks", "img1",
                                                       "img1_masks"]  # labels above images
    assert isinstance(viewer.layers["img1_masks"], Labels)
    train.add_files([folder / "img1.tif"])  # nothing twice
    assert train.pairs.count() == 2 and len(viewer.layers) == 4
    images, labels, _, names = train.snapshot()
    assert names == ["img0 / img0_masks", "img1 / img1_masks"]
    for k, lab in enumerate(labels):
        assert np.array_equal(lab, touching_cells((64, 64), n_cells=5, radius=7, seed=k)[1])

    # images/ and labels/ of the same names (DSB 2018's layout): the folder is asked for
    for kind in ("images", "labels"):
        (tmp_path / kind).mkdir()
    tifffile.imwrite(tmp_path / "images" / "x.tif", image)
    tifffile.imwrite(tmp_path / "labels" / "x.tif", labels[0])
    chosen[:] = [str(tmp_path / "images" / "x.tif")]
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        lambda *a, **k: str(tmp_path / "labels"))
    button.click()
    assert train.status.text() == "Opened and added 1 pair(s).", train.status.text()
    assert train.pairs.item(2).text() == "x  ⟷  x labels"
    assert isinstance(viewer.layers["x labels"], Labels)


def test_cancel_stops_training_within_two_seconds(cells_viewer, qtbot, models_home):
    widget = dock(cells_viewer, "Train")
    set_quick(widget, amount=10, unit="minutes")
    start_and_wait_for_a_step(qtbot, widget)
    t0 = time.perf_counter()
    widget.controls.cancel_btn.click()
    wait_done(qtbot, widget, timeout=5_000)
    assert time.perf_counter() - t0 < 2.0
    assert "Cancelled" in widget.status.text()
    assert len(list(models_home.glob("*.safetensors"))) == 1  # nothing lost


def test_closing_the_panel_cancels_its_training_and_keeps_the_model(cells_viewer, qtbot,
                                                                    models_home, notes):
    """Its panel closed (the x of the dock), a training would run on unseen and
    unstoppable: it is cancelled as by Cancel, and the best model so far is kept."""
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    widget = dock(cells_viewer, "Train")
    set_quick(widget, amount=10, unit="minutes")
    start_and_wait_for_a_step(qtbot, widget)
    worker = widget.controls.run.worker
    cells_viewer.window.remove_dock_widget(widget)  # what the panel's x does
    QApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # the dock deleted
    assert worker.ended.wait(10)
    qtbot.waitUntil(lambda: widget.controls.run is None, timeout=5_000)
    assert "Cancelled" in widget.status.text()
    assert any("Cancelled" in note for note in notes)
    assert len(list(models_home.glob("*.safetensors"))) == 1


def test_napari_quitting_cancels_and_waits_for_a_run_in_flight(cells_viewer, qtbot,
                                                             models_home):
    """napari quits (its window closed, or Python exits) with a training running: the
    run is cancelled and waited for, so its model is saved before the process ends,
    instead of a worker thread killed mid-step (an abort, nothing saved)."""
    from napari_unet._widgets import _runner

    widget = dock(cells_viewer, "Train")
    set_quick(widget, amount=10, unit="minutes")
    start_and_wait_for_a_step(qtbot, widget)
    worker = widget.controls.run.worker
    assert worker in _runner._LIVE
    _runner.finish_runs(timeout=30)  # at aboutToQuit and at exit; the GUI thread waits
    assert worker.ended.is_set() and worker not in _runner._LIVE
    assert len(list(models_home.glob("*.safetensors"))) == 1
    wait_done(qtbot, widget, timeout=5_000)
    # napari cancels its tasks when its window closes: that reaches our Cancel
    start_and_wait_for_a_step(qtbot, widget)
    cells_viewer.window._task_status_manager.cancel_all()
    wait_done(qtbot, widget, timeout=10_000)
    assert "Cancelled" in widget.status.text()


def test_runs_leave_qts_own_thread_pool_free(cells_viewer, qtbot, model_file):
    """Qt's image conversions on the GUI thread (napari's activity spinner, started when a
    run starts) wait for a thread of Qt's global pool while holding Python's lock; runs in
    that pool (as many threads as cores: 2 here) that need the lock made napari freeze for
    good at Start. A training, a prediction and the device checks together take none of
    its threads, and a conversion that needs them returns."""
    from qtpy.QtCore import QThreadPool
    from qtpy.QtGui import QImage

    pool = QThreadPool.globalInstance()
    idle = pool.activeThreadCount()
    train, predict = dock(cells_viewer, "Train"), predict_dock(cells_viewer, model_file)
    set_quick(train, amount=10, unit="minutes")
    start_and_wait_for_a_step(qtbot, train)
    predict.controls.start_btn.click()
    assert train.controls.run is not None and predict.controls.run is not None
    # none of its threads is ours: the count falls back to where it was while our runs go
    # on (a thread napari itself takes there for a moment made '==' fail now and then)
    qtbot.waitUntil(lambda: pool.activeThreadCount() <= idle, timeout=10_000)
    assert train.controls.run is not None
    image = QImage(2048, 2048, QImage.Format_ARGB32)
    image.fill(0)
    assert image.scaled(64, 64, transformMode=Qt.SmoothTransformation).width() == 64
    wait_done(qtbot, predict)
    assert "Done" in predict.status.text()
    train.controls.cancel_btn.click()
    wait_done(qtbot, train)
    assert "Cancelled" in train.status.text()


def test_gui_keeps_ticking_while_training(cells_viewer, qtbot):
    widget = dock(cells_viewer, "Train")
    set_quick(widget, amount=0.05, unit="minutes")  # three seconds
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    timer.stop()
    gaps = np.diff(ticks)
    assert len(ticks) > 50
    assert gaps.max() < 0.25, f"the GUI stalled for {gaps.max():.3f} s"


def test_a_pytorch_that_cannot_be_loaded_is_said_in_the_widgets(cells_viewer, qtbot, notes,
                                                                model_file, monkeypatch):
    """A broken PyTorch install: the device line and a notification say so and what to
    do, a training and a prediction change no layer."""
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # 'import torch' now fails
    before = [layer.name for layer in cells_viewer.layers]
    predict = predict_dock(cells_viewer, model_file)
    qtbot.waitUntil(lambda: "PyTorch could not be loaded" in predict.device_label.text())
    predict.controls.start_btn.click()
    wait_done(qtbot, predict)
    train = dock(cells_viewer, "Train")
    set_quick(train)
    train.controls.start_btn.click()
    wait_done(qtbot, train)
    said = [n for n in notes if "PyTorch could not be loaded" in n]
    assert len(said) == 2 and all("pip install torch" in n for n in said), notes
    assert [layer.name for layer in cells_viewer.layers] == before
    assert train.status.text().startswith("Not trained: PyTorch could not be loaded")


BAD_TRAINING_LAYERS = {  # case: (image data or None for the cells image, labels, message)
    "shape mismatch": (None, np.ones((50, 60), np.int32), "do not match"),
    "empty labels": (None, np.zeros((96, 96), np.int32), "no labelled pixel"),
    "no background": (None, np.ones((96, 96), np.int32), "no background"),
    "NaN image": (np.full((96, 96), np.nan, np.float32), None, "NaN"),
    "constant image": (np.full((96, 96), 3, np.uint8), None, "constant"),
    "3D labels for a 2D image": (None, np.ones((3, 96, 96), np.int32), "do not match"),
}


@pytest.mark.parametrize("case", list(BAD_TRAINING_LAYERS))
def test_bad_choice_notifies_and_changes_no_layer(cells_viewer, qtbot, notes, case):
    image, labels, expected = BAD_TRAINING_LAYERS[case]
    if image is not None:
        cells_viewer.add_image(image, name="wrong image")
    if labels is not None:
        cells_viewer.add_labels(labels, name="wrong")
    snapshot = {layer.name: np.array(layer.data) for layer in cells_viewer.layers}
    widget = dock(cells_viewer, "Train")
    set_quick(widget)
    widget.image.setCurrentText("wrong image" if image is not None else "cells")
    widget.labels.setCurrentText("wrong" if labels is not None else "cells labels")
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert widget.controls.start_btn.isEnabled()
    assert any(expected in n for n in notes), notes
    assert not any("Traceback" in n for n in notes)
    # the status line says so too, found before the run or by the engine in it
    assert widget.status.text().startswith("Not trained: ") and expected in widget.status.text()
    assert set(snapshot) == {layer.name for layer in cells_viewer.layers}
    for layer in cells_viewer.layers:
        np.testing.assert_array_equal(layer.data, snapshot[layer.name])


def test_a_training_too_large_for_memory_is_refused_and_keeps_the_labels(cells_viewer,
                                                                         qtbot, notes,
                                                                         monkeypatch):
    """A training whose images could not be prepared in the memory free was killed, napari
    and the labels just painted with it: a notification says what to do, nothing is lost.
    It is refused before the layers are copied (a copy of a slide's labels took gigabytes
    of their own), so no training starts."""
    from napari_unet import memory

    snapshot = {layer.name: np.array(layer.data) for layer in cells_viewer.layers}
    monkeypatch.setattr(memory, "free_memory", lambda: 96 * 96 * 8)
    widget = dock(cells_viewer, "Train")
    set_quick(widget)
    widget.controls.start_btn.click()
    assert widget.controls.run is None and "Training" not in widget.status.text()
    wait_done(qtbot, widget)
    assert any("'Labelled in' Shapes layer" in n for n in notes), notes
    assert not any("Traceback" in n for n in notes)
    for layer in cells_viewer.layers:
        np.testing.assert_array_equal(layer.data, snapshot[layer.name])


def test_deleting_the_layers_while_training_loses_nothing(cells_viewer, qtbot, notes,
                                                           models_home):
    widget = dock(cells_viewer, "Train")
    set_quick(widget)
    widget.controls.start_btn.click()
    cells_viewer.layers.remove("cells labels")  # the training works on its own copy
    cells_viewer.layers.remove("cells")
    wait_done(qtbot, widget)
    assert "Finished" in widget.status.text(), (widget.status.text(), notes)
    assert len(list(models_home.glob("*.safetensors"))) == 1


def predict_dock(viewer, model_file, *, probabilities=False):
    """The Predict widget docked, set to ``model_file``."""
    widget = dock(viewer, "Predict")
    widget.use_model_file(model_file)
    widget.probabilities.setChecked(probabilities)
    return widget


def _tiny_model(tmp_path, target):
    from napari_unet.config import ModelConfig, TrainConfig
    from napari_unet.synthetic import touching_cells
    from napari_unet.train import train

    image, labels = touching_cells((96, 96), n_cells=10, radius=8, seed=1)
    path = tmp_path / f"{target}.safetensors"
    run(train([image], [labels], TrainConfig(target=target, epochs=1, steps_per_epoch=2,
                                             patch_size=64, val_fraction=0),
              model_config=ModelConfig(base_channels=4, depth=2, dropout=0, padding="same"),
              out=path))
    return path


def test_a_distance_model_also_shows_its_distance_map(cells_viewer, qtbot, tmp_path):
    widget = predict_dock(cells_viewer, _tiny_model(tmp_path, "distance"), probabilities=True)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert cells_viewer.layers["cells segmentation"].data.shape == (96, 96)
    assert cells_viewer.layers["cells probabilities"].data.shape == (96, 96)
    dist = cells_viewer.layers["cells distance"].data
    assert dist.shape == (96, 96) and 0 <= dist.min() and dist.max() <= 1
    np.testing.assert_allclose(cells_viewer.layers["cells distance"].scale, (2.0, 0.5))
    assert "cells centre votes" not in cells_viewer.layers


def test_an_offsets_model_also_shows_where_its_pixels_point(cells_viewer, qtbot, tmp_path):
    widget = predict_dock(cells_viewer, _tiny_model(tmp_path, "offsets"), probabilities=True)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert cells_viewer.layers["cells segmentation"].data.shape == (96, 96)
    prob = cells_viewer.layers["cells probabilities"].data
    votes = cells_viewer.layers["cells centre votes"]
    assert votes.data.shape == (96, 96)
    # every foreground pixel casts one vote, somewhere in the image
    assert votes.data.sum() == (prob > 0.5).sum()
    np.testing.assert_allclose(votes.scale, (2.0, 0.5))
    assert "cells distance" not in cells_viewer.layers


def test_prediction_adds_labels_of_the_right_shape_and_scale(cells_viewer, qtbot, model_file):
    widget = predict_dock(cells_viewer, model_file, probabilities=True)
    assert widget.min_size.text() == "auto" and widget.config().min_size == "auto"
    widget.min_size.setValue(0)
    assert widget.config().min_size == 0  # keep every object
    widget.min_size.setValue(-1)
    assert widget.necks.isChecked() and widget.config().cut_necks
    widget.necks.setChecked(False)  # cells that are not round
    assert widget.config().cut_necks is False
    widget.necks.setChecked(True)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    out = cells_viewer.layers["cells segmentation"]
    assert out.data.shape == (96, 96)
    np.testing.assert_allclose(out.scale, (2.0, 0.5))
    np.testing.assert_allclose(out.translate, (10, 20))
    prob = cells_viewer.layers["cells probabilities"].data
    assert prob.shape == (96, 96) and 0 <= prob.min() and prob.max() <= 1
    assert "cells distance" not in cells_viewer.layers  # a two-class model has none
    n_layers = len(cells_viewer.layers)
    widget.controls.start_btn.click()  # a re-run updates the same layers
    wait_done(qtbot, widget)
    assert len(cells_viewer.layers) == n_layers


def test_results_are_placed_where_a_rotated_and_sheared_image_is(make_napari_viewer, qtbot,
                                                                model_file):
    """A layer rotated, sheared or given an affine transform (a light sheet's deskew, an
    image turned by hand): its segmentation was drawn with its scale and translation only,
    unrotated, beside its cells. Every pixel of the results now lies where the image's
    does, as does the part in view, a layer's channel left out, and a region drawn over
    rotated labels."""
    from types import SimpleNamespace

    from napari.layers import Labels, Shapes

    from napari_unet._widgets._in_view import _moved
    from napari_unet._widgets._placement import placement
    from napari_unet._widgets._regions import region_mask

    viewer = make_napari_viewer()
    image = touching_cells((96, 96), n_cells=10, seed=0)[0]
    turn = np.array([[1, 0, 0], [0.1, 1, 3], [0, 0, 1]])  # an affine transform on top
    layer = viewer.add_image(image, name="turned", rotate=30, shear=[0.2], scale=(2, 0.5),
                             translate=(10, 20), affine=turn)
    widget = predict_dock(viewer, model_file, probabilities=True)
    widget.image.setCurrentText("turned")
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    pixels = np.array([[0, 0], [95, 0], [40, 77], [95, 95]], float)
    for name in ("turned segmentation", "turned probabilities"):
        out = viewer.layers[name]
        for pixel in pixels:
            np.testing.assert_allclose(out.data_to_world(pixel), layer.data_to_world(pixel))
    part = _moved(layer, slice(30, 60), slice(7, 50), "part")
    on_part = Labels(np.zeros((30, 43), np.uint8), **placement(part))
    np.testing.assert_allclose(on_part.data_to_world([0, 0]), layer.data_to_world([30, 7]))
    np.testing.assert_allclose(on_part.data_to_world([5, 9]), layer.data_to_world([35, 16]))
    stack = Labels(np.zeros((3, 2, 96, 96), np.uint8), rotate=[[1, 0, 0, 0], [0, 1, 0, 0],
                                                                [0, 0, 0.6, -0.8],
                                                                [0, 0, 0.8, 0.6]],
                   scale=(5, 1, 2, 0.5), translate=(1, 0, 10, 20))  # (Z, C, Y, X)
    no_channel = Labels(np.zeros((3, 96, 96), np.uint8),
                        **placement(stack, axes=[0, 2, 3]))  # its channel axis left out
    for point in ([2, 1, 40, 77], [0, 0, 95, 3]):
        np.testing.assert_allclose(no_channel.data_to_world([point[0], *point[2:]]),
                                   np.delete(stack.data_to_world(point), 1))
    labels = SimpleNamespace(data=np.zeros((96, 96), np.int32), **placement(layer))
    box = np.array([[20, 30], [20, 60], [50, 60], [50, 30]], float)  # in the labels' pixels
    drawn = Shapes([[layer.data_to_world(p) for p in box]], shape_type="polygon")
    mask = region_mask(drawn, labels)
    assert mask[22:49, 32:59].all() and mask.sum() <= 31 * 31 and not mask[:18].any()


def test_a_segmentation_being_corrected_is_never_overwritten(cells_viewer, qtbot, model_file):
    """Predict, correct the labels by hand, predict again: the corrected layer is kept as
    it is and the new result goes beside it (then to that same new layer on later runs);
    a layer of the output's name that the user made is never written either."""
    widget = predict_dock(cells_viewer, model_file)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    first = cells_viewer.layers["cells segmentation"]
    first.paint((40, 40), 99)  # a correction, with napari's brush
    corrected = first.data.copy()
    assert (corrected == 99).any()
    for _ in range(2):
        widget.controls.start_btn.click()
        wait_done(qtbot, widget)
        np.testing.assert_array_equal(cells_viewer.layers["cells segmentation"].data,
                                      corrected)
        second = cells_viewer.layers["cells segmentation (2)"]
        assert second.data.shape == (96, 96) and second.data.max() > 0
        assert not (second.data == 99).any()
        assert "holds your edits" in widget.status.text(), widget.status.text()
        assert "'cells segmentation (2)'" in widget.status.text()
    assert "cells segmentation (3)" not in cells_viewer.layers  # the unedited one reused

    mine = np.zeros((64, 64), np.int32)
    cells_viewer.add_image(np.random.default_rng(3).random((64, 64)), name="other")
    cells_viewer.add_labels(mine, name="other segmentation")  # the user's own layer
    widget.image.setCurrentText("other")
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert cells_viewer.layers["other segmentation"].data is mine
    assert "other segmentation (2)" in cells_viewer.layers
    assert "is not one napari-unet wrote" in widget.status.text()


def test_changing_only_how_objects_are_labelled_reuses_the_probabilities(
        cells_viewer, qtbot, model_file, monkeypatch):
    """A second Predict that changes only the threshold, separation or minimum size labels
    the probabilities of the first again (the network is not run), with the labels a
    fresh prediction gives; changing the model's input (test-time augmentation) or the
    image runs the network again."""
    import napari_unet.predict as engine

    calls, original = [], engine.predict

    def counting(*args, **kw):
        calls.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(engine, "predict", counting)
    widget = predict_dock(cells_viewer, model_file)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert len(calls) == 1 and "again" not in widget.status.text()
    widget.own_threshold.setChecked(False)
    widget.threshold.setValue(0.3)
    widget.min_size.setValue(0)
    widget.method.setCurrentText("components")
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert len(calls) == 1, "the network ran again"
    assert "Labelled again from the last prediction" in widget.status.text()
    fresh = run(original(model_file, cells_viewer.layers["cells"].data, widget.config()))
    np.testing.assert_array_equal(cells_viewer.layers["cells segmentation"].data,
                                  fresh.labels)
    widget.tta.setChecked(True)  # other probabilities: predicted anew
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert len(calls) == 2 and "again" not in widget.status.text()
    cells_viewer.layers["cells"].data = cells_viewer.layers["cells"].data[::-1].copy()
    widget.controls.start_btn.click()  # the image changed: predicted anew
    wait_done(qtbot, widget)
    assert len(calls) == 3 and "again" not in widget.status.text()
    import napari_unet._widgets._reuse as dock_module

    monkeypatch.setattr(dock_module, "KEEP_PROBABILITIES", 0)  # too large to keep:
    for expected in (3, 4, 5):  # the ones kept before are used once more, then no more
        widget.controls.start_btn.click()
        wait_done(qtbot, widget)
        assert len(calls) == expected


def test_only_the_checks_of_the_image_run_on_the_gui_thread(cells_viewer, qtbot,
                                                           model_file, monkeypatch):
    """Predict checks the image on napari's GUI thread (a bad one is refused at once);
    the network (torch's first import, a GPU's start, the weights) and the labels are made
    in the worker, also when only the labelling settings changed."""
    import threading

    import napari_unet.predict as engine

    on_gui = []
    network, labeller = engine._network, engine._labeller

    def noted(fn):
        def call(*args, **kw):
            on_gui.append(threading.current_thread() is threading.main_thread())
            return fn(*args, **kw)
        return call

    monkeypatch.setattr(engine, "_network", noted(network))
    monkeypatch.setattr(engine, "_labeller", lambda *a: noted(labeller(*a)))
    widget = predict_dock(cells_viewer, model_file)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    widget.min_size.setValue(0)  # labelled again from the probabilities
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert "Labelled again" in widget.status.text()
    assert len(on_gui) == 3 and not any(on_gui)  # the network, the labels twice


def test_a_corrected_prediction_fine_tunes_the_model_that_made_it(cells_viewer, qtbot,
                                                                   model_file, models_home,
                                                                   notes):
    """The human-in-the-loop round: predict, correct the labels layer by hand, fine-tune
    the same model (which the Train widget offers) on the corrections."""
    predict = predict_dock(cells_viewer, model_file)
    predict.controls.start_btn.click()
    wait_done(qtbot, predict)
    segmentation = cells_viewer.layers["cells segmentation"]
    train = dock(cells_viewer, "Train")
    set_quick(train)
    train.image.setCurrentText("cells")
    assert train.start_from.currentText() == "new model"  # 'cells labels' are hand-made
    train.labels.setCurrentText("cells segmentation")
    # the model that made the segmentation is offered for fine-tuning
    assert train.start_from.currentText() == FROM_FILE
    assert train.init_file.text() == str(model_file)
    assert "the model that made 'cells segmentation'" in train.status.text()
    train.start_from.setCurrentText("new model")  # the user's choice stands
    cells_viewer.add_labels(np.zeros((96, 96), np.int32), name="other")
    assert train.start_from.currentText() == "new model"
    assert train.labels.currentText() == "cells segmentation"
    train.start_from.setCurrentText(FROM_FILE)
    train.controls.start_btn.click()  # trained on as it is: said to teach nothing new
    assert any("a prediction you have not corrected" in n for n in notes), notes
    train.controls.cancel_btn.click()
    wait_done(qtbot, train)
    notes.clear()
    segmentation.fill((0, 0), 0)  # nothing in the background corner
    segmentation.paint((48, 48), 77)  # a cell the model missed
    _, labels, _, _ = train.snapshot()
    assert len(labels) == 1 and (labels[0] == 77).any()  # the corrections are trained on
    train.controls.start_btn.click()
    wait_done(qtbot, train)
    assert "Finished" in train.status.text(), train.status.text()
    assert not any("not corrected" in n for n in notes), notes
    saved = load_checkpoint(train.last_model)
    assert saved.config.base_channels == load_checkpoint(model_file).config.base_channels


def test_an_rgb_layer_holding_a_grey_image_is_predicted_as_grey(cells_viewer, qtbot,
                                                                model_file):
    """Fluorescence exported as RGB (DAPI in blue) with a grey model: the same labels as
    the grey image, and the status says how the layer was read."""
    grey = cells_viewer.layers["cells"].data
    zero = np.zeros_like(grey)
    cells_viewer.add_image(np.stack([zero, zero, grey], -1), name="blue", rgb=True)
    widget = predict_dock(cells_viewer, model_file)
    for name in ("cells", "blue"):
        widget.image.setCurrentText(name)
        widget.controls.start_btn.click()
        wait_done(qtbot, widget)
    assert "Read as grey (only its blue channel holds signal)" in widget.status.text()
    blue = cells_viewer.layers["blue segmentation"].data
    assert blue.shape == grey.shape and blue.max() > 0
    np.testing.assert_array_equal(blue, cells_viewer.layers["cells segmentation"].data)


def test_prediction_of_a_stack(make_napari_viewer, qtbot, model_file, tmp_path):
    from _models import thresholding_model

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.stacks import link_planes
    from napari_unet.synthetic import touching_cells

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((3, 64, 80)), name="stack")
    widget = predict_dock(viewer, model_file)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert viewer.layers["stack segmentation"].data.shape == (3, 64, 80)
    # linked across planes: what the engine labels plane by plane, linked (a model that
    # thresholds, as the tiny model trained for two steps finds no cells)
    stack = np.stack([touching_cells((64, 80), n_cells=6, radius=8, seed=s)[1] > 0
                      for s in (1, 1, 2)]).astype(np.float32)
    viewer.add_image(stack, name="cells3d")
    model_file = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    widget.use_model_file(model_file)
    widget.image.setCurrentText("cells3d")
    widget.link.setValue(0.25)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    linked = viewer.layers["cells3d segmentation"].data
    apart = run(predict(model_file, stack, widget.config().replace(link_planes=0))).labels
    assert linked.max() > apart.max()  # ids go on from plane to plane
    np.testing.assert_array_equal(linked, link_planes(apart.astype(np.uint32), 0.25))
    assert f"{linked.max()} objects linked through 3 planes" in widget.status.text()
    features = viewer.layers["cells3d segmentation"].features  # a row per 3D object
    assert features["index"].tolist() == list(range(1, linked.max() + 1))
    assert features["area"].tolist() == np.bincount(linked.ravel())[1:].tolist()
    assert "centroid-2" in features
    widget.link.setValue(0)  # each plane numbered from 1: the planes' objects add up
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    found = sum(int(p.max()) for p in apart)
    assert found > apart.max() and f"{found} objects in 3 planes" in widget.status.text()
    # and no row per label can hold them (each plane has a label 1): no measurements,
    assert viewer.layers["cells3d segmentation"].features.shape[0] == 0
    from napari_unet._widgets.menu import measure_selected

    viewer.layers.selection.active = viewer.layers["cells3d segmentation"]
    assert measure_selected(viewer) is None  # nor measured from the Layers menu, as said
    assert viewer.layers["cells3d segmentation"].features.shape[0] == 0


@pytest.mark.parametrize("lazy", [False, True])
def test_prediction_of_a_time_lapse_of_z_stacks(make_napari_viewer, qtbot, tmp_path, lazy):
    """(T, Z, Y, X) was refused ("cannot read as 2D images or a stack"); a lazy one is
    predicted to disk, as other lazy layers are."""
    import dask.array as da
    from _models import thresholding_model

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.synthetic import touching_cells

    planes = [touching_cells((64, 80), n_cells=6, radius=8, seed=s)[1] > 0
              for s in (1, 1, 1, 2, 2, 2)]
    data = np.stack(planes).reshape(2, 3, 64, 80).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(data, chunks=(1, 1, 32, 40)) if lazy else data,
                     name="4d", scale=(5, 2, 0.5, 0.5))
    model = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    widget = predict_dock(viewer, model, probabilities=True)
    widget.link.setValue(0.25)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    labels = viewer.layers["4d segmentation"].data
    assert labels.shape == (2, 3, 64, 80) and isinstance(labels, np.ndarray) != lazy
    assert viewer.layers["4d probabilities"].data.shape == (2, 3, 64, 80)
    np.testing.assert_allclose(viewer.layers["4d segmentation"].scale, (5, 2, 0.5, 0.5))
    expected = run(predict(model, data, widget.config())).labels
    if lazy:  # written block by block, as the engine writes it: the same objects
        from napari_unet.metrics import same_partition
        from napari_unet.predict import zarr_outputs

        out, _ = zarr_outputs(load_checkpoint(model), data, tmp_path / "l.zarr")
        run(predict(model, data, widget.config(), out_labels=out))
        np.testing.assert_array_equal(np.asarray(labels), np.asarray(out[...]))
        assert all(same_partition(expected[t, z], np.asarray(labels[t, z]))
                   for t in range(2) for z in range(3))
        return
    np.testing.assert_array_equal(labels, expected)
    found = int(expected[0].max() + expected[1].max())
    assert f"{found} objects in 2 stacks, linked through their 3 planes" in (
        widget.status.text())


@pytest.mark.parametrize("lazy", [False, True])
def test_objects_of_a_time_lapse_of_z_stacks_are_followed_through_time(
        make_napari_viewer, qtbot, tmp_path, lazy):
    """*and through time* (only with *Link planes*): each cell keeps its label from one
    time point to the next; the status counts the cells followed, in memory and on disk."""
    import dask.array as da
    from _models import thresholding_model

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.synthetic import touching_cells

    cells = np.pad(touching_cells((64, 80), n_cells=6, radius=8, seed=1)[1] > 0,
                   ((0, 0), (4, 4)))  # moved right by up to 2 px below, never wrapped
    data = np.stack([np.stack([np.roll(cells, t, axis=1)] * 3) for t in range(3)])
    data = data.astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(data, chunks=(1, 1, 32, 40)) if lazy else data, name="4d")
    model = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    viewer.add_image(data[0], name="one time point")
    widget = predict_dock(viewer, model)
    widget.image.setCurrentText("one time point")
    assert widget.follow.isHidden()  # no time to follow through
    widget.image.setCurrentText("4d")
    assert not widget.follow.isHidden()
    assert not widget.follow.isEnabled()  # nothing to follow without linking the planes
    widget.link.setValue(0.25)
    widget.follow.setChecked(True)
    assert widget.config().follow_time
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    labels = np.asarray(viewer.layers["4d segmentation"].data)
    apart = run(predict(model, data, widget.config().replace(follow_time=False))).labels
    each = len(np.unique(apart[0])) - 1
    assert each >= 3 and len(np.unique(labels)) - 1 == each  # the same cells all along
    for t in (1, 2):
        np.testing.assert_array_equal(labels[t], np.roll(labels[0], t, axis=2))
    assert f"{each} objects followed through 3 time points of 3 planes" in (
        widget.status.text())


def test_the_follow_row_follows_the_layers_added_and_removed_with_every_one(
        make_napari_viewer, model_file):
    """With *every one*, a time-lapse of z-stacks added later shows *and through time*;
    its removal hides it again."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="plane")
    widget = predict_dock(viewer, model_file)
    widget.every.setChecked(True)
    assert widget.follow.isHidden()
    viewer.add_image(np.zeros((2, 3, 32, 32), np.float32), name="4d")
    assert not widget.follow.isHidden()
    del viewer.layers["4d"]
    assert widget.follow.isHidden()


def test_a_full_disk_for_the_reopen_file_still_shows_the_result(make_napari_viewer, qtbot,
                                                                 model_file, notes,
                                                                 monkeypatch):
    import dask.array as da

    import napari_unet.pyramid as pyramid
    from napari_unet.synthetic import touching_cells

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device", "big.napari-unet")

    monkeypatch.setattr(pyramid, "write_pointer", no_space)
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(touching_cells((200, 160), n_cells=12, seed=4)[0],
                                   chunks=128), name="big")
    widget = predict_dock(viewer, model_file)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert "big segmentation" in viewer.layers
    assert any(note.startswith("The result is shown, but the file to open it again in "
                               "napari could not be written: big.napari-unet: no space "
                               "left on device.") for note in notes), notes


def test_a_lazy_multiscale_layer_is_predicted_to_disk(make_napari_viewer, qtbot, model_file,
                                                     models_home):
    import dask.array as da
    import zarr

    from napari_unet.metrics import same_partition
    from napari_unet.predict import predict
    from napari_unet.synthetic import touching_cells

    image, _ = touching_cells((300, 260), n_cells=30, radius=9, seed=4)
    store = zarr.create_array(store=models_home.parent / "in.zarr", shape=image.shape,
                              chunks=(128, 128), dtype=image.dtype)
    store[:] = image
    full = da.from_zarr(store)
    viewer = make_napari_viewer()
    viewer.add_image([full, full[::2, ::2]], name="big", multiscale=True)
    widget = predict_dock(viewer, model_file, probabilities=True)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    out = viewer.layers["big segmentation"].data
    assert isinstance(out, zarr.Array) and out.shape == image.shape  # on disk, not in memory
    assert len(list((models_home.parent / "predictions").glob("big-*.zarr"))) == 2
    expected = run(predict(model_file, image)).labels  # the objects of one pass in memory
    assert same_partition(expected, out[:])
    assert viewer.layers["big probabilities"].data.shape == image.shape
    sep = dock(viewer, "Touching-cell separation")  # a lazy labels layer, read in the thread
    sep.prediction.setCurrentText("big segmentation")
    sep.show_splits()
    qtbot.waitUntil(lambda: "big segmentation split lines" in viewer.layers, timeout=20000)
    assert viewer.layers["big segmentation split lines"].data.shape == image.shape


def test_a_result_too_large_to_show_whole_gets_overview_levels(make_napari_viewer, qtbot,
                                                               models_home, monkeypatch,
                                                               notes):
    """napari reads the whole plane of a layer that is not multiscale (a 100,000² slide's
    labels: 40 GB): a result on disk whose plane is too large to show whole is shown with
    overview levels (every other pixel of the level before), its full resolution the labels
    on disk; a smaller one is one array again, which napari can paint, in the same place."""
    import dask.array as da
    import zarr
    from _models import thresholding_model

    from napari_unet import pyramid
    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.measure import measure
    from napari_unet.metrics import same_partition

    model_file = save_checkpoint(models_home.parent / "t.safetensors", thresholding_model())
    image = (touching_cells((300, 260), n_cells=30, radius=9, seed=4)[1] > 0).astype(
        np.float32)
    viewer = make_napari_viewer()
    slide = viewer.add_image(da.from_array(image, chunks=128), name="slide", scale=(0.5, 0.5),
                             translate=(10, 20), rotate=20)
    monkeypatch.setattr(pyramid, "LEVELS_ABOVE", 200 * 200)
    monkeypatch.setattr(pyramid, "SMALLEST", 80)
    widget = predict_dock(viewer, model_file, probabilities=True)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    labels = viewer.layers["slide segmentation"]
    assert labels.multiscale and len(labels.data) == 3  # 300 -> 150 -> 75 rows
    full = labels.data[0]
    assert isinstance(full, zarr.Array) and full.shape == image.shape
    expected = run(predict(model_file, image)).labels
    assert expected.max() > 10 and same_partition(expected, full[:])
    np.testing.assert_array_equal(np.asarray(labels.data[2]), full[::4, ::4])
    table = measure(full[:], image)  # measured on disk, chunk by chunk, in the worker
    assert list(labels.features.columns) == list(table) and len(table["index"]) > 10
    for key, column in table.items():
        np.testing.assert_allclose(labels.features[key].to_numpy(), column)
    assert "solidity, place on the border and mean intensity are its" in widget.status.text()
    prob = viewer.layers["slide probabilities"]
    assert prob.multiscale and np.asarray(prob.data[1]).shape == (150, 130)
    assert "Shown with overview levels, as napari shows a slide" in widget.status.text()
    assert len(list((models_home.parent / "predictions").glob("slide-*_levels"))) == 1
    train = dock(viewer, "Train")  # trained on as it is, which napari cannot paint on
    set_quick(train)
    train.image.setCurrentText("slide")
    train.labels.setCurrentText("slide segmentation")
    train.controls.start_btn.click()
    train.controls.cancel_btn.click()
    wait_done(qtbot, train)
    assert any("Predict 'only the part in view', correct that" in n for n in notes), notes
    stored = list((models_home.parent / "predictions").glob("slide-*.napari-unet"))
    assert len(stored) == 1  # beside the stores: how to open them again
    again = make_napari_viewer()  # napari closed and opened again: they open as they were
    again.open(str(stored[0]), plugin=None)  # as a drop does: the only reader for it
    reopened, prob_again = again.layers["slide segmentation"], again.layers["slide probabilities"]
    assert reopened.__class__ is labels.__class__ and reopened.multiscale
    assert [np.asarray(a).shape for a in reopened.data] == [(300, 260), (150, 130), (75, 65)]
    np.testing.assert_array_equal(np.asarray(reopened.data[0]), full[:])
    assert list(reopened.features.columns) == list(table)  # its measurements, from x.csv
    for key, column in table.items():
        np.testing.assert_allclose(reopened.features[key].to_numpy(), column, rtol=1e-5)
    np.testing.assert_allclose(reopened.translate, (10, 20))
    np.testing.assert_allclose(reopened.scale, (0.5, 0.5))
    for pixel in ([0, 0], [299, 13]):  # turned as the image was
        np.testing.assert_allclose(reopened.data_to_world(pixel), slide.data_to_world(pixel))
        np.testing.assert_allclose(prob_again.data_to_world(pixel), slide.data_to_world(pixel))
    assert prob_again.multiscale and np.allclose(np.asarray(prob_again.data[1]),
                                                 np.asarray(prob.data[1]))
    viewer.add_image(image, name="after")  # the segmentation stays where it is
    place = viewer.layers.index(labels)
    monkeypatch.setattr(pyramid, "LEVELS_ABOVE", 8192 * 8192)
    widget.image.setCurrentText("slide")
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    again = viewer.layers["slide segmentation"]
    assert not again.multiscale and viewer.layers.index(again) == place
    assert same_partition(expected, again.data[:])


@pytest.mark.parametrize("kind", ["numpy", "dask", "multiscale"])
def test_only_the_part_in_view_is_predicted_when_asked(make_napari_viewer, qtbot, notes,
                                                      models_home, kind):
    """A quick look at a slide: *only the part in view* predicts what napari shows, at full
    resolution (in memory, also of a lazy layer), into its own layer placed there; the whole
    image's segmentation is left as it is, and its probabilities are not reused for it."""
    import dask.array as da
    from _models import thresholding_model

    from napari_unet._widgets import _in_view
    from napari_unet.checkpoint import save_checkpoint

    model_file = save_checkpoint(models_home.parent / "t.safetensors", thresholding_model())
    image = (touching_cells((300, 260), n_cells=40, radius=9, seed=4)[1] > 0).astype(
        np.float32)
    viewer = make_napari_viewer(show=True)  # drawn: napari finds the pixels in view
    lazy = da.from_array(image, chunks=128)
    data = {"numpy": image, "dask": lazy, "multiscale": [lazy, lazy[::2, ::2]]}[kind]
    layer = viewer.add_image(data, name="slide", scale=(0.5, 0.5), translate=(10, 20),
                             multiscale=kind == "multiscale")
    widget = predict_dock(viewer, model_file)
    widget.controls.start_btn.click()  # the whole image first
    wait_done(qtbot, widget)
    whole = np.asarray(viewer.layers["slide segmentation"].data[...])
    viewer.scene.camera.center = (10 + 75, 20 + 65)
    viewer.scene.camera.zoom = 30
    qtbot.wait(200)  # the canvas resized around the docked widget
    rows, cols = _in_view.view_box(viewer, layer, image.shape)
    assert 0 < (rows.stop - rows.start) * (cols.stop - cols.start) < image.size / 4
    widget.in_view.setChecked(True)
    widget.min_size.setValue(0)  # only labelling changed: still not the whole's probabilities
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    part = viewer.layers["slide in view segmentation"]
    assert isinstance(part.data, np.ndarray)  # in memory, not on disk
    expected = run(predict(model_file, image[rows, cols], widget.config())).labels
    np.testing.assert_array_equal(part.data, expected)
    np.testing.assert_allclose(part.translate, (10 + 0.5 * rows.start, 20 + 0.5 * cols.start))
    np.testing.assert_array_equal(viewer.layers["slide segmentation"].data[...], whole)
    assert "Labelled again" not in widget.status.text()
    viewer.dims.ndisplay = 3
    widget.controls.start_btn.click()
    assert any("switch napari to its 2D view" in n for n in notes), notes
    widget.every.setChecked(True)
    assert not widget.in_view.isEnabled()


def test_a_layer_too_large_for_memory_is_predicted_to_disk(make_napari_viewer, qtbot, notes,
                                                          models_home, monkeypatch):
    """A numpy layer whose prediction would not fit in the memory free (a slide opened
    whole) took napari down with the user's unsaved layers: it is now predicted block by
    block on disk, as a lazy layer is, with the same objects; a resize that could not fit
    is refused in a sentence."""
    import zarr
    from _models import thresholding_model

    from napari_unet import memory
    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.metrics import same_partition

    model = thresholding_model()
    model.task["object_diameter"] = 18.0
    model_file = save_checkpoint(models_home.parent / "sized.safetensors", model)
    image = (touching_cells((300, 260), n_cells=30, radius=9, seed=4)[1] > 0).astype(
        np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="slide", scale=(0.5, 0.5))
    widget = predict_dock(viewer, model_file)
    monkeypatch.setattr(memory, "free_memory", lambda: 300 * 260 * memory.BYTES_PER_PIXEL)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    layer = viewer.layers["slide segmentation"]
    assert isinstance(layer.data, zarr.Array)  # on disk, shown lazily
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))
    expected = run(predict(model_file, image)).labels  # one pass in memory
    assert expected.max() > 10 and same_partition(expected, layer.data[:])
    status = widget.status.text()
    assert (f": {expected.max()} objects. Predicted block by block on disk (in memory it would "
            "need about") in status and str(models_home.parent / "predictions") in status
    viewer.add_image(image[:64, :64], name="corner")  # predicted in memory
    corner = run(predict(model_file, image[:64, :64])).labels.max()
    widget.every.setChecked(True)  # in turn with other layers: its objects counted in too
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert f"Done: 2 layer(s), {expected.max() + corner} objects" in widget.status.text()
    viewer.layers.remove("corner")
    viewer.layers.remove("corner segmentation")
    widget.every.setChecked(False)
    widget.diameter.setValue(9.0)  # cells of 18 px from 9: four times the pixels, in memory
    widget.controls.start_btn.click()
    assert widget.controls.run is None
    assert any("leave the cell diameter empty" in n for n in notes), notes
    assert viewer.layers["slide segmentation"] is layer and list(viewer.layers).__len__() == 2


def test_a_lazy_prediction_cancelled_or_refused_leaves_no_store(model_file, models_home):
    """The zarr stores of a lazy layer are made when its prediction starts and removed if
    it does not finish: Cancel (the generator closed) or a refused image."""
    import dask.array as da

    from napari_unet._widgets._outputs import predict_to_disk
    from napari_unet.errors import InputError
    from napari_unet.synthetic import touching_cells

    ckpt = load_checkpoint(model_file)
    image = da.from_array(touching_cells((300, 260), n_cells=30, radius=9, seed=4)[0],
                          chunks=128)
    folder = models_home.parent / "predictions"
    job = predict_to_disk(ckpt, image, PredictConfig(), "big", True)
    assert not folder.exists()  # nothing made before the prediction starts
    next(job)
    assert len(list(folder.glob("big-*.zarr"))) == 2
    job.close()  # what Cancel does
    assert list(folder.glob("*")) == []
    rgb = da.zeros((64, 64, 3), chunks=32)  # three channels for a one-channel model
    with pytest.raises(InputError, match="channel"):
        next(predict_to_disk(ckpt, rgb, PredictConfig(), "rgb", False))
    assert list(folder.glob("*")) == []
    job = predict_to_disk(ckpt, image, PredictConfig(), "big", True)
    said = [event for event in job]  # to the end: the labels are read to count, to measure
    assert "counting the objects" in [event.message for event in said]
    measuring = [event for event in said if event.message == "measuring the objects"]
    assert len(measuring) >= 3 and measuring[-1].done == measuring[-1].total  # each pass
    assert len(list(folder.glob("big-*.zarr"))) == 2
    for step in ("counting the objects", "measuring the objects"):
        job = predict_to_disk(ckpt, image, PredictConfig(), "again", False)
        while next(job).message != step:
            pass
        job.close()  # a Cancel while counting or measuring: not shown, so not kept
        assert not list(folder.glob("again-*"))


@pytest.mark.parametrize("case", ["RGB image for a grey model", "NaN image"])
def test_bad_image_for_prediction_notifies(cells_viewer, qtbot, notes, model_file, case):
    if case == "NaN image":
        cells_viewer.add_image(np.full((40, 40), np.nan, np.float32), name="wrong")
        expected = "NaN"
    else:
        colour = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
        cells_viewer.add_image(colour, name="wrong", rgb=True)
        expected = "Split RGB"
    widget = predict_dock(cells_viewer, model_file)
    widget.image.setCurrentText("wrong")
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert any(expected in n and "wrong" in n for n in notes), notes
    assert "wrong segmentation" not in cells_viewer.layers
    assert widget.status.text().startswith("No layer was changed: ")
    assert expected in widget.status.text()


def test_predict_with_a_bad_model_file_notifies(cells_viewer, notes, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    widget = predict_dock(cells_viewer, bad)
    widget.controls.start_btn.click()
    assert widget.controls.run is None and any("bad.safetensors" in n for n in notes), notes
    assert "cells segmentation" not in cells_viewer.layers
    assert widget.status.text().startswith("No layer was changed: ")  # not the model's line
    assert "bad.safetensors" in widget.status.text()


def test_separation_view_shows_weights_and_borders(cells_viewer, qtbot):
    widget = dock(cells_viewer, "Touching-cell separation")
    widget.labels.setCurrentText("cells labels")
    widget.show_weights()
    qtbot.waitUntil(lambda: "cells labels weight map" in cells_viewer.layers, timeout=20000)
    weights = cells_viewer.layers["cells labels weight map"].data
    borders = cells_viewer.layers["cells labels separating borders"].data
    assert weights.shape == borders.shape == (96, 96) and borders.any()
    assert weights[borders > 0].mean() > weights[borders == 0].mean()
    assert "cells labels joined cells?" not in cells_viewer.layers  # each cell its own label
    for w0 in range(11, 21):  # a live slider dragged: the map is recomputed for the last value
        widget.w0.setValue(w0)
    qtbot.waitUntil(lambda: not widget.busy, timeout=20000)
    assert cells_viewer.layers["cells labels weight map"].data.max() > weights.max()
    np.testing.assert_allclose(cells_viewer.layers["cells labels weight map"].data.max(),
                               2 * (weights.max() - 1) + 1, rtol=0.05)  # w_c ~1 + w0 term
    widget.prediction.setCurrentText("cells labels")
    widget.show_splits()
    qtbot.waitUntil(lambda: "cells labels split lines" in cells_viewer.layers, timeout=20000)
    assert cells_viewer.layers["cells labels split lines"].data.any()
    assert "touch another one" in widget.status.text()


def test_separation_view_takes_labels_numbered_sparsely(make_napari_viewer, qtbot):
    """Ids from another tool (here up to 2**45) are only names: the same weight map."""
    viewer = make_napari_viewer()
    _, labels = touching_cells((96, 96), n_cells=8, seed=0)
    viewer.add_labels(labels.astype(np.uint64) * 2**40, name="sparse")
    viewer.add_labels(labels, name="dense")
    widget = dock(viewer, "Touching-cell separation")
    for name in ("sparse", "dense"):
        widget.labels.setCurrentText(name)
        widget.show_weights()
        qtbot.waitUntil(lambda n=name: f"{n} weight map" in viewer.layers, timeout=20000)
    np.testing.assert_array_equal(viewer.layers["sparse weight map"].data,
                                  viewer.layers["dense weight map"].data)


def test_separation_view_shows_touching_cells_painted_with_one_label(make_napari_viewer,
                                                                     qtbot):
    viewer = make_napari_viewer()
    _, labels = touching_cells((192, 192), n_cells=24, radius=9, seed=4)
    viewer.add_labels((labels > 0).astype(np.uint8), name="mask")  # the brush left at 1
    widget = dock(viewer, "Touching-cell separation")
    widget.labels.setCurrentText("mask")
    widget.show_weights()
    qtbot.waitUntil(lambda: "mask joined cells?" in viewer.layers, timeout=20000)
    joined = viewer.layers["mask joined cells?"].data
    assert len(np.unique(joined)) - 1 >= 2
    for k in np.unique(joined)[1:]:  # each one covers several of the cells painted
        assert len(np.unique(labels[joined == k])) >= 2
    assert "painted with one label" in widget.status.text()


def test_separation_view_shows_cells_left_unlabelled_in_the_chosen_image(make_napari_viewer,
                                                                          qtbot):
    viewer = make_napari_viewer()
    image, labels = touching_cells((192, 192), n_cells=24, radius=9, seed=4)
    viewer.add_image(image, name="cells")
    viewer.add_labels(np.where(labels <= 12, labels, 0), name="half")  # half painted
    viewer.add_labels(labels, name="all")
    widget = dock(viewer, "Touching-cell separation")
    widget.labels.setCurrentText("all")
    widget.image.setCurrentText("cells")
    widget.show_weights()
    qtbot.waitUntil(lambda: "all weight map" in viewer.layers, timeout=20000)
    qtbot.waitUntil(lambda: not widget.busy, timeout=20000)
    assert "all unlabelled cells?" not in viewer.layers  # every cell painted
    widget.labels.setCurrentText("half")
    widget.show_weights()
    qtbot.waitUntil(lambda: "half unlabelled cells?" in viewer.layers, timeout=20000)
    found = viewer.layers["half unlabelled cells?"].data
    assert found.max() >= 3 and not (found > 0)[labels.astype(bool) & (labels <= 12)].any()
    for k in range(1, found.max() + 1):  # each region lies on a cell left unpainted
        assert (labels[found == k] > 12).mean() > 0.5
    assert "carry no label" in widget.status.text()


def test_separation_view_keeps_napari_responsive_on_a_large_layer(make_napari_viewer, qtbot):
    """The weight map of a 4096² labels layer takes seconds: it is computed in a thread, so
    the GUI's event loop keeps running meanwhile."""
    from napari_unet.synthetic import touching_cells

    viewer = make_napari_viewer()
    _, lab = touching_cells((1024, 1024), n_cells=300, radius=12, seed=0)
    big = np.tile(lab.astype(np.int32), (4, 4))  # a value reused 16 times: 16 cells
    viewer.add_labels([big, big[::2, ::2]], name="big labels", multiscale=True)
    widget = dock(viewer, "Touching-cell separation")
    widget.labels.setCurrentText("big labels")
    ticks, gaps, last = [], [], [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now
        ticks.append(now)

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(20)
    widget.show_weights()
    assert widget.busy  # returned at once; the map is being computed
    qtbot.waitUntil(lambda: "big labels weight map" in viewer.layers, timeout=60000)
    timer.stop()
    assert len(ticks) > 10 and max(gaps) < 1.0, (len(ticks), max(gaps))
    assert viewer.layers["big labels weight map"].data.shape == (4096, 4096)  # full resolution


@pytest.mark.parametrize("multiscale", [False, True])
def test_separation_view_of_a_slide_works_on_the_part_in_view(make_napari_viewer, qtbot,
                                                              notes, monkeypatch,
                                                              multiscale):
    """The whole plane of a slide's labels (a prediction on disk, 30,000² px) took more
    memory than was free: beyond 4096² px the view works on the part in view, placed where
    it is, and asks to zoom in where even that is larger (or to switch to the 2D view)."""
    from napari_unet._widgets import _in_view
    from napari_unet.instances import separated_objects
    from napari_unet.synthetic import touching_cells
    from napari_unet.targets import instance_targets

    monkeypatch.setattr(_in_view, "WHOLE_PLANE", 100 * 100)  # the 300 x 260 px layer a slide
    image, labels = touching_cells((300, 260), n_cells=40, radius=9, seed=4)
    viewer = make_napari_viewer(show=True)  # drawn: napari finds the pixels in view
    viewer.add_image(image, name="slide", scale=(0.5, 0.5), translate=(10, 20))
    data = labels.astype(np.int32)
    layer = viewer.add_labels([data, data[::2, ::2]] if multiscale else data,
                              multiscale=multiscale, name="slide labels", scale=(0.5, 0.5),
                              translate=(10, 20))
    widget = dock(viewer, "Touching-cell separation")
    widget.labels.setCurrentText("slide labels")
    widget.image.setCurrentText("slide")
    widget.prediction.setCurrentText("slide labels")
    widget.show_splits()  # all of it in view: too large
    assert any("is 300 x 260 px" in n and "zoom in" in n for n in notes), notes
    assert "slide labels split lines" not in viewer.layers
    viewer.dims.ndisplay = 3  # seen in 3D, no part of the plane is the one in view
    widget.show_splits()
    assert any("switch napari to its 2D view" in n for n in notes), notes
    assert "slide labels split lines" not in viewer.layers
    viewer.dims.ndisplay = 2
    viewer.scene.camera.center = (10 + 75, 20 + 65)
    viewer.scene.camera.zoom = 30
    qtbot.wait(200)  # the canvas resized around the docked widget
    rows, cols = _in_view.view_box(viewer, layer, labels.shape)
    assert 0 < (rows.stop - rows.start) * (cols.stop - cols.start) <= 100 * 100
    part = labels[rows, cols]
    widget.show_splits()
    qtbot.waitUntil(lambda: "slide labels split lines" in viewer.layers, timeout=20000)
    lines = viewer.layers["slide labels split lines"]
    np.testing.assert_array_equal(lines.data, separated_objects(part)[0])
    np.testing.assert_allclose(lines.translate, (10 + 0.5 * rows.start, 20 + 0.5 * cols.start))
    widget.show_weights()
    qtbot.waitUntil(lambda: "slide labels weight map" in viewer.layers, timeout=20000)
    weights = viewer.layers["slide labels weight map"]
    np.testing.assert_allclose(weights.data, instance_targets(part)[1], rtol=1e-5)
    np.testing.assert_allclose(weights.translate, lines.translate)


def test_each_epoch_gives_its_loss_and_validation_score(cells_viewer):
    from napari_unet.train import TrainEvent

    widget = dock(cells_viewer, "Train")
    widget._on_event(TrainEvent("epoch", epoch=3, loss=0.25, val={
        "dice": 0.9, "score": 0.4321, "threshold": 0.5}))
    assert widget.status.text() == "epoch 3: loss 0.250, validation score 0.432"
    widget._on_event(TrainEvent("epoch", epoch=4, loss=0.2, val=None))  # no validation image
    assert widget.status.text() == "epoch 4: loss 0.200"
    assert widget.plot.loss == [0.25, 0.2] and widget.plot.score == [0.4321]


def test_the_train_widget_says_when_fine_tuning_kept_the_starting_model(cells_viewer,
                                                                          tmp_path):
    from napari_unet.train import STARTING_MODEL_KEPT, TrainResult

    widget = dock(cells_viewer, "Train")
    out = tmp_path / "m.safetensors"
    epochs = [{"epoch": 1, "dice": 0.5, "score": 0.5}]
    # the last case: the time ran out before a fine-tuned epoch ended
    for epoch, said, history in ((0, True, epochs), (3, False, epochs), (0, True, [])):
        result = TrainResult(checkpoint=SimpleNamespace(mode="instances"), path=out,
                             best_score=0.8, best_epoch=epoch, history=history, device="CPU")
        widget._on_done(result, out)
        assert "Finished" in widget.status.text()
        assert ("best validation score 0.800 (average precision of the objects over IoU 0.5 "
                "to 0.9; 1 is perfect)") in widget.status.text()
        assert (STARTING_MODEL_KEPT in widget.status.text()) == said


def test_the_shipped_nuclei_model_is_offered_for_fine_tuning_and_prediction(cells_viewer,
                                                                           qtbot):
    train_w, predict_w = dock(cells_viewer, "Train"), dock(cells_viewer, "Predict")
    choices = [train_w.start_from.itemText(i) for i in range(train_w.start_from.count())]
    assert "nuclei (shipped)" in choices
    train_w.start_from.setCurrentText("nuclei (shipped)")
    train_w.match.setChecked(True)  # fine-tune at the cell size it learnt
    cfg, _, init = train_w.configs()
    assert load_checkpoint(init).config.in_channels == 1 and cfg.match_size
    predict_w.model.setCurrentText("nuclei (shipped)")
    assert load_checkpoint(predict_w.model_path()).mode == "instances"
    # its calibrated threshold is shown, and is where the threshold starts when unticked
    shipped_threshold = load_checkpoint(predict_w.model_path()).threshold
    assert f"({shipped_threshold:.2f})" in predict_w.own_threshold.text()
    assert predict_w.threshold.value() == pytest.approx(shipped_threshold)
    # the path fields show only for "model file…"
    assert predict_w.model_file.isHidden() and train_w.init_file.isHidden()
    predict_w.model.setCurrentText(FROM_FILE)
    assert not predict_w.model_file.isHidden()
    predict_w.model.setCurrentText("nuclei (shipped)")
    train_w.start_from.setCurrentText("new model")
    predict_w.controls.start_btn.click()
    wait_done(qtbot, predict_w)
    train_w.labels.setCurrentText("cells segmentation")  # what it made: offered to fine-tune
    assert train_w.start_from.currentText() == "nuclei (shipped)"


def test_the_label_mode_and_target_follow_the_model_chosen_to_fine_tune(cells_viewer,
                                                                        tmp_path):
    """A model is fine-tuned for what it was made for; the widget shows it (it trained an
    instances model when 'semantic' was chosen, and said nothing)."""
    from _models import thresholding_model

    from napari_unet.checkpoint import save_checkpoint

    train_w = dock(cells_viewer, "Train")
    semantic = save_checkpoint(tmp_path / "s.safetensors", thresholding_model("semantic"))
    train_w.start_from.setCurrentText(FROM_FILE)
    train_w.init_file.edit.setText(str(semantic))
    assert train_w.mode.currentText() == "semantic"
    train_w.target.setCurrentText("three_class")
    train_w.start_from.setCurrentText("nuclei (shipped)")
    assert (train_w.mode.currentText(), train_w.target.currentText()) == ("instances",
                                                                          "two_class")
    train_w.start_from.setCurrentText("new model")  # a new model: the choices stay
    assert train_w.mode.currentText() == "instances"


def test_a_cell_diameter_resizes_and_gives_labels_at_the_images_size(cells_viewer, qtbot,
                                                                     model_file, notes,
                                                                     monkeypatch):
    import napari_unet.predict as engine
    from napari_unet.checkpoint import load_checkpoint, save_checkpoint

    configs, original = [], engine.predict

    def recording(model, image, config, **kw):
        configs.append(config)
        return original(model, image, config, **kw)

    monkeypatch.setattr(engine, "predict", recording)
    widget = predict_dock(cells_viewer, model_file)
    learnt = load_checkpoint(model_file).object_diameter
    assert f"cells of about {learnt:.0f} px" in widget.diameter_hint.text()
    widget.diameter.setValue(2 * learnt)  # cells twice the size: predicted at half the size
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert configs[-1].diameter == pytest.approx(2 * learnt, abs=0.1)
    widget.estimate.setChecked(True)  # estimated from a first pass instead
    assert not widget.diameter.isEnabled()
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert configs[-1].diameter == "auto" and "cells of about" in widget.status.text().lower()
    widget.estimate.setChecked(False)
    out = cells_viewer.layers["cells segmentation"]
    assert out.data.shape == (96, 96)
    np.testing.assert_allclose(out.scale, (2.0, 0.5))
    # a model that does not know its cell size: one sentence, no layer changed
    ck = load_checkpoint(model_file)
    del ck.task["object_diameter"]
    unsized = save_checkpoint(model_file.with_name("unsized.safetensors"), ck)
    widget.model_file.edit.setText(str(unsized))
    assert "does not record" in widget.diameter_hint.text()
    before = out.data.copy()
    widget.controls.start_btn.click()
    assert any("does not record the size of the cells" in n for n in notes), notes
    np.testing.assert_array_equal(cells_viewer.layers["cells segmentation"].data, before)
    widget.model_file.edit.setText("")  # no file chosen yet: nothing to say
    assert widget.diameter_hint.text() == ""


def test_training_on_a_partly_labelled_image_learns_only_inside_the_region(
        cells_viewer, qtbot, models_home, notes):
    from napari_unet._widgets._regions import region_mask

    labels = cells_viewer.layers["cells labels"]
    labels.data = np.where(np.arange(96)[None, :] < 48, labels.data, 0)  # left half painted
    # drawn on screen over the left half: world y 0..192, x 0..24 (the layers' scale 2, 0.5)
    shapes = cells_viewer.add_shapes([[[0, 0], [0, 23.5], [191, 23.5], [191, 0]]],
                                     shape_type="rectangle", name="painted")
    mask = region_mask(shapes, labels)
    assert mask.shape == (96, 96) and mask[:, :47].all() and not mask[:, 49:].any()
    widget = dock(cells_viewer, "Train")
    set_quick(widget)
    widget.region.setCurrentText("painted")
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert "Finished" in widget.status.text(), (widget.status.text(), notes)
    saved = list(models_home.glob("*.safetensors"))
    assert load_checkpoint(saved[0]).training["annotated_regions"] == 1
    # an empty shapes layer: one sentence, nothing trained
    cells_viewer.add_shapes(name="nothing drawn")
    widget.region.setCurrentText("nothing drawn")
    widget._add_pair()
    assert widget._pair_names() == [("cells", "cells labels", "nothing drawn")]
    widget.controls.start_btn.click()
    assert any("'nothing drawn' has no shape" in n for n in notes), notes
    assert len(list(models_home.glob("*.safetensors"))) == 1


def test_labels_on_disk_corrected_in_a_region_train(make_napari_viewer, qtbot, models_home,
                                                    tmp_path, notes):
    """A slide's labels predicted on disk (a zarr-backed layer), corrected in a region: the
    training reads the region's box from disk, not the whole layer."""
    import zarr

    from napari_unet.synthetic import touching_cells

    image, labels = touching_cells((160, 160), n_cells=16, radius=8, seed=3)
    on_disk = zarr.create_array(store=tmp_path / "slide labels.zarr", shape=labels.shape,
                                chunks=(64, 64), dtype="int32")
    on_disk[:] = labels
    viewer = make_napari_viewer()
    viewer.add_image(image, name="slide")
    viewer.add_labels(on_disk, name="slide segmentation (corrected)")
    viewer.add_shapes([[[10, 10], [10, 90], [90, 90], [90, 10]]], shape_type="rectangle",
                      name="corrected here")
    widget = dock(viewer, "Train")
    widget.image.setCurrentText("slide")
    widget.labels.setCurrentText("slide segmentation (corrected)")
    widget.region.setCurrentText("corrected here")
    set_quick(widget)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert "Finished" in widget.status.text(), (widget.status.text(), notes)
    saved = list(models_home.glob("*.safetensors"))
    assert len(saved) == 1 and load_checkpoint(saved[0]).training["annotated_regions"] == 1


def test_regions_over_a_stack_cover_every_plane_or_the_one_drawn_in():
    from napari.layers import Labels, Shapes

    from napari_unet._widgets._regions import region_mask

    labels = Labels(np.zeros((3, 40, 50), np.int32))
    flat = Shapes([[[5, 5], [5, 20], [15, 20], [15, 5]]], shape_type="rectangle")
    mask = region_mask(flat, labels)
    assert mask.shape == (3, 40, 50) and all(m.sum() == 11 * 16 for m in mask)
    in_plane = Shapes([[[1, 5, 5], [1, 5, 20], [1, 15, 20], [1, 15, 5]]],
                      shape_type="rectangle")
    assert region_mask(in_plane, labels).sum(axis=(1, 2)).tolist() == [0, 11 * 16, 0]


def test_a_region_is_drawn_in_its_box_as_napari_draws_it_in_the_whole_plane():
    """napari draws shapes as int64 labels of the whole plane: 3.2 GB for a 20,000² slide
    (7.2 GB at 30,000²), on the GUI thread, when a training starts with a 'Labelled in'
    region. The region is drawn in the shapes' box: the same pixels, the memory of the
    box."""
    import tracemalloc
    from types import SimpleNamespace

    from napari.layers import Shapes

    from napari_unet._widgets._regions import region_mask

    shapes = Shapes([[[5, 7], [5, 30], [22, 30], [22, 7]], [[30, 40], [48, 80], [10, 60]],
                     [[-5, -5], [-5, 12], [12, 12], [12, -5]]],  # partly off the image
                    shape_type=["ellipse", "polygon", "rectangle"], scale=(0.5, 2.0),
                    translate=(3.0, -4.0))
    labels = SimpleNamespace(data=np.zeros((60, 90), np.int32), scale=(0.25, 1.0),
                             translate=(1.0, 0.0))
    whole = Shapes([(np.asarray(v) * (0.5, 2.0) + (3.0, -4.0) - (1.0, 0.0)) / (0.25, 1.0)
                    for v in shapes.data], shape_type=list(shapes.shape_type))
    np.testing.assert_array_equal(region_mask(shapes, labels), whole.to_labels((60, 90)) > 0)
    slide = SimpleNamespace(data=SimpleNamespace(shape=(20000, 20000)), scale=(1.0, 1.0),
                            translate=(0.0, 0.0))
    small = Shapes([[[9000, 9000], [9000, 9600], [9500, 9600], [9500, 9000]]],
                   shape_type="rectangle")
    tracemalloc.start()
    mask = region_mask(small, slide)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert mask.shape == (20000, 20000) and mask.sum() == 501 * 601
    assert peak < 20000**2 * 1.5  # the plane's booleans (untouched: no memory) and the box


def test_every_image_layer_is_segmented_in_turn_and_a_bad_one_is_skipped(cells_viewer, qtbot,
                                                                        model_file):
    cells_viewer.add_image(np.random.default_rng(2).random((64, 80)), name="second")
    cells_viewer.add_image(np.full((40, 40), np.nan, np.float32), name="broken")
    widget = predict_dock(cells_viewer, model_file, probabilities=True)
    widget.every.setChecked(True)
    assert not widget.image.isEnabled()
    for _ in range(2):  # the second run must not segment the probability maps it added
        widget.controls.start_btn.click()
        wait_done(qtbot, widget)
        assert cells_viewer.layers["cells segmentation"].data.shape == (96, 96)
        assert cells_viewer.layers["second segmentation"].data.shape == (64, 80)
        assert "broken segmentation" not in cells_viewer.layers
        assert "skipped broken" in widget.status.text() and "NaN" in widget.status.text()
        found = (cells_viewer.layers["cells segmentation"].data.max()
                 + cells_viewer.layers["second segmentation"].data.max())
        assert f"Done: 2 layer(s), {found:,} objects" in widget.status.text()
    names = [layer.name for layer in cells_viewer.layers]
    assert not any("probabilities segmentation" in name for name in names), names
    np.testing.assert_allclose(cells_viewer.layers["cells segmentation"].scale, (2.0, 0.5))


def test_training_on_a_lazy_stack_reads_only_its_labelled_planes(make_napari_viewer,
                                                                 models_home):
    """An image opened lazily (Dask; a multiscale one as well) with one plane labelled: the
    Train widget's snapshot on napari's GUI thread reads that plane, not the whole stack."""
    import dask.array as da

    from napari_unet.synthetic import touching_cells

    image, labels = touching_cells((96, 96), n_cells=10, radius=8, seed=0)
    stack = np.stack([image] * 6)
    read = []

    def plane(block, block_info=None):
        read.append(block_info[0]["chunk-location"][0])
        return block

    lazy = da.from_array(stack, chunks=(1, 96, 96)).map_blocks(plane, dtype=stack.dtype)
    viewer = make_napari_viewer()
    viewer.add_image([lazy, lazy[:, ::2, ::2]], multiscale=True, name="stack")
    painted = np.zeros(stack.shape, np.int32)
    painted[4] = labels
    viewer.add_labels(painted, name="stack labels")
    widget = dock(viewer, "Train")
    read.clear()  # napari reads what it shows
    images, labs, _, _ = widget.snapshot()
    assert set(read) == {4} and len(images) == 1
    np.testing.assert_array_equal(images[0], image)
    np.testing.assert_array_equal(labs[0], labels)


def test_training_on_a_time_lapse_of_z_stacks_takes_its_labelled_planes(make_napari_viewer):
    """(T, Z, Y, X) with two planes painted: those planes, named by time point and plane,
    and of a lazy image only those are read."""
    import dask.array as da

    from napari_unet.synthetic import touching_cells

    image, labels = touching_cells((96, 96), n_cells=10, radius=8, seed=0)
    stacks = np.stack([image + k for k in range(6)]).reshape(2, 3, 96, 96)
    read = []

    def plane(block, block_info=None):
        read.append(tuple(block_info[0]["chunk-location"][:2]))
        return block

    lazy = da.from_array(stacks, chunks=(1, 1, 96, 96)).map_blocks(plane, dtype=stacks.dtype)
    viewer = make_napari_viewer()
    viewer.add_image(lazy, name="4d")
    painted = np.zeros(stacks.shape, np.int32)
    painted[1, 2] = labels
    painted[0, 1] = labels
    viewer.add_labels(painted, name="4d labels")
    widget = dock(viewer, "Train")
    read.clear()  # napari reads what it shows
    images, labs, _, names = widget.snapshot()
    assert sorted(set(read)) == [(0, 1), (1, 2)]
    assert names == ["4d / 4d labels, time 1, plane 2", "4d / 4d labels, time 2, plane 3"]
    np.testing.assert_array_equal(images[1], stacks[1, 2])
    np.testing.assert_array_equal(labs[0], labels)


def test_separation_view_shows_the_plane_in_view_of_a_time_lapse_of_z_stacks(
        make_napari_viewer, qtbot):
    """(T, Z, Y, X) labels were refused ("must be 2D or a stack of 2D planes")."""
    from napari_unet.synthetic import touching_cells

    planes = [touching_cells((96, 96), n_cells=8, seed=s) for s in range(6)]
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([p[0] for p in planes]).reshape(2, 3, 96, 96), name="4d")
    viewer.add_labels(np.stack([p[1] for p in planes]).reshape(2, 3, 96, 96), name="l4")
    viewer.dims.set_current_step(0, 1)
    viewer.dims.set_current_step(1, 2)  # time 2, plane 3: planes[5]
    widget = dock(viewer, "Touching-cell separation")
    widget.labels.setCurrentText("l4")
    widget.image.setCurrentText("4d")
    widget.show_weights()
    qtbot.waitUntil(lambda: "l4 weight map" in viewer.layers, timeout=20000)
    from napari_unet.targets import instance_targets

    np.testing.assert_allclose(viewer.layers["l4 weight map"].data,
                               instance_targets(planes[5][1])[1])
