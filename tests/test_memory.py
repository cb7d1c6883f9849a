"""Predictions that would not fit in the memory free (a slide, a long z-stack) are made
block by block on disk instead of being killed by the operating system; what was found
is counted from the labels on disk as from labels in memory."""

from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from _models import thresholding_model
from conftest import discs

from napari_unet import cli, memory
from napari_unet.checkpoint import load_checkpoint, save_checkpoint
from napari_unet.config import ModelConfig, PredictConfig
from napari_unet.errors import InputError
from napari_unet.found import object_count, what_was_found
from napari_unet.io import create_zarr, read_image, tiff_metadata
from napari_unet.metrics import same_partition


@pytest.fixture(scope="module")
def grey_model(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("m") / "threshold.safetensors",
                           thresholding_model())


def _slide(seed: int, shape=(300, 300), n=40):
    rng = np.random.default_rng(seed)
    centres = [tuple(int(v) for v in rng.integers(10, min(shape) - 10, 2)) for _ in range(n)]
    return np.where(discs(shape, centres, 9) > 0, 200, 20).astype(np.uint8)


def test_prediction_bytes_count_a_plane_and_what_every_other_keeps():
    grey = ModelConfig(in_channels=1, n_classes=2)
    assert memory.planes_of((512, 256), 1) == (1, 512 * 256)
    assert memory.planes_of((7, 512, 256), 1) == (7, 512 * 256)
    assert memory.planes_of((512, 256, 3), 1) == (1, 512 * 256)  # grey saved in colour
    assert memory.planes_of((2, 5, 64, 32, 3), 3) == (10, 64 * 32)
    assert memory.prediction_bytes((512, 256), grey) == 512 * 256 * memory.BYTES_PER_PIXEL
    assert memory.prediction_bytes((7, 512, 256), grey) == 512 * 256 * (
        memory.BYTES_PER_PIXEL + 6 * (4 * 2 + 8))
    # the figure it rests on: 2.96 GB measured for a 8192 px square (benchmarks/RESULTS.md)
    assert 2.96e9 <= memory.prediction_bytes((8192, 8192), grey) <= 4e9


def test_beyond_memory_says_why_and_refuses_a_resize_that_cannot_fit(monkeypatch):
    ckpt = SimpleNamespace(config=ModelConfig(in_channels=1, n_classes=2),
                           object_diameter=20.0)
    image = np.zeros((1000, 1000), np.uint8)  # 48 MB to predict
    monkeypatch.setattr(memory, "free_memory", lambda: 200 * 2**20)
    assert memory.beyond_memory(image, ckpt, PredictConfig()) == ""
    monkeypatch.setattr(memory, "free_memory", lambda: 80 * 2**20)  # more than half
    assert memory.beyond_memory(image, ckpt, PredictConfig()) == (
        "in memory it would need about 0.0 GB, 0.1 GB are free")
    monkeypatch.setattr(memory, "free_memory", lambda: None)  # unknown: as before
    assert memory.beyond_memory(image, ckpt, PredictConfig()) == ""
    # resized cells are predicted in memory; magnified 4x (16x the pixels) it cannot fit
    monkeypatch.setattr(memory, "free_memory", lambda: 500 * 2**20)
    assert memory.beyond_memory(image, ckpt, PredictConfig(diameter=20.0)) == ""
    with pytest.raises(InputError, match="leave the cell diameter empty"):
        memory.beyond_memory(image, ckpt, PredictConfig(diameter=5.0))


@pytest.mark.parametrize("shape", [(2, 3, 40, 50), (3, 40, 50), (40, 50)])
def test_what_was_found_on_disk_is_what_was_found_in_memory(tmp_path, shape):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 30, shape).astype(np.uint32)
    on_disk = create_zarr(tmp_path / "l.zarr", shape, "uint32", (1,) * (len(shape) - 2)
                          + (16, 16))
    on_disk[...] = labels
    for mode in ("instances", "semantic"):
        for linked in (False, True):
            kept = SimpleNamespace(labels=labels, mode=mode)
            disk = SimpleNamespace(labels=on_disk, mode=mode)
            assert what_was_found(disk, linked) is None  # not read unless asked
            assert what_was_found(disk, linked, on_disk=True) == what_was_found(kept, linked)
            assert object_count(disk, linked, on_disk=True) == object_count(kept, linked)
    expected = sum(int(p.max()) for p in labels.reshape(-1, 40 * 50))
    assert object_count(SimpleNamespace(labels=on_disk, mode="instances"),
                        on_disk=True) == expected
    # counted before, off the GUI thread: said without reading the labels again
    counted = SimpleNamespace(labels=on_disk, mode="instances", objects=expected)
    assert what_was_found(counted) == what_was_found(SimpleNamespace(labels=labels,
                                                                     mode="instances"))


def test_an_image_beyond_free_memory_is_predicted_on_disk(grey_model, tmp_path, capsys,
                                                          monkeypatch):
    """A slide whose prediction would not fit in memory (it was killed for want of it) is
    predicted block by block through a scratch folder and its results written tile by
    tile: the same objects and probabilities, the pixel size kept, nothing left behind."""
    tifffile.imwrite(tmp_path / "slide.tif", _slide(3), resolution=(2.0, 2.0))
    args = ["-q", "predict", str(grey_model), str(tmp_path / "slide.tif"), "--probabilities",
            "--chunk", "64"]
    assert cli.main([*args, "--out", str(tmp_path / "memory")]) == 0
    monkeypatch.setattr(memory, "BYTES_PER_PIXEL", 10**12)
    assert cli.main([*args[1:], "--out", str(tmp_path / "disk")]) == 0
    said = capsys.readouterr().out
    assert "slide.tif: " in said and "objects, predicted block by block on disk (in memory " \
        "it would need about" in said
    disk, in_memory = read_image(tmp_path / "disk" / "slide.tif"), \
        read_image(tmp_path / "memory" / "slide.tif")
    assert in_memory.max() > 20 and same_partition(in_memory, disk)
    assert f"slide.tif: {in_memory.max()} objects, predicted" in said
    np.testing.assert_allclose(read_image(tmp_path / "disk" / "slide_prob.tif"),
                               read_image(tmp_path / "memory" / "slide_prob.tif"), atol=1e-5)
    np.testing.assert_allclose(tiff_metadata(tmp_path / "disk" / "slide.tif")["resolution"],
                               (2.0, 2.0))
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["slide.tif",
                                                                     "slide_prob.tif"]


def test_a_long_stack_beyond_free_memory_is_predicted_on_disk(grey_model, tmp_path, capsys,
                                                             monkeypatch):
    """A z-stack too large for memory went on to be killed: now its planes are predicted
    block by block on disk as a slide's, and its objects counted plane by plane; its
    labels keep the stack's axes and z spacing for Fiji, as those made in memory do."""
    stack = np.stack([_slide(s, (120, 140), 12) for s in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 2.5, "unit": "micron"})
    args = ["-q", "predict", str(grey_model), str(tmp_path / "stack.tif"), "--chunk", "64"]
    assert cli.main([*args, "--out", str(tmp_path / "memory"), "--rois"]) == 0
    assert (tmp_path / "memory" / "stack_rois.zip").is_file()  # its planes' objects
    monkeypatch.setattr(memory, "free_memory", lambda: 2 * 120 * 140 * 48)
    assert cli.main([*args[1:], "--out", str(tmp_path / "disk"), "--rois"]) == 0
    assert not (tmp_path / "disk" / "stack_rois.zip").exists()  # a slide's: said why
    memory_labels = read_image(tmp_path / "memory" / "stack.tif")
    disk = read_image(tmp_path / "disk" / "stack.tif")
    assert disk.shape == (3, 120, 140)
    assert all(same_partition(memory_labels[k], disk[k]) for k in range(3))
    kept = ("axes", "spacing", "unit", "resolution")
    on_disk = tiff_metadata(tmp_path / "disk" / "stack.tif")
    assert {k: on_disk.get(k) for k in kept} == {
        k: tiff_metadata(tmp_path / "memory" / "stack.tif").get(k) for k in kept}
    assert on_disk["axes"] == "ZYX" and on_disk["spacing"] == 2.5
    found = sum(int(p.max()) for p in memory_labels)
    said = capsys.readouterr().out
    assert found > 12 and f"stack.tif: {found} objects in 3 planes, predicted block by block " \
        "on disk (in memory it would need about" in said
    assert "no ImageJ ROIs: predicted block by block on disk" in said, said


def test_a_resize_that_cannot_fit_is_refused_in_a_sentence(tmp_path, capsys, monkeypatch):
    """Cells resized to the model's size are predicted in memory (the disk path does not
    resize): where that cannot fit, a sentence, not the kill."""
    model = thresholding_model()
    model.task["object_diameter"] = 18.0
    model_file = save_checkpoint(tmp_path / "sized.safetensors", model)
    tifffile.imwrite(tmp_path / "slide.tif", _slide(1))
    monkeypatch.setattr(memory, "free_memory", lambda: 300 * 300 * 48 * 2)  # fits as it is
    args = ["predict", str(model_file), str(tmp_path / "slide.tif"), "--out",
            str(tmp_path / "out")]
    assert cli.main([*args, "--diameter", "18"]) == 0  # the model's size: no resize
    (tmp_path / "out" / "slide.tif").unlink()
    assert cli.main([*args, "--diameter", "9"]) == 2  # twice the size: four times the memory
    assert "leave the cell diameter empty" in capsys.readouterr().err
    assert not (tmp_path / "out" / "slide.tif").exists()


@pytest.mark.parametrize("shape", [(300, 260), (3, 120, 140)])
def test_labels_on_disk_are_saved_as_ome_tiff_a_band_at_a_time(tmp_path, shape):
    """File > Save Layers of labels predicted on disk read them whole (a slide's labels
    took the memory the disk path had saved): they are written as a tiled BigTIFF from
    their blocks, with the pixel size, the same values as from memory."""
    from napari_unet.writers import write_layer

    labels = np.random.default_rng(1).integers(0, 70_000, shape).astype(np.uint32)
    on_disk = create_zarr(tmp_path / "l.zarr", shape, "uint32", (1,) * (len(shape) - 2)
                          + (64, 64))
    on_disk[...] = labels
    scale = [2.0, 0.5, 0.25][-len(shape):]
    for name, data in (("disk.ome.tif", on_disk), ("memory.ome.tif", labels)):
        write_layer(str(tmp_path / name), data, {"scale": scale})
        with tifffile.TiffFile(tmp_path / name) as tif:
            np.testing.assert_array_equal(tif.asarray(), labels)
            assert f'PhysicalSizeX="{scale[-1]}"' in tif.ome_metadata
            assert tif.pages[0].is_tiled == (data is on_disk)


@pytest.mark.parametrize("shape", [(120, 140), (2, 2, 64, 80)])
def test_the_probabilities_scratch_lies_beside_the_labels_on_disk(grey_model, tmp_path,
                                                                 shape):
    """A slide's probabilities (gigabytes) were kept in the system's temporary folder,
    often small or held in memory: they now lie beside the labels on disk, and go."""
    from napari_unet.predict import predict, zarr_outputs

    image = np.stack([_slide(s, shape[-2:], 8) for s in range(int(np.prod(shape[:-2])))]
                     ).reshape(shape)
    folder = tmp_path / "out"
    labels, _ = zarr_outputs(load_checkpoint(grey_model), image, folder / "labels.zarr")
    job = predict(grey_model, image, out_labels=labels)
    while next(job).total == 0:  # the image checked; the prediction starts next
        pass
    assert len(list(folder.glob(".napari-unet-prob-*"))) == 1
    for _ in job:
        pass
    assert sorted(p.name for p in folder.iterdir()) == ["labels.zarr"]
    assert np.asarray(labels[...]).max() > 0


def test_a_training_that_could_not_be_prepared_is_refused_in_a_sentence(monkeypatch):
    """Training on a slide painted in part was killed while its weight maps were made
    (napari with the unsaved labels): refused in a sentence that says what to do, and a
    region marked where the labels are complete makes it fit."""
    from napari_unet.config import TrainConfig
    from napari_unet.synthetic import touching_cells
    from napari_unet.train import prepare

    image, labels = touching_cells((400, 300), n_cells=30, radius=9, seed=3)
    monkeypatch.setattr(memory, "free_memory", lambda: 400 * 300 * 64 - 1)
    with pytest.raises(InputError, match="'Labelled in' Shapes layer, or --regions"):
        prepare([image], [labels], TrainConfig())
    region = np.zeros(labels.shape, bool)
    region[100:200, 100:200] = True  # cropped to it, with its margin, before any work
    prepared = prepare([image], [labels], TrainConfig(), regions=[region])
    assert prepared.images[0].shape[0] < 400
    monkeypatch.setattr(memory, "free_memory", lambda: 400 * 300 * 64)
    assert prepare([image], [labels], TrainConfig()).images[0].shape[:2] == (400, 300)


def test_a_prediction_in_memory_that_could_not_fit_is_refused_from_python(grey_model, tmp_path,
                                                                        monkeypatch):
    """From Python nothing chose the disk for it: a sentence that says how, not the kill;
    the same image with its labels written to disk is predicted."""
    from napari_unet.predict import predict, zarr_outputs
    from napari_unet.progress import run

    image = _slide(2)
    monkeypatch.setattr(memory, "free_memory", lambda: 300 * 300 * 48 - 1)
    with pytest.raises(InputError, match=r"out_labels=\.\.\.\), with napari_unet.predict"):
        next(predict(grey_model, image))
    labels, _ = zarr_outputs(load_checkpoint(grey_model), image, tmp_path / "l.zarr")
    run(predict(grey_model, image, out_labels=labels))
    assert np.asarray(labels[...]).max() > 10


def test_training_planes_refuse_before_copying_and_copy_only_the_labelled_box(monkeypatch):
    """The planes for a training are refused before they are copied where their
    preparation could not fit (the copies alone of a slide's image and labels took
    gigabytes); only labelled planes, and of those only a region's box, are copied."""
    from napari_unet.data import REGION_MARGIN, training_planes

    image = np.zeros((4, 600, 500), np.uint8)
    labels = np.zeros(image.shape, np.int32)
    labels[2, 100:120, 100:130] = 1
    region = np.zeros(image.shape, bool)
    region[2, 90:140, 95:150] = True
    monkeypatch.setattr(memory, "free_memory", lambda: 600 * 500 * 40)
    with pytest.raises(InputError, match="'Labelled in' Shapes layer"):
        training_planes(image, labels)  # one plane labelled, 64 bytes a pixel: too much
    ims, labs, regs, kept = training_planes(image, labels, region=region)
    box = (50 + 2 * REGION_MARGIN, 55 + 2 * REGION_MARGIN)
    assert kept == [2] and ims[0].shape == labs[0].shape == regs[0].shape == box
    assert labs[0].sum() == 20 * 30 and not np.shares_memory(labs[0], labels)



def test_labels_on_disk_are_read_only_in_the_region_box(monkeypatch):
    """Labels predicted on disk and corrected in napari (a zarr-backed layer) were read
    whole when a training started from them, a slide's gigabytes on the GUI thread: with
    a region, only the chunks of its box are read; without, a chunk at a time."""
    import dask.array as da

    from napari_unet.data import REGION_MARGIN, training_planes

    class Recorder:  # labels on disk that note what is read
        def __init__(self, array):
            self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, 2
            self.read = []

        def __getitem__(self, key):
            self.read.append(key)
            return self.array[key]

    labels = np.zeros((1000, 1200), np.int32)
    labels[600:620, 700:730] = 1
    region = np.zeros(labels.shape, bool)
    region[590:640, 690:760] = True
    disk = Recorder(labels)
    lazy = da.from_array(disk, chunks=(100, 100), asarray=True)
    image = np.zeros(labels.shape, np.uint8)
    ims, labs, regs, kept = training_planes(image, lazy, region=region)
    assert kept == [0] and labs[0].sum() == 20 * 30
    assert labs[0].shape == (50 + 2 * REGION_MARGIN, 70 + 2 * REGION_MARGIN)
    read = [k for k in disk.read if k[0].stop > k[0].start]  # not dask's empty probe
    assert read and all(500 <= k[0].start and k[0].stop <= 800 and 600 <= k[1].start
                        and k[1].stop <= 900 for k in read)  # the box's chunks alone
    disk.read.clear()
    monkeypatch.setattr(memory, "free_memory", lambda: labels.size * 40)
    with pytest.raises(InputError, match="'Labelled in' Shapes layer"):
        training_planes(image, lazy)  # the whole plane: too much, refused before copying
    assert disk.read and all((k[0].stop - k[0].start) * (k[1].stop - k[1].start) <= 100 * 100
                             for k in disk.read)  # a chunk at a time, to find it labelled
