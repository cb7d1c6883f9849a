"""Images other than one grey channel, trained and predicted in napari: an RGB bright-field
image with a class mask, and channels held in separate layers."""

import numpy as np
from conftest import dock, set_quick, wait_done
from napari.layers.utils.stack_utils import images_to_stack

from napari_unet._widgets._model_hints import UNCALIBRATED
from napari_unet.checkpoint import load_checkpoint
from napari_unet.synthetic import touching_cells


def bright_field(size=96, seed=0):
    """Dark stained cells (class 1) with darker nuclei (class 2) on a light background, as
    an RGB uint8 image and its class mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.uint8)
    for _ in range(8):
        cy, cx = rng.integers(12, size - 12, 2)
        r = rng.integers(7, 11)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= (r // 2) ** 2] = 2
    colour = np.array([[235, 230, 225], [200, 120, 170], [90, 60, 140]], float)
    image = colour[mask] + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _trained(train, qtbot, models_home, count: int):
    """Start the Train widget, wait, and return the newest of the ``count`` models saved."""
    train.controls.start_btn.click()
    wait_done(qtbot, train)
    saved = list(models_home.glob("*.safetensors"))
    assert len(saved) == count, train.status.text()
    return load_checkpoint(max(saved, key=lambda p: p.stat().st_mtime_ns))


def test_an_rgb_image_with_a_class_mask_trains_and_predicts_classes(make_napari_viewer,
                                                                     qtbot, models_home):
    """Settings for objects are greyed out for a model of classes, and the status gives
    the share of each class."""
    viewer = make_napari_viewer()
    image, mask = bright_field()
    viewer.add_image(image, name="bright field", rgb=True)
    viewer.add_labels(mask, name="bright field classes")
    train = dock(viewer, "Train")
    instance_only = (train.target, train.w0, train.sigma)
    assert all(w.isEnabled() for w in instance_only)
    train.mode.setCurrentText("semantic")
    assert not any(w.isEnabled() for w in instance_only)
    assert "instances mode" in train.w0.toolTip()
    set_quick(train, 2)
    train.controls.start_btn.click()
    wait_done(qtbot, train)
    saved = list(models_home.glob("*.safetensors"))
    assert len(saved) == 1, train.status.text()
    model = load_checkpoint(saved[0])
    assert (model.config.in_channels, model.config.n_classes) == (3, 3)

    predict = dock(viewer, "Predict")
    assert predict.model_path() == str(saved[0])  # the model just trained
    labelling = (predict.method, predict.necks, predict.min_size, predict.link,
                 predict.own_threshold, predict.threshold)
    assert not any(w.isEnabled() for w in labelling)  # they do not apply to classes
    assert "3 classes" in predict.diameter_hint.text()
    predict.image.setCurrentText("bright field")
    predict.controls.start_btn.click()
    wait_done(qtbot, predict)
    out = viewer.layers["bright field segmentation"]
    assert out.data.shape == mask.shape and out.data.dtype.kind in "iu"
    assert set(np.unique(out.data)) <= {0, 1, 2}
    found = [((out.data == k) & (mask == k)).sum() / (mask == k).sum() for k in range(3)]
    assert (out.data == mask).mean() > 0.85 and min(found) > 0.5, found  # every class
    assert "bright field" in viewer.layers and "bright field classes" in viewer.layers
    share = f"class 2 {100 * (out.data == 2).mean():.0f} %"
    assert share in predict.status.text()

    predict.model.setCurrentText("nuclei (shipped)")  # an instance model: all apply again
    assert all(w.isEnabled() for w in labelling[:5]) and not predict.threshold.isEnabled()
    predict.own_threshold.setChecked(False)
    assert predict.threshold.isEnabled()
    train.mode.setCurrentText("instances")
    assert all(w.isEnabled() for w in instance_only)
    assert train.w0.toolTip() == "border weight amplitude w0"  # its own tip again


def test_channels_in_separate_layers_merged_to_a_stack_train_and_predict(
        make_napari_viewer, qtbot, models_home, notes):
    """Nuclei and a second channel in two layers (as napari opens a multi-channel file):
    *Merge to Stack* makes one (C, H, W) layer, which trains a two-channel model with 2D
    labels and is predicted as one image of two channels."""
    viewer = make_napari_viewer()
    grey, cells = touching_cells((96, 96), n_cells=10, radius=8, seed=0)
    noise = np.random.default_rng(0).normal(0, 1, grey.shape).astype(np.float32)
    channels = [viewer.add_image(grey, name="nuclei"), viewer.add_image(noise, name="other")]
    stack = viewer.add_layer(images_to_stack(channels))  # right-click > Merge to Stack
    assert stack.data.shape == (2, 96, 96)
    viewer.add_labels(cells.astype(np.int32), name="cells")
    train = dock(viewer, "Train")
    train.image.setCurrentText(stack.name)
    train.labels.setCurrentText("cells")
    set_quick(train, 2)
    assert _trained(train, qtbot, models_home, 1).config.in_channels == 2
    said = [note for note in notes if "read as one image of" in note]  # said, as read
    assert said == [f"'{stack.name}' has 2 planes and its labels one, so it is read as one "
                    "image of 2 channels. If its planes are a z-stack or a time-lapse, label "
                    "them in a labels layer of as many planes (napari's New labels layer "
                    "makes one)."]

    predict = dock(viewer, "Predict")
    assert "no validation image" in train.status.text()  # one image: nothing calibrated
    assert predict.own_threshold.text() == UNCALIBRATED
    predict.image.setCurrentText(stack.name)
    predict.controls.start_btn.click()
    wait_done(qtbot, predict)
    out = viewer.layers[f"{stack.name} segmentation"].data
    assert out.shape == cells.shape  # one image of two channels, not two planes
    overlap = 2 * ((out > 0) & (cells > 0)).sum() / ((out > 0).sum() + (cells > 0).sum())
    assert overlap > 0.5


def test_cells_numbered_1_to_n_trained_as_classes_give_a_warning(cells_viewer, qtbot, notes):
    train = dock(cells_viewer, "Train")  # "cells labels": ten cells numbered 1..10
    train.mode.setCurrentText("semantic")
    set_quick(train)
    train.controls.start_btn.click()
    wait_done(qtbot, train)
    warned = [n for n in notes if "choose the instances mode" in n]
    assert len(warned) == 1 and "10 classes" in warned[0], notes


def test_cells_left_unlabelled_give_a_warning_naming_the_image(make_napari_viewer, qtbot,
                                                               notes):
    viewer = make_napari_viewer()
    image, labels = touching_cells((192, 192), n_cells=24, radius=9, seed=4)
    viewer.add_image(image, name="cells")
    viewer.add_labels(np.where(labels <= 12, labels, 0), name="cells labels")  # half painted
    train = dock(viewer, "Train")
    set_quick(train)
    train.controls.start_btn.click()
    wait_done(qtbot, train)
    warned = [n for n in notes if "look like the labelled cells but carry no label" in n]
    assert len(warned) == 1 and "cells / cells labels (" in warned[0], notes
    assert "Labelled in" in warned[0]
    assert warned[0] in train.warned.text()  # kept in view after the notification goes
    viewer.layers["cells labels"].data = labels  # every cell painted: trained again
    train.controls.start_btn.click()
    wait_done(qtbot, train)
    assert train.warned.text() == ""


def test_a_fiji_hyperstack_opened_in_napari_is_segmented_in_the_channel_chosen(
        make_napari_viewer, qtbot, tmp_path, notes):
    """napari opens a (Z, C, Y, X) hyperstack as one layer; a single-channel model read
    it as a time-lapse of z-stacks, each channel a plane. Its file names the channel
    axis: the Predict widget asks for a channel, and segments that one."""
    import tifffile
    from _models import thresholding_model

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.predict import predict
    from napari_unet.progress import run

    cells = np.stack([touching_cells((64, 80), n_cells=5, radius=8, seed=s)[0]
                      for s in range(3)])
    tifffile.imwrite(tmp_path / "embryo.tif", np.stack([255 - cells, cells], axis=1),
                     imagej=True, metadata={"axes": "ZCYX"})
    model = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 80), np.uint8), name="other")
    viewer.open(str(tmp_path / "embryo.tif"), plugin="napari")
    layer = viewer.layers["embryo"]
    assert layer.data.shape == (3, 2, 64, 80)
    layer.scale = (4.0, 1.0, 0.5, 0.5)
    widget = dock(viewer, "Predict")
    widget.use_model_file(model)
    widget.image.setCurrentText("other")
    assert not widget.channel.isVisibleTo(widget)  # shown only for a file of channels
    widget.image.setCurrentText("embryo")
    assert widget.channel.isVisibleTo(widget)
    widget.controls.start_btn.click()
    assert any("layer 'embryo' has 2 channels (axes ZCYX), and the model reads one: choose "
               "the channel that shows the cells under Channel (1 to 2" in n for n in notes)
    assert "embryo segmentation" not in viewer.layers
    widget.channel.setValue(2)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    labels = viewer.layers["embryo segmentation"]
    np.testing.assert_array_equal(labels.data, run(predict(str(model), cells)).labels)
    np.testing.assert_allclose(labels.scale, (4.0, 0.5, 0.5))  # the channel axis left out
    assert "objects in 3 planes" in widget.status.text()
    # another channel is predicted again, not labelled again from the last probabilities
    widget.channel.setValue(1)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["embryo segmentation"].data,
                                  run(predict(str(model), 255 - cells)).labels)
    assert "Labelled again" not in widget.status.text()
    # every image layer in turn, no channel chosen: the hyperstack is skipped and named
    widget.channel.setValue(0)
    widget.every.setChecked(True)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    assert "other segmentation" in viewer.layers
    assert "skipped embryo: layer 'embryo' has 2 channels" in widget.status.text()


def test_the_train_widget_trains_on_the_channel_chosen_of_a_hyperstack(
        make_napari_viewer, qtbot, tmp_path, models_home):
    """A Fiji hyperstack's nuclei channel trains a single-channel model (to fine-tune the
    shipped nuclei model on, or to predict that channel of other hyperstacks); without a
    channel chosen, both channels train a two-channel model, as before."""
    import tifffile

    pairs = [touching_cells((96, 96), n_cells=10, radius=8, seed=s) for s in range(2)]
    nuclei = np.stack([p[0] for p in pairs])
    tifffile.imwrite(tmp_path / "embryo.tif",
                     np.stack([np.zeros_like(nuclei), nuclei], axis=1),
                     imagej=True, metadata={"axes": "ZCYX"})
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "embryo.tif"), plugin="napari")
    viewer.add_labels(np.stack([p[1] for p in pairs]).astype(np.int32), name="nuclei")
    train = dock(viewer, "Train")
    train.image.setCurrentText("embryo")
    train.labels.setCurrentText("nuclei")
    assert train.channel.isVisibleTo(train)
    train.channel.setValue(2)
    set_quick(train, 1)
    assert _trained(train, qtbot, models_home, 1).config.in_channels == 1
    train.channel.setValue(0)
    assert _trained(train, qtbot, models_home, 2).config.in_channels == 2


def test_an_ome_zarr_of_channels_opened_by_napari_is_segmented_in_the_channel_chosen(
        make_napari_viewer, qtbot, tmp_path, notes):
    """napari's own reader opens an OME-Zarr (C, Z, Y, X) as one layer without its axes; a
    single-channel model read it as a time-lapse of z-stacks. Its metadata names the
    channel axis: the channel box appears, and the channel chosen is segmented."""
    import zarr
    from _models import thresholding_model

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.io import zarr_axes
    from napari_unet.metrics import same_partition
    from napari_unet.predict import predict
    from napari_unet.progress import run

    cells = np.stack([touching_cells((64, 80), n_cells=5, radius=8, seed=s)[0]
                      for s in range(3)])
    root = zarr.open_group(str(tmp_path / "embryo.zarr"), mode="w", zarr_format=2)
    root.create_array("0", data=np.stack([255 - cells, cells]), chunks=(1, 1, 64, 80))
    root.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}], "axes": [
        {"name": "c", "type": "channel"}, *({"name": a, "type": "space"} for a in "zyx")]}]
    assert zarr_axes(tmp_path / "embryo.zarr") == "CZYX"
    assert zarr_axes(tmp_path / "embryo.zarr" / "0") is None  # an array names no axes
    model = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "embryo.zarr"), plugin="napari")
    assert viewer.layers["embryo"].data.shape == (2, 3, 64, 80)
    widget = dock(viewer, "Predict")
    widget.use_model_file(model)
    widget.image.setCurrentText("embryo")
    assert widget.channel.isVisibleTo(widget)
    widget.controls.start_btn.click()
    assert any("layer 'embryo' has 2 channels (axes CZYX), and the model reads one" in n
               for n in notes)
    widget.channel.setValue(2)
    widget.controls.start_btn.click()
    wait_done(qtbot, widget)
    labels = np.asarray(viewer.layers["embryo segmentation"].data)
    assert labels.shape == (3, 64, 80)
    expected = run(predict(str(model), cells)).labels
    assert all(same_partition(labels[z], expected[z]) for z in range(3))
