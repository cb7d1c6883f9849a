"""Files on disk: which label file belongs to which image, and that no result replaces an
input."""

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet import cli
from napari_unet.batch import tiff_outputs
from napari_unet.errors import InputError
from napari_unet.io import collect, match_by_stem, pair_by_stem, without_label_files
from napari_unet.synthetic import touching_cells


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def _names(pairs):
    return [(a.name, b.name) for a, b in pairs]


def test_images_and_labels_in_two_folders_pair_by_name(tmp_path):
    images = _touch(tmp_path / "images", "a.tif", "b.png")
    labels = _touch(tmp_path / "labels", "b.tif", "a.png")
    assert _names(pair_by_stem(collect(images), collect(labels))) == [("a.tif", "a.png"),
                                                                      ("b.png", "b.tif")]


@pytest.mark.parametrize("ending", ["_masks", "_mask", "_labels", "_label", "-seg", "_GT",
                                    "_cp_masks"])
def test_one_folder_holds_images_and_their_label_files(tmp_path, ending):
    folder = _touch(tmp_path / "data", "a.tif", f"a{ending}.tif", "b.tif", f"b{ending}.png")
    pairs = pair_by_stem(collect(folder), collect(folder))
    assert _names(pairs) == [("a.tif", f"a{ending}.tif"), ("b.tif", f"b{ending}.png")]


def test_a_file_is_never_its_own_labels(tmp_path):
    folder = _touch(tmp_path / "data", "a.tif", "b.tif")
    with pytest.raises(InputError, match=r"no label file for image\(s\) a.tif, b.tif.*"
                                         r"a_masks.tif"):
        pair_by_stem(collect(folder), collect(folder))
    single = collect(folder / "a.tif")
    with pytest.raises(InputError, match="no label file"):
        pair_by_stem(single, single)


def test_one_image_file_and_one_label_file_are_a_pair_whatever_their_names(tmp_path):
    _touch(tmp_path, "cells.tif", "drawn by hand.tif")
    pairs = pair_by_stem(collect(tmp_path / "cells.tif"), collect(tmp_path / "drawn by hand.tif"))
    assert _names(pairs) == [("cells.tif", "drawn by hand.tif")]


def test_two_label_files_for_one_image_are_refused_by_name(tmp_path):
    folder = _touch(tmp_path / "data", "a.tif", "a_masks.tif", "a_seg.tif", "b.tif",
                    "b_masks.tif")
    with pytest.raises(InputError, match=r"a.tif: two label files .*a_masks.tif and a_seg.tif"):
        pair_by_stem(collect(folder), collect(folder))
    labels = _touch(tmp_path / "labels", "a.tif", "a.png", "b.tif")
    with pytest.raises(InputError, match=r"a.tif: two label files .*a.png and a.tif"):
        pair_by_stem(collect(tmp_path / "data" / "?.tif"), collect(labels))


def test_a_truth_file_with_a_label_ending_matches_its_prediction(tmp_path):
    truth = _touch(tmp_path / "truth", "a_masks.tif", "b.tif")
    predicted = _touch(tmp_path / "pred", "a.tif", "b.tif")
    found = match_by_stem(collect(truth), collect(predicted))
    assert [f.name for f in found] == ["a.tif", "b.tif"]


def test_prediction_skips_label_files_beside_their_images_only(tmp_path):
    files = collect(_touch(tmp_path, "a.tif", "a_masks.tif", "b_masks.tif"))
    kept, skipped = without_label_files(files)
    assert [f.name for f in kept] == ["a.tif", "b_masks.tif"]  # b_masks has no image b
    assert [f.name for f in skipped] == ["a_masks.tif"]


@pytest.fixture(scope="module")
def cellpose_folder(tmp_path_factory):
    """Two images and their masks in one folder, as Cellpose keeps them, and a model."""
    folder = tmp_path_factory.mktemp("cellpose")
    for i in range(2):
        image, labels = touching_cells((96, 96), n_cells=8, seed=i)
        tifffile.imwrite(folder / f"img{i}.tif", image)
        tifffile.imwrite(folder / f"img{i}_masks.tif", labels.astype(np.uint16))
    model = folder.parent / "model.safetensors"
    assert cli.main(["-q", "train", str(folder), str(folder), "--out", str(model),
                     "--epochs", "1", "--steps-per-epoch", "1", "--base-channels", "4",
                     "--depth", "2", "--patch-size", "64", "--val-fraction", "0"]) == 0
    return folder, model


def test_cli_trains_and_predicts_on_a_folder_holding_images_and_masks(cellpose_folder,
                                                                      tmp_path, capsys):
    folder, model = cellpose_folder
    capsys.readouterr()
    assert cli.main(["predict", str(model), str(folder), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 label file(s) beside their images (img0_masks.tif, img1_masks.tif)" in out
    found = tifffile.imread(tmp_path / "img0.tif").max()  # what it found, image by image
    assert re.search(rf"^img0.tif: {found} objects?$", out, re.M), out
    assert sorted(f.name for f in tmp_path.iterdir()) == ["img0.tif", "img1.tif"]
    assert cli.main(["-q", "evaluate", str(tmp_path), str(folder)]) == 0
    assert "2 images" in capsys.readouterr().out


def test_cli_predict_never_writes_over_its_inputs(cellpose_folder, tmp_path, capsys):
    folder, model = cellpose_folder
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    assert cli.main(["-q", "predict", str(model), str(folder), "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "img0.tif: its result img0.tif would replace the input" in err
    assert len(err.strip().splitlines()) == 1
    other = tmp_path / "copy"
    other.mkdir()
    (other / "img0.tif").write_bytes((folder / "img0.tif").read_bytes())
    (other / "img0.png").write_bytes(b"")  # one folder, one name: one result file for two
    assert cli.main(["-q", "predict", str(model), str(other / "img0.tif"),
                     str(other / "img0.png"), "--out", str(tmp_path / "out")]) == 2
    assert "both results would be written to" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    import zarr

    # a zarr input whose result would replace it: refused before any TIFF is predicted
    store = zarr.open_array(str(tmp_path / "z" / "a.zarr"), mode="w", shape=(64, 64),
                            dtype="uint8")
    store[:] = 5
    assert cli.main(["-q", "predict", str(model), str(folder / "img0.tif"),
                     str(tmp_path / "z" / "a.zarr"), "--out", str(tmp_path / "z")]) == 2
    assert "a.zarr: its result a.zarr would replace the input" in capsys.readouterr().err
    assert not (tmp_path / "z" / "img0.tif").exists()  # refused before any work
    assert zarr.open_array(str(tmp_path / "z" / "a.zarr"), mode="r")[0, 0] == 5


def test_images_of_one_name_in_folders_of_a_plate_keep_their_folders(cellpose_folder,
                                                                      tmp_path, capsys):
    """A plate's wells read by '**' hold images of one name (each well's img0.tif): they
    were refused, as both results would have been written to out/img0.tif. Their results
    keep the folders below the one they share; images of different names stay flat."""
    folder, model = cellpose_folder
    plate = tmp_path / "plate"
    for well in ("A01", "B02/field"):
        (plate / well).mkdir(parents=True)
        (plate / well / "img0.tif").write_bytes((folder / "img0.tif").read_bytes())
    out = tmp_path / "out"
    assert cli.main(["predict", str(model), f"{plate}/**/*.tif", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert sorted(str(f.relative_to(out)) for f in out.rglob("*.tif")) == [
        "A01/img0.tif", "B02/field/img0.tif"]
    assert re.search(r"^A01/img0.tif: \d+ objects?$", said, re.M), said
    np.testing.assert_array_equal(tifffile.imread(out / "A01" / "img0.tif"),
                                  tifffile.imread(out / "B02" / "field" / "img0.tif"))
    (plate / "B02" / "field" / "img0.tif").rename(plate / "B02" / "field" / "img1.tif")
    flat = tmp_path / "flat"
    assert cli.main(["-q", "predict", str(model), f"{plate}/**/*.tif", "--out", str(flat)]) == 0
    assert sorted(f.name for f in flat.iterdir()) == ["img0.tif", "img1.tif"]


def _train_args(images, labels, model):
    return ["train", str(images), str(labels), "--out", str(model), "--epochs", "1",
            "--steps-per-epoch", "1", "--base-channels", "4", "--depth", "2",
            "--patch-size", "64", "--val-fraction", "0"]


def test_cli_trains_on_a_stack_file_plane_by_plane_and_skips_unlabelled_planes(tmp_path,
                                                                                capsys):
    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    pairs = [touching_cells((96, 96), n_cells=8, seed=s) for s in range(4)]
    stack = np.stack([p[0] for p in pairs])
    labels = np.stack([p[1] for p in pairs]).astype(np.uint16)
    labels[2] = 0  # a plane nobody labelled
    tifffile.imwrite(tmp_path / "i" / "z.tif", stack)
    tifffile.imwrite(tmp_path / "l" / "z.tif", labels)
    model = tmp_path / "m.safetensors"
    assert cli.main(_train_args(tmp_path / "i", tmp_path / "l", model)) == 0
    assert "3 training and 0 validation image(s)" in capsys.readouterr().out
    labels[:] = 0
    tifffile.imwrite(tmp_path / "l" / "z.tif", labels)
    assert cli.main(_train_args(tmp_path / "i", tmp_path / "l", model)) == 2
    assert "the labels of z.tif contain no object in any plane" in capsys.readouterr().err


def test_cli_trains_on_a_time_lapse_of_z_stacks_plane_by_plane(tmp_path, capsys):
    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    pairs = [touching_cells((96, 96), n_cells=8, seed=s) for s in range(6)]
    stacks = np.stack([p[0] for p in pairs]).reshape(2, 3, 96, 96)
    labels = np.stack([p[1] for p in pairs]).astype(np.uint16).reshape(2, 3, 96, 96)
    labels[0, 2] = 0  # a plane nobody labelled
    tifffile.imwrite(tmp_path / "i" / "tz.tif", stacks, imagej=True,
                     metadata={"axes": "TZYX"})
    tifffile.imwrite(tmp_path / "l" / "tz.tif", labels, imagej=True,
                     metadata={"axes": "TZYX"})
    model = tmp_path / "m.safetensors"
    assert cli.main(_train_args(tmp_path / "i", tmp_path / "l", model)) == 0
    assert "5 training and 0 validation image(s)" in capsys.readouterr().out
    tifffile.imwrite(tmp_path / "l" / "tz.tif", labels[:, :, :90], imagej=True,
                     metadata={"axes": "TZYX"})
    assert cli.main(_train_args(tmp_path / "i", tmp_path / "l", model)) == 2
    assert ("tz.tif: image shape (2, 3, 96, 96) and labels shape (2, 3, 90, 96) do not "
            "match") in capsys.readouterr().err


def test_cli_takes_channels_first_files_as_imagej_saves_them(tmp_path, capsys):
    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    image, labels = touching_cells((96, 96), n_cells=8, seed=0)
    two = np.stack([image, 255 - image]).astype(np.uint16)  # (C, H, W)
    tifffile.imwrite(tmp_path / "i" / "a.tif", two, imagej=True, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "l" / "a.tif", labels.astype(np.uint16))
    model = tmp_path / "m.safetensors"
    assert cli.main(["-q", *_train_args(tmp_path / "i", tmp_path / "l", model)]) == 0
    from napari_unet.checkpoint import load_checkpoint

    assert load_checkpoint(model).config.in_channels == 2
    assert cli.main(["-q", "predict", str(model), str(tmp_path / "i"),
                     "--out", str(tmp_path / "p")]) == 0
    assert tifffile.imread(tmp_path / "p" / "a.tif").shape == (96, 96)
    # the same planes without the metadata may be a stack of two: refused, as before
    tifffile.imwrite(tmp_path / "i" / "a.tif", two, photometric="minisblack")
    assert cli.main(["-q", *_train_args(tmp_path / "i", tmp_path / "l", model)]) == 2
    assert "a stack of 2 planes (or channels first)" in capsys.readouterr().err


@pytest.mark.parametrize("content,words", [
    (b"II*\x00damaged", "holds no image data; the file may be damaged"),
    (b"", "is empty (0 bytes)"),
    (b"not a TIFF", "could not be read as an image"),
])
def test_a_damaged_tiff_is_named_in_one_line(cellpose_folder, tmp_path, capsys, content,
                                             words):
    _, model = cellpose_folder
    (tmp_path / "bad.tif").write_bytes(content)
    assert cli.main(["-q", "predict", str(model), str(tmp_path / "bad.tif"),
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"napari-unet: error: bad.tif {words}"), err
    assert len(err.strip().splitlines()) == 1


def test_cli_regions_of_a_stack_keep_a_plane_whose_region_holds_no_cell(tmp_path, capsys):
    for sub in ("i", "l", "r"):
        (tmp_path / sub).mkdir()
    pairs = [touching_cells((96, 96), n_cells=8, seed=s) for s in range(3)]
    labels = np.stack([p[1] for p in pairs]).astype(np.uint16)
    labels[1] = 0  # plane 2: no cell in the part marked as labelled
    region = np.zeros(labels.shape, np.uint8)
    region[0] = 1
    region[1, :, :48] = 1
    tifffile.imwrite(tmp_path / "i" / "z.tif", np.stack([p[0] for p in pairs]))
    tifffile.imwrite(tmp_path / "l" / "z.tif", labels)
    tifffile.imwrite(tmp_path / "r" / "z.tif", region)
    model = tmp_path / "m.safetensors"
    args = _train_args(tmp_path / "i", tmp_path / "l", model) + ["--regions", str(tmp_path / "r")]
    assert cli.main(args) == 0
    assert "3 training and 0 validation image(s)" in capsys.readouterr().out
    tifffile.imwrite(tmp_path / "r" / "z.tif", region[0])  # a 2D region for a stack
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "z.tif: the region file has shape (96, 96), the labels (3, 96, 96)" in err


@pytest.mark.parametrize("name", ["cells.tif", "cells.ome.tif", "cells.OME.TIFF", "cells.png"])
def test_predict_names_its_result_after_the_image_without_extension(tmp_path, name):
    labels, prob = tiff_outputs(tmp_path / "in" / name, tmp_path / "out")
    assert (labels.name, prob.name) == ("cells.tif", "cells_prob.tif")


def test_grey_files_saved_with_a_channel_axis_of_one_are_read_as_grey(tmp_path, capsys):
    """tifffile reads a grey TIFF written as ``(H, W, 1)`` so; taken as a stack, it was
    trained and predicted as 96 planes one pixel wide."""
    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    image, labels = touching_cells((96, 96), n_cells=8, seed=0)
    tifffile.imwrite(tmp_path / "i" / "a.tif", image[..., None])
    tifffile.imwrite(tmp_path / "l" / "a.tif", labels.astype(np.uint16)[..., None])
    model = tmp_path / "m.safetensors"
    assert cli.main(_train_args(tmp_path / "i", tmp_path / "l", model)) == 0
    assert "1 training and 0 validation image(s)" in capsys.readouterr().out
    tifffile.imwrite(tmp_path / "i" / "b.tif", image)
    tifffile.imwrite(tmp_path / "i" / "z.tif", np.stack([image, image])[..., None])
    assert cli.main(["-q", "predict", str(model), str(tmp_path / "i"),
                     "--out", str(tmp_path / "p")]) == 0
    grey = tifffile.imread(tmp_path / "p" / "b.tif")
    assert grey.shape == (96, 96)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p" / "a.tif"), grey)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p" / "z.tif"),
                                  np.stack([grey, grey]))


def test_predict_takes_a_trailing_channel_of_one_as_grey(cellpose_folder):
    from napari_unet.predict import predict
    from napari_unet.progress import run

    _, model = cellpose_folder
    image = touching_cells((64, 80), n_cells=6, seed=3)[0]
    grey = run(predict(str(model), image)).labels
    np.testing.assert_array_equal(run(predict(str(model), image[..., None])).labels, grey)
    import dask.array as da

    lazy = da.from_array(np.stack([image, image])[..., None], chunks=(1, 32, 32, 1))
    np.testing.assert_array_equal(run(predict(str(model), lazy)).labels, np.stack([grey, grey]))


@pytest.mark.parametrize("command,words", [
    (["train", "{data}", "{data}", "--out", "{folder}", "--epochs", "1"],
     "--out {folder} is a folder; give the file a name in it, e.g. {folder}/model.safetensors."),
    (["export", "{model}", "--out", "{folder}"], "e.g. {folder}/model.zip."),
    (["evaluate", "{data}", "{data}", "--out", "{folder}"], "e.g. {folder}/scores.json."),
    (["predict", "{model}", "{data}", "--out", "{file}"],
     "--out {file} is a file; predict writes its results into a folder"),
    (["sample", "{file}"], "{file} is a file; give a folder to write the samples into."),
    (["sample", "{folder}", "--count", "0"], "--count is the number of image pairs to write, "
                                              "at least 1, not 0."),
])
def test_an_out_of_the_wrong_kind_is_refused_before_any_work(cellpose_folder, tmp_path,
                                                             capsys, command, words):
    """A folder given where a file is written (the training trained, then failed to save:
    IsADirectoryError), or a file where predict writes a folder (FileExistsError)."""
    data, model = cellpose_folder
    (tmp_path / "models").mkdir()
    (tmp_path / "notes.txt").write_text("kept")
    names = {"data": data, "model": model, "folder": tmp_path / "models",
             "file": tmp_path / "notes.txt"}
    assert cli.main(["-q", *(c.format(**names) for c in command)]) == 2
    err = capsys.readouterr().err
    assert words.format(**names) in err and len(err.strip().splitlines()) == 1
    assert list((tmp_path / "models").iterdir()) == []
    assert (tmp_path / "notes.txt").read_text() == "kept"


def test_hidden_files_in_a_folder_are_no_images(tmp_path):
    """macOS leaves '._img01.tif' (AppleDouble) beside each file it copies to an exFAT or
    FAT drive: they were taken for images without labels, and the training refused."""
    images = _touch(tmp_path / "images", "a.tif", "._a.tif", ".hidden.png")
    labels = _touch(tmp_path / "labels", "a.tif", "._a.tif")
    assert [f.name for f in collect(images)] == ["a.tif"]
    assert _names(pair_by_stem(collect(images), collect(labels))) == [("a.tif", "a.tif")]


def test_images_in_folders_inside_a_folder_are_said_and_read_by_a_glob(tmp_path,
                                                                        monkeypatch):
    """A plate's images kept a folder per well were read as nothing (only the top folder),
    or in part, without a word: that is said with the glob that reads them all, and that
    glob (``**``) does."""
    plate = tmp_path / "plate"
    _touch(plate / "A01", "a.tif", "b.tif")
    _touch(plate / "A02", "c.tif")
    _touch(plate / "notes", "readme.txt")  # not a folder of images
    _touch(plate / "lost+found", "#1234")  # one that cannot be read (below): left out
    iterdir = Path.iterdir

    def refused(self):
        if self.name == "lost+found":
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refused)
    with pytest.raises(InputError, match=r"plate holds no image files; its folders A01, A02 "
                                         r"hold images.*give '.*plate/\*\*/\*\.tif'"):
        collect(plate)
    found = collect(f"{plate}/**/*.tif")
    assert [f.name for f in found] == ["a.tif", "b.tif", "c.tif"]
    _touch(plate, "top.tif")
    with pytest.warns(UserWarning, match=r"only the images directly in .*plate are read; "
                                         r"its folders A01, A02 hold images"):
        assert [f.name for f in collect(plate)] == ["top.tif"]
    assert [f.name for f in collect(f"{plate}/**/*.tif")] == ["a.tif", "b.tif", "c.tif",
                                                               "top.tif"]
    import warnings

    with warnings.catch_warnings():  # a folder the command reads anyway is not said
        warnings.simplefilter("error")
        collect(plate, besides=[plate / "A01", str(plate / "A02")])


def test_the_command_line_says_once_which_folders_it_did_not_read(cellpose_folder, tmp_path,
                                                                    capsys):
    folder, model = cellpose_folder
    data = tmp_path / "data"
    (data / "more").mkdir(parents=True)
    for name in ("img0.tif", "img1.tif"):
        (data / name).write_bytes((folder / name).read_bytes())
        (data / "more" / name).write_bytes((folder / name).read_bytes())
    assert cli.main(["-q", "predict", str(model), str(data), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: only the images directly in {data} are read; its folder more "
                   f"holds images, and folders inside a folder are not read: give "
                   f"'{data}/**/*.tif' to read them all."]
    assert sorted(f.name for f in (tmp_path / "o").iterdir()) == ["img0.tif", "img1.tif"]
    # the results written into a folder inside the images' are not said on the next run
    assert cli.main(["-q", "predict", str(model), str(data / "more"), "--out",
                     str(data / "more" / "out")]) == 0
    assert cli.main(["-q", "predict", str(model), str(data / "more"), "--out",
                     str(data / "more" / "out")]) == 0
    assert capsys.readouterr().err == ""


def test_a_microscopes_own_files_are_named_with_what_to_do(tmp_path, capsys):
    """A folder of .czi files was said to hold no image files, and a .nd2 given by name
    failed in the decoder's words ('unpack_from requires a buffer ...')."""
    folder = _touch(tmp_path / "raw", "a.czi", "b.nd2", "notes.txt")
    (folder / "b.nd2").write_bytes(b"ND2 data")
    with pytest.raises(InputError, match=r"raw holds no image files napari-unet reads, but "
                                         r"microscope files \(Zeiss CZI, Nikon ND2\): save "
                                         r"them as TIFF .* give those files"):
        collect(folder)
    assert cli.main(["-q", "predict", "nuclei", str(folder / "b.nd2"), "--out",
                     str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-unet: error: b.nd2 is a Nikon ND2 file, which napari-unet "
                          "does not read: save it as TIFF (in Fiji") and "unpack" not in err
    assert not (tmp_path / "out").exists()


def test_labels_saved_as_jpeg_are_refused(tmp_path, capsys):
    """JPEG's compression puts new values along the labels' edges: a mask saved as JPEG
    was trained on as hundreds of slivers of one value each."""
    import imageio.v3 as iio

    image, labels = touching_cells((96, 96), n_cells=6, seed=0)
    _touch(tmp_path / "images")
    _touch(tmp_path / "labels")
    iio.imwrite(tmp_path / "images" / "a.png", image)
    iio.imwrite(tmp_path / "labels" / "a.jpg", ((labels > 0) * 255).astype(np.uint8))
    assert len(np.unique(iio.imread(tmp_path / "labels" / "a.jpg"))) > 2  # what JPEG made
    model = tmp_path / "m.safetensors"
    assert cli.main(["-q", "train", str(tmp_path / "images"), str(tmp_path / "labels"),
                     "--out", str(model), "--epochs", "1"]) == 2
    _touch(tmp_path / "predicted")
    tifffile.imwrite(tmp_path / "predicted" / "a.tif", labels)
    assert cli.main(["-q", "evaluate", str(tmp_path / "predicted"), str(tmp_path / "labels")]
                    ) == 2  # the truth saved as JPEG
    err = capsys.readouterr().err.splitlines()
    assert err == ["napari-unet: error: a.jpg: labels saved as JPEG are changed by its "
                   "compression (new values appear along the edges of the labels); save "
                   "labels as PNG or TIFF, which keep them exactly."] * 2
    assert not model.exists()


def test_images_chosen_with_or_without_their_label_files_are_paired(tmp_path):
    """The Train widget's *Add files…*: images chosen with their label files, or alone
    (their label files beside them), are paired; an image without one is named."""
    from napari_unet.io import pairs_among

    for name in ("a.tif", "a_masks.tif", "b.png", "b_labels.png", "c.tif", "d.jpg",
                 "d_masks.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    chosen = [tmp_path / n for n in ("a.tif", "a_masks.tif", "b.png", "c.tif")]
    pairs, alone = pairs_among(chosen)
    assert [(i.name, lab.name) for i, lab in pairs] == [("a.tif", "a_masks.tif"),
                                                         ("b.png", "b_labels.png")]
    assert [f.name for f in alone] == ["c.tif"]
    with pytest.raises(InputError, match="d_masks.jpg: labels saved as JPEG"):
        pairs_among([tmp_path / "d.jpg"])
    (tmp_path / "a_seg.tif").write_bytes(b"")
    with pytest.raises(InputError, match="a.tif: two label files could belong to it"):
        pairs_among([tmp_path / "a.tif"])


def test_images_whose_label_files_are_in_another_folder_are_paired_from_it(tmp_path):
    """The layout of DSB 2018 and many others: images/a.png with labels/a.png."""
    from napari_unet.io import pairs_among

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        for name in ("a.png", "b.tif"):
            (tmp_path / folder / name).write_bytes(b"")
    (tmp_path / "images" / "c.tif").write_bytes(b"")
    chosen = sorted((tmp_path / "images").iterdir())
    assert pairs_among(chosen)[0] == []
    pairs, alone = pairs_among(chosen, tmp_path / "labels")
    assert [(i.parent.name, i.name, lab.parent.name, lab.name) for i, lab in pairs] == [
        ("images", "a.png", "labels", "a.png"), ("images", "b.tif", "labels", "b.tif")]
    assert [f.name for f in alone] == ["c.tif"]
