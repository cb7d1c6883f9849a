"""Files of several channels (Fiji hyperstacks, colour images, OME-Zarr) and the axes and
pixel size that results carry back to Fiji."""

import numpy as np
import pytest
import tifffile
from _models import thresholding_model
from conftest import discs

from napari_unet import cli
from napari_unet.channels import for_model
from napari_unet.checkpoint import save_checkpoint
from napari_unet.errors import InputError
from napari_unet.io import open_zarr, read_image, tiff_metadata, write_tiff, write_tiff_tiled
from napari_unet.predict import predict
from napari_unet.progress import run


def _cells(seed: int, shape=(64, 80)):
    rng = np.random.default_rng(seed)
    centres = [(int(rng.integers(12, shape[0] - 12)), int(rng.integers(12, shape[1] - 12)))
               for _ in range(3)]
    return np.where(discs(shape, centres, 7) > 0, 200, 20).astype(np.uint8)


@pytest.fixture(scope="module")
def grey_model(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("m") / "threshold.safetensors",
                           thresholding_model())


def _hyperstack(path, axes="ZCYX"):
    """Three planes of cells in channel 1 and of their negative in channel 2."""
    cells = np.stack([_cells(s) for s in range(3)])
    data = np.stack([cells, 255 - cells], axis=1)  # (Z, C, Y, X)
    if axes == "TZCYX":
        data = np.stack([data, data])
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": axes, "unit": "micron", "spacing": 2.0})
    return cells


def test_a_fiji_hyperstack_of_two_channels_is_not_read_as_a_time_lapse(grey_model, tmp_path,
                                                                       capsys):
    """(Z, C, Y, X) has the shape of a time-lapse of z-stacks: a single-channel model
    segmented each channel as a plane. Without --channel: one sentence, nothing written;
    with it, that channel's z-stack, labelled as predict labels it."""
    cells = _hyperstack(tmp_path / "zc.tif")
    out = tmp_path / "out"
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "zc.tif"),
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("zc.tif has 2 channels (axes ZCYX), and the model reads one: choose the channel "
            "that shows the cells with --channel (1 to 2, as Fiji counts them).") in err
    assert not out.exists()
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "zc.tif"),
                     "--channel", "1", "--probabilities", "--out", str(out)]) == 0
    labels = read_image(out / "zc.tif")
    expected = run(predict(str(grey_model), cells)).labels
    assert labels.shape == (3, 64, 80) and labels.max() > 0
    np.testing.assert_array_equal(labels, expected)
    # the labels carry the image's axes and calibration back to Fiji
    meta = tiff_metadata(out / "zc.tif")
    assert meta["axes"] == "ZYX" and meta["unit"] == "micron" and meta["spacing"] == 2.0
    np.testing.assert_allclose(meta["resolution"], (4.0, 4.0))
    assert tiff_metadata(out / "zc_prob.tif")["axes"] == "ZCYX"
    assert read_image(out / "zc_prob.tif").shape == (3, 2, 64, 80)
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "zc.tif"),
                     "--channel", "3", "--out", str(tmp_path / "none")]) == 2
    assert "--channel 3: zc.tif has 2 channels (1 to 2)." in capsys.readouterr().err


def test_a_time_lapse_hyperstack_keeps_its_axes(grey_model, tmp_path):
    cells = _hyperstack(tmp_path / "tzc.tif", "TZCYX")
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "tzc.tif"),
                     "--channel", "2", "--out", str(tmp_path / "out")]) == 0
    labels = read_image(tmp_path / "out" / "tzc.tif")
    one = run(predict(str(grey_model), 255 - cells)).labels
    np.testing.assert_array_equal(labels, np.stack([one, one]))
    assert tiff_metadata(tmp_path / "out" / "tzc.tif")["axes"] == "TZYX"


def test_colour_files_name_their_channels(grey_model, tmp_path, capsys):
    """A real colour image for a grey model: the same sentence (it used to name napari's
    Split RGB on the command line); a grey image saved in colour is still read as grey."""
    import imageio.v3 as iio

    cells = _cells(4)
    iio.imwrite(tmp_path / "rgb.png", np.stack([255 - cells, cells, cells // 2], -1))
    tifffile.imwrite(tmp_path / "planar.tif", np.stack([255 - cells, cells, cells // 2]),
                     photometric="rgb", planarconfig="separate")
    iio.imwrite(tmp_path / "grey.png", np.stack([cells] * 3, -1))
    expected = run(predict(str(grey_model), cells)).labels
    for name, words in (("rgb.png", "rgb.png has 3 channels (colour)"),
                        ("planar.tif", "planar.tif has 3 channels (colour samples)")):
        assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / name),
                         "--out", str(tmp_path / "o")]) == 2
        assert words in capsys.readouterr().err
        assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / name),
                         "--channel", "2", "--out", str(tmp_path / "o")]) == 0
        np.testing.assert_array_equal(read_image(tmp_path / "o" / f"{name[:-4]}.tif"),
                                      expected)
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "grey.png"),
                     "--out", str(tmp_path / "o")]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "grey.tif"), expected)
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "grey.png"),
                     "--channel", "1", "--out", str(tmp_path / "o")]) == 0


def test_an_ome_zarr_of_channels_gives_the_one_chosen(grey_model, tmp_path, capsys):
    import zarr

    cells = _cells(5)
    root = zarr.open_group(str(tmp_path / "c.ome.zarr"), mode="w", zarr_format=2)
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space"}], "datasets": [{"path": "0"}]}]
    root.create_array("0", data=np.stack([255 - cells, cells]), chunks=(1, 32, 32))
    out = tmp_path / "o"
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "c.ome.zarr"),
                     "--out", str(out)]) == 2
    assert "c.ome.zarr has 2 channels (its axis c)" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "c.ome.zarr"),
                     "--channel", "2", "--out", str(out)]) == 0
    # as the channel alone, saved as an OME-Zarr of its own, is predicted (block-wise)
    one = zarr.open_group(str(tmp_path / "one.ome.zarr"), mode="w", zarr_format=2)
    one.attrs["multiscales"] = [{"version": "0.4", "axes": root.attrs["multiscales"][0][
        "axes"][1:], "datasets": [{"path": "0"}]}]
    one.create_array("0", data=cells, chunks=(32, 32))
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "one.ome.zarr"),
                     "--out", str(out)]) == 0
    labels = open_zarr(out / "c.ome.zarr").compute()
    assert labels.shape == (64, 80) and labels.max() > 0
    np.testing.assert_array_equal(labels, open_zarr(out / "one.ome.zarr").compute())
    capsys.readouterr()  # and what it found is said, as for a TIFF (counted on disk)
    assert cli.main(["predict", str(grey_model), str(tmp_path / "one.ome.zarr"),
                     "--out", str(out)]) == 0
    n = int(labels.max())
    assert f"one.ome.zarr: {n} object{'' if n == 1 else 's'}\n" in capsys.readouterr().out


def test_training_takes_one_channel_of_hyperstacks(tmp_path, capsys):
    from napari_unet.checkpoint import load_checkpoint

    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    cells = _hyperstack(tmp_path / "i" / "a.tif")
    tifffile.imwrite(tmp_path / "l" / "a.tif",
                     np.stack([discs((64, 80), [(32, 40)], 7) for _ in cells]).astype(np.uint16))
    args = ["-q", "train", str(tmp_path / "i"), str(tmp_path / "l"), "--epochs", "1",
            "--steps-per-epoch", "1", "--base-channels", "4", "--depth", "2",
            "--patch-size", "64", "--val-fraction", "0"]
    model = tmp_path / "grey.safetensors"
    assert cli.main([*args, "--channel", "2", "--out", str(model)]) == 0
    assert load_checkpoint(model).config.in_channels == 1
    capsys.readouterr()
    # fine-tuning a single-channel model on them without --channel: one sentence
    assert cli.main([*args, "--from", str(model), "--out", str(tmp_path / "f.safetensors")]) == 2
    assert "a.tif has 2 channels (axes ZCYX), and the model reads one" in \
        capsys.readouterr().err
    assert not (tmp_path / "f.safetensors").exists()


def test_for_model_moves_named_channels_last_and_refuses_other_counts():
    data = np.zeros((3, 2, 8, 10), np.uint8)
    moved, axes = for_model(data, "ZCYX", 2)
    assert moved.shape == (3, 8, 10, 2) and axes == "ZYXC"
    with pytest.raises(InputError, match=r"has 2 channels \(axes ZCYX\), and the model "
                                         r"reads 3\."):
        for_model(data, "ZCYX", 3, name="a.tif")
    with pytest.raises(InputError, match="--channel picks one channel"):
        for_model(data, "ZCYX", 2, channel=1)
    with pytest.raises(InputError, match="has a single channel; leave --channel out"):
        for_model(np.zeros((3, 8, 10)), "ZYX", 1, channel=1)
    # a file that names no axes is laid out by its shape, as before
    assert for_model(np.zeros((2, 8, 10)), None, 2)[0].shape == (8, 10, 2)


def _on_disk(array):
    """``array`` as a zarr array in memory: what a prediction on disk writes from."""
    import zarr

    return zarr.array(array, chunks=(1,) * (array.ndim - 2) + (5, 5))


@pytest.mark.parametrize("write", [write_tiff, lambda path, array, meta=None: write_tiff_tiled(
    path, _on_disk(array), meta, tile=16)], ids=["in memory", "on disk, tiled"])
def test_write_tiff_carries_axes_and_pixel_size_where_imagej_can_hold_them(tmp_path, write):
    meta = {"axes": "TZYX", "resolution": (4.0, 4.0), "resolutionunit": 1,
            "unit": "micron", "spacing": 0.5, "finterval": 3.0}
    small = (np.arange(2 * 3 * 8 * 8) % 300).astype(np.uint32).reshape(2, 3, 8, 8)
    write(tmp_path / "s.tif", small, meta)
    back = tiff_metadata(tmp_path / "s.tif")
    assert {k: back[k] for k in ("axes", "unit", "spacing", "finterval")} == {
        "axes": "TZYX", "unit": "micron", "spacing": 0.5, "finterval": 3.0}
    np.testing.assert_array_equal(read_image(tmp_path / "s.tif"), small)  # no value changed
    # beyond 16 bits ImageJ cannot hold the labels: every value kept, the pixel size too
    big = small.copy()
    big[0, 0, 0, 0] = 70_000
    write(tmp_path / "b.tif", big, meta)
    np.testing.assert_array_equal(read_image(tmp_path / "b.tif"), big)
    np.testing.assert_allclose(tiff_metadata(tmp_path / "b.tif")["resolution"], (4.0, 4.0))
    # axes ImageJ has no letter for: written as before
    write(tmp_path / "q.tif", small[0], {"axes": "QYX"})
    assert "unit" not in tiff_metadata(tmp_path / "q.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "q.tif"), small[0])
    # three planes (or a three-class model's probabilities) are grey planes, not colour:
    # they were written as an RGB image, which Fiji shows as one
    for name, array in (("three.tif", small[0].astype(np.uint16)),
                        ("prob.tif", np.ones((3, 8, 8), np.float32))):
        write(tmp_path / name, array)
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert len(tif.pages) == 3 and tif.pages[0].photometric == 1  # MINISBLACK
        np.testing.assert_array_equal(read_image(tmp_path / name), array)


def test_results_of_4_gb_or_more_on_disk_are_bigtiff_without_imagej_axes(tmp_path,
                                                                        monkeypatch):
    """ImageJ cannot read a BigTIFF, which a result of 4 GB or more must be: there the
    axes are left out, every value and the pixel size kept; below, a classic TIFF."""
    from napari_unet import io

    meta = {"axes": "ZYX", "resolution": (4.0, 4.0), "resolutionunit": 1, "spacing": 0.5}
    labels = (np.arange(3 * 8 * 8) % 300).astype(np.uint32).reshape(3, 8, 8)
    write_tiff_tiled(tmp_path / "small.tif", _on_disk(labels), meta, tile=16)
    monkeypatch.setattr(io, "_CLASSIC_TIFF_LIMIT", 64)
    write_tiff_tiled(tmp_path / "big.tif", _on_disk(labels), meta, tile=16)
    for name, big in (("small.tif", False), ("big.tif", True)):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_bigtiff == big and tif.is_imagej != big
        np.testing.assert_array_equal(read_image(tmp_path / name), labels)
        np.testing.assert_allclose(tiff_metadata(tmp_path / name)["resolution"], (4.0, 4.0))


def test_an_ome_tiff_gives_its_pixel_size_to_the_labels(grey_model, tmp_path):
    """An OME-TIFF keeps its pixel size in the OME-XML (its resolution tags say one pixel
    per unit): the labels get it as Fiji reads it."""
    from napari_unet.writers import write_ome_tiff

    cells = np.stack([_cells(s) for s in range(2)])
    write_ome_tiff(tmp_path / "z.ome.tif", cells, {"scale": [2.0, 0.25, 0.25]})
    assert cli.main(["-q", "predict", str(grey_model), str(tmp_path / "z.ome.tif"),
                     "--out", str(tmp_path / "out")]) == 0
    meta = tiff_metadata(tmp_path / "out" / "z.tif")
    assert meta["axes"] == "ZYX" and meta["unit"] == "micron" and meta["spacing"] == 2.0
    np.testing.assert_allclose(meta["resolution"], (4.0, 4.0))
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "z.tif"),
                                  run(predict(str(grey_model), cells)).labels)
