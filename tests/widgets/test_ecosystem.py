"""napari integration beyond the dock widgets: dropping a model file, exporting to
bioimage.io and segmenting image files on disk from the Predict widget, saving labels with
their pixel size, the measurements of a segmentation's objects as its layer's features."""

import threading

import numpy as np
import pytest
from conftest import dock

from napari_unet.checkpoint import load_checkpoint
from napari_unet.errors import InputError
from napari_unet.synthetic import touching_cells


def test_dropping_a_model_file_opens_it_in_the_predict_widget(make_napari_viewer, model_file):
    viewer = make_napari_viewer()
    viewer.open(str(model_file), plugin="napari-unet")
    assert len(viewer.layers) == 0
    from napari_unet._widgets.predict import PredictWidget

    docked = [w for w in viewer.window.dock_widgets.values() if isinstance(w, PredictWidget)]
    assert len(docked) == 1 and docked[0].model_path() == str(model_file)


def test_a_broken_model_file_is_refused_when_dropped(make_napari_viewer, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 40)
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="bad.safetensors"):
        viewer.open(str(bad), plugin="napari-unet")
    assert len(viewer.layers) == 0


def test_a_safetensors_file_of_another_tool_is_left_to_other_readers(model_file, tmp_path):
    """Weights of another network saved as safetensors are not napari-unet's to open (it
    claimed every .safetensors file and refused them); its own files, and damaged ones
    (to say what is wrong), it opens."""
    import torch
    from safetensors.torch import save_file

    from napari_unet._widgets.reader import get_reader

    save_file({"w": torch.zeros(3)}, tmp_path / "other.safetensors", metadata={"a": "b"})
    save_file({"w": torch.zeros(3)}, tmp_path / "bare.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(b"\x00" * 40)
    assert get_reader(str(tmp_path / "other.safetensors")) is None
    import zarr

    zarr.create_array(store=str(tmp_path / "other.zarr"), shape=(4, 4), dtype="uint8")
    assert get_reader(str(tmp_path / "other.zarr")) is None  # zarr stores: napari's own
    (tmp_path / "gone.napari-unet").write_text('{"layers": [{"store": "gone.zarr"}]}')
    with pytest.raises(InputError, match="gone.napari-unet could not be opened"):
        get_reader(str(tmp_path / "gone.napari-unet"))(str(tmp_path / "gone.napari-unet"))
    assert get_reader(str(tmp_path / "bare.safetensors")) is None
    assert get_reader(str(model_file)) is not None
    assert get_reader(str(tmp_path / "cut.safetensors")) is not None


def test_export_button_writes_a_package_that_opens_again(make_napari_viewer, qtbot, model_file,
                                                          tmp_path):
    import bioimageio.spec  # noqa: F401  (the testing extra has it: no skip)
    viewer = make_napari_viewer()
    widget = dock(viewer, "Predict")
    widget.use_model_file(model_file)
    widget.export_btn.export_to(tmp_path / "shared.zip")
    qtbot.waitUntil(lambda: widget.controls.run is None, timeout=120_000)
    assert "Exported to" in widget.status.text(), widget.status.text()
    again = load_checkpoint(tmp_path / "shared.zip")
    before = load_checkpoint(model_file)
    for key, value in before.state_dict.items():
        assert np.array_equal(value.numpy(), again.state_dict[key].numpy())


def test_image_files_are_segmented_into_a_folder_without_opening_them(
        make_napari_viewer, qtbot, model_file, tmp_path, monkeypatch):
    """*Segment image files…*: the files chosen (a label file among them left out, one that
    cannot be segmented skipped and named) are written as the engine segments them with
    the widget's model and settings, with their measurements and ImageJ ROIs; no layer is
    added."""
    import roifile
    import tifffile
    from imageio.v3 import imwrite
    from qtpy.QtWidgets import QFileDialog

    from napari_unet.predict import predict
    from napari_unet.progress import run

    folder, out = tmp_path / "plate", tmp_path / "segmented"
    folder.mkdir()
    images = [touching_cells((96, 96), n_cells=8, seed=k)[0] for k in range(2)]
    tifffile.imwrite(folder / "a.tif", images[0])
    imwrite(folder / "b.png", images[1])
    tifffile.imwrite(folder / "a_masks.tif", np.ones((96, 96), np.uint16))
    tifffile.imwrite(folder / "broken.tif", np.full((40, 40), np.nan, np.float32))
    colour = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    tifffile.imwrite(folder / "colour.tif", colour)  # for a model of grey images
    chosen = [str(folder / n) for n in ("a.tif", "b.png", "a_masks.tif", "broken.tif",
                                        "colour.tif")]
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: (chosen, ""))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(out))
    viewer = make_napari_viewer()
    widget = dock(viewer, "Predict")
    widget.use_model_file(model_file)
    widget.probabilities.setChecked(True)
    widget.files_btn.click()
    assert not any(b.isEnabled() for b in (widget.files_btn, widget.export_btn,
                                           widget.controls.start_btn))  # one run at a time
    qtbot.waitUntil(lambda: widget.controls.run is None, timeout=120_000)
    assert all(b.isEnabled() for b in (widget.files_btn, widget.export_btn,
                                       widget.controls.start_btn))
    text = widget.status.text()
    assert text.startswith(f"Wrote 2 segmentation(s), their objects' measurements "
                           f"(<name>.csv, objects_per_image.csv) and ImageJ ROIs "
                           f"(<name>_rois.zip) to {out} in "), text
    assert "; skipped broken.tif: broken.tif contains NaN" in text
    assert ("; skipped colour.tif: colour.tif has 3 channels (colour samples), and the model "
            "reads one: choose the channel that shows the cells in napari: open the file and "
            "choose its channel beside Image (a colour image: right-click its layer, Split "
            "RGB)") in text
    assert "; left out 1 label file(s) beside their images." in text
    assert sorted(p.name for p in out.iterdir()) == [
        "a.csv", "a.tif", "a_prob.tif", "a_rois.zip", "b.csv", "b.tif", "b_prob.tif",
        "b_rois.zip", "objects_per_image.csv"]
    model, total = load_checkpoint(model_file), 0
    for name, image in zip("ab", images):
        expected = run(predict(model, image, widget.config())).labels
        assert np.array_equal(tifffile.imread(out / f"{name}.tif"), expected)
        total += int(expected.max())
        rows = (out / f"{name}.csv").read_text().splitlines()  # its objects' measurements
        assert rows[0].startswith("index,area,") and len(rows) == 1 + expected.max()
        assert f"\n{name}.{'tif' if name == 'a' else 'png'},{expected.max()}," in \
            (out / "objects_per_image.csv").read_text()  # and a row per image
        assert len(roifile.roiread(out / f"{name}_rois.zip")) == expected.max()
    assert f"{total:,} objects" in text
    assert len(viewer.layers) == 0

    # a result that would replace its image is refused before any work, in a sentence
    widget.files_btn.segment([folder / "a.tif"], folder)
    assert widget.status.text() == (
        f"No file was written: a.tif: its result a.tif would replace the input "
        f"{folder / 'a.tif'}; choose another folder for the results.")
    assert widget.controls.run is None

    # cancelled: what was written before is kept, and said
    widget.files_btn.segment([folder / "a.tif", folder / "b.png"], tmp_path / "again")
    widget.controls.cancel()
    qtbot.waitUntil(lambda: widget.controls.run is None, timeout=120_000)
    assert widget.status.text().startswith("Cancelled; the ")
    assert widget.status.text().endswith(f"segmentation(s) written before are kept in "
                                         f"{tmp_path / 'again'}.")


@pytest.mark.parametrize("multiscale", [False, True])
@pytest.mark.parametrize("name", ["seg.ome.zarr", "seg.ome.tif"])
def test_labels_are_saved_with_their_pixel_size(make_napari_viewer, tmp_path, name,
                                                multiscale):
    """Also a multiscale layer (the overview levels of a large prediction): its levels
    become the OME-Zarr's resolution levels, its full resolution the OME-TIFF."""
    import tifffile

    from napari_unet.io import open_zarr

    viewer = make_napari_viewer()
    labels = touching_cells((80, 60), n_cells=5, radius=6, seed=2)[1]
    data = [labels, labels[::2, ::2], labels[::4, ::4]] if multiscale else labels
    layer = viewer.add_labels(data, name="seg", scale=(2.0, 0.5), multiscale=multiscale)
    path = tmp_path / name
    viewer.layers.save(str(path), selected=False, plugin="napari-unet")
    if name.endswith(".zarr"):
        import zarr

        assert np.array_equal(open_zarr(path).compute(), labels)
        group = zarr.open_group(str(path))
        ms = group.attrs["multiscales"][0]
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.5]
        assert len(ms["datasets"]) == (3 if multiscale else 1)
        if multiscale:
            assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [8.0, 2.0]
            assert np.array_equal(group["2"][...], labels[::4, ::4])
    else:
        with tifffile.TiffFile(path) as tif:
            assert np.array_equal(tif.asarray(), labels)
            assert 'PhysicalSizeX="0.5"' in tif.ome_metadata
    assert layer.scale.tolist() == [2.0, 0.5]


def test_segment_menu_entry_opens_predict_for_the_selected_image(make_napari_viewer):
    from napari_unet._widgets.menu import segment_selected
    from napari_unet._widgets.predict import PredictWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 20)), name="first")
    viewer.add_image(np.zeros((20, 20)), name="second")
    viewer.layers.selection.active = viewer.layers["first"]
    segment_selected(viewer)
    docked = [w for w in viewer.window.dock_widgets.values() if isinstance(w, PredictWidget)]
    assert len(docked) == 1 and docked[0].image.currentText() == "first"


def test_a_slides_prediction_on_the_command_line_opens_in_napari_as_it_should(
        make_napari_viewer, tmp_path, monkeypatch, notes):
    """`napari-unet predict MODEL slide.zarr --out DIR` writes, beside DIR/slide.zarr (the
    contract), the overview levels of a plane too large to show whole and slide.napari-unet,
    which napari-unet's reader opens as a Labels layer with those levels and the
    probability map; with --measure, the layer has its objects' measurements as
    features."""
    import zarr
    from _models import thresholding_model

    from napari_unet import cli, pyramid
    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.measure import measure

    model = save_checkpoint(tmp_path / "t.safetensors", thresholding_model())
    image = (touching_cells((300, 260), n_cells=30, radius=9, seed=4)[1] > 0).astype(
        np.float32)
    zarr.create_array(store=str(tmp_path / "slide.zarr"), shape=image.shape, chunks=(128, 128),
                      dtype="float32")[...] = image
    monkeypatch.setattr(pyramid, "LEVELS_ABOVE", 200 * 200)
    monkeypatch.setattr(pyramid, "SMALLEST", 80)
    out = tmp_path / "out"
    assert cli.main(["-q", "predict", str(model), str(tmp_path / "slide.zarr"), "--out",
                     str(out), "--probabilities"]) == 0
    labels = zarr.open_array(str(out / "slide.zarr"), mode="r")[...]
    assert labels.max() > 10
    assert sorted(p.name for p in out.iterdir()) == [
        "slide.napari-unet", "slide.zarr", "slide_levels", "slide_prob.zarr"]
    viewer = make_napari_viewer()
    viewer.open(str(out / "slide.napari-unet"), plugin=None)
    seg, prob = viewer.layers["slide segmentation"], viewer.layers["slide probabilities"]
    assert seg.multiscale and len(seg.data) == 3 and prob.multiscale
    np.testing.assert_array_equal(np.asarray(seg.data[0]), labels)
    np.testing.assert_array_equal(np.asarray(seg.data[2]), labels[::4, ::4])
    assert seg.features.shape[0] == 0  # not measured
    (out / "slide.csv").write_text("plane,index,area\n0,1,5\n1,1,7\n")  # of planes apart:
    viewer.open(str(out / "slide.napari-unet"), plugin=None)  # not one row per label
    assert viewer.layers[-2].features.shape[0] == 0
    (out / "slide.csv").write_text("")  # a table that cannot be read: the layers open
    viewer.open(str(out / "slide.napari-unet"), plugin=None)
    assert len(viewer.layers) == 6 and viewer.layers[-2].features.shape[0] == 0
    assert any("measurements in slide.csv could not be read" in n for n in notes), notes
    monkeypatch.setattr(pyramid, "LEVELS_ABOVE", 8192 * 8192)  # small enough: no levels
    from napari_unet.writers import write_ome_zarr  # and placed as an OME-Zarr says

    write_ome_zarr(tmp_path / "field.ome.zarr", image, {"scale": (0.5, 0.25),
                                                        "translate": (10, 20)})
    assert cli.main(["-q", "predict", str(model), str(tmp_path / "field.ome.zarr"), "--out",
                     str(tmp_path / "small"), "--measure"]) == 0
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == [
        "field.ome.csv", "field.ome.napari-unet", "field.ome.zarr", "objects_per_image.csv"]
    viewer.open(str(tmp_path / "small" / "field.ome.napari-unet"), plugin=None)
    field = viewer.layers["field segmentation"]
    assert not field.multiscale and field.scale.tolist() == [0.5, 0.25]
    small = zarr.open_array(str(tmp_path / "small" / "field.ome.zarr"), mode="r")[...]
    measured = measure(small, image)  # its measurements, from field.ome.csv beside it
    assert list(field.features.columns) == list(measured) and small.max() > 10
    for key, column in measured.items():
        np.testing.assert_allclose(field.features[key].to_numpy(), column, rtol=1e-5)
    assert field.translate.tolist() == [10, 20]


def test_a_segmentation_carries_its_objects_measurements_as_features(
        make_napari_viewer, qtbot, tmp_path, notes, monkeypatch):
    """The labels of a prediction come with one row of features per object (as
    napari_unet.measure takes them in the image, the area also in the image's unit): napari
    shows them under the cursor and in its Features table widget; a correction painted in
    the layer is measured a moment later, and labelling again measures the new labels."""
    from _models import thresholding_model

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.measure import measure

    model_file = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    viewer = make_napari_viewer()
    image, _ = touching_cells((96, 96), n_cells=8, seed=0)
    layer = viewer.add_image(image, name="cells", scale=(0.5, 0.5))
    layer.units = ("µm", "µm")
    widget = dock(viewer, "Predict")
    widget.use_model_file(model_file)
    widget.controls.start_btn.click()
    qtbot.waitUntil(lambda: widget.controls.run is None, timeout=120_000)
    seg = viewer.layers["cells segmentation"]
    assert "features: under the cursor, and in Layers > Metadata > Features table widget." \
        in widget.status.text()  # said where they are, the first time

    def same(features, labels):
        expected = measure(labels, image, pixel_size=(0.5, 0.5), unit="µm")
        assert list(features.columns) == list(expected)
        for key, column in expected.items():
            np.testing.assert_allclose(features[key].to_numpy(), column)

    assert seg.data.max() > 3
    same(seg.features, seg.data)
    np.testing.assert_allclose(seg.features["area (um^2)"], seg.features["area"] * 0.25)
    label = int(seg.features["index"].iloc[0])
    where = np.argwhere(seg.data == label)[0] * 0.5  # in the world, where napari's cursor is
    status = seg.get_status(where, world=True)
    said = status["coordinates"] if isinstance(status, dict) else status
    assert f": {label}; area: {seg.features['area'].iloc[0]}, centroid-0: " in said, said

    viewer.layers.selection.active = seg  # napari's own table (Layers > Metadata > ...)
    _, table = viewer.window.add_plugin_dock_widget("napari", "Features table widget")
    assert table.table.model().rowCount() == len(seg.features)

    seg.paint((10, 10), 77)  # a correction with napari's brush: measured again
    qtbot.waitUntil(lambda: 77 in seg.features["index"].tolist(), timeout=5_000)
    same(seg.features, seg.data)

    import napari_unet._widgets._features as live

    gate, calls, shown = threading.Event(), [], []  # a stroke while it is measured:

    def slow(labels, *args, **kwargs):  # the first measuring held until the second stroke
        calls.append(labels)
        if len(calls) == 1:
            assert gate.wait(30)
            return {"index": np.array([999]), "area": np.array([1])}  # overtaken: dropped
        return measure(labels, *args, **kwargs)

    monkeypatch.setattr(live, "measure", slow)
    seg.events.features.connect(lambda _event: shown.append(seg.features["index"].tolist()))
    seg.paint((30, 30), 78)
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=5_000)  # measuring, in its thread
    seg.paint((60, 60), 79)  # the GUI is not held meanwhile
    gate.set()
    qtbot.waitUntil(lambda: 79 in seg.features["index"].tolist(), timeout=10_000)
    assert len(calls) == 2 and not any(999 in index for index in shown)
    same(seg.features, seg.data)
    monkeypatch.setattr(live, "measure", measure)

    widget.own_threshold.setChecked(False)  # labelled again, without the network
    widget.threshold.setValue(0.8)
    widget.controls.start_btn.click()
    qtbot.waitUntil(lambda: widget.controls.run is None, timeout=120_000)
    assert "Labelled again" in widget.status.text()
    new = viewer.layers["cells segmentation (2)"]  # beside the corrected one
    same(new.features, new.data)
    same(seg.features, seg.data)  # the corrected one keeps its own

    monkeypatch.setattr(live, "LIVE_PIXELS", 100)  # too large to measure after each edit:
    new.paint((50, 50), 5)  # its measurements go, rather than stay wrong, and it is said
    qtbot.waitUntil(lambda: new.features.shape[0] == 0, timeout=5_000)
    assert any("measurements of 'cells segmentation (2)' were removed" in n for n in notes)

    _LIVE = live._LIVE
    assert seg.unique_id in _LIVE
    viewer.layers.remove(seg)  # its image is let go with it
    assert seg.unique_id not in _LIVE


def test_measure_objects_in_the_layer_menu_measures_a_labels_layer(make_napari_viewer, qtbot,
                                                                    notes):
    """*Measure > Measure objects (napari-unet)* on a Labels layer painted by hand: its
    objects measured in the image it is named after become its features (listed in
    napari's Features table widget), and a correction is measured again; a layer that is
    not Labels is refused in a sentence."""
    from napari_unet._widgets.menu import measure_selected
    from napari_unet.measure import measure

    viewer = make_napari_viewer()
    image, labels = touching_cells((96, 96), n_cells=8, seed=2)
    viewer.add_image(image * 0 + 1.0, name="other")  # of the same size, not named after
    viewer.add_image(image, name="cells", scale=(0.5, 0.5), units=("µm", "µm"))
    painted = viewer.add_labels(labels.astype(np.int32), name="cells labels")
    from npe2 import PluginManager

    menus = PluginManager.instance().get_manifest("napari-unet").contributions.menus
    assert [i.command for i in menus["napari/layers/measure"]] == ["napari-unet.measure_selected"]
    viewer.layers.selection.active = painted
    run = measure_selected(viewer)
    qtbot.waitUntil(lambda: painted.features.shape[0] > 0, timeout=30_000)
    expected = measure(painted.data, image, pixel_size=(0.5, 0.5), unit="µm")
    assert list(painted.features.columns) == list(expected)
    np.testing.assert_allclose(painted.features["mean_intensity"], expected["mean_intensity"])
    assert any("Measured 8 objects of 'cells labels' in 'cells'" in n for n in notes), notes
    assert any("Features table widget" in name for name in viewer.window.dock_widgets)
    assert run is not None
    painted.paint((5, 5), 40)
    qtbot.waitUntil(lambda: 40 in painted.features["index"].tolist(), timeout=5_000)

    viewer.layers.selection.active = viewer.layers["cells"]
    assert measure_selected(viewer) is None
    assert notes[-1] == "Select a Labels layer to measure its objects."



def test_a_labels_layer_is_saved_as_imagej_rois_for_fiji(make_napari_viewer, tmp_path, notes):
    """File > Save Selected Layers… as ``.zip``: napari-unet's writer, the objects of a
    Labels layer (of a multiscale one, its full resolution) as the ROIs that Fiji's ROI
    Manager opens; labels without objects are refused in a sentence."""
    import roifile

    viewer = make_napari_viewer()
    labels = touching_cells((80, 60), n_cells=5, radius=6, seed=2)[1]
    viewer.add_labels([labels, labels[::2, ::2]], name="seg", multiscale=True)
    path = tmp_path / "seg_rois.zip"
    viewer.layers.save(str(path), selected=False, plugin="napari-unet")
    read = roifile.roiread(path)
    assert sorted(int(r.name) for r in read) == list(range(1, labels.max() + 1))
    assert read[0].coordinates().max(axis=0)[0] <= 60  # x, y in the full resolution's pixels
    viewer.layers.remove("seg")
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="empty")
    viewer.layers.save(str(tmp_path / "empty.zip"), selected=False, plugin="napari-unet")
    assert not (tmp_path / "empty.zip").exists()
    assert any("'empty' was not saved as ImageJ ROIs: the labels hold no object" in n
               for n in notes), notes
