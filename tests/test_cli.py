import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import as_masks, discs, sample_and_train

from napari_unet.checkpoint import load_checkpoint, save_checkpoint
from napari_unet.cli import main


def test_sample_train_predict_end_to_end(tmp_path, capsys):
    data, model = sample_and_train(tmp_path, 3, "model.safetensors", "--epochs", "2",
                                   "--steps-per-epoch", "3", "--base-channels", "4",
                                   "--depth", "2", "--patch-size", "64", "--seed", "1")
    ck = load_checkpoint(model)
    assert ck.config.base_channels == 4 and ck.training["config"]["seed"] == 1
    # the training report beside the model: a real PNG and the numbers
    import json

    import imageio.v3 as iio

    png = tmp_path / "model.report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert iio.imread(png).shape[0] > 500  # curves and validation images
    numbers = json.loads((tmp_path / "model.report.json").read_text())
    assert [h["epoch"] for h in numbers["history"]] == [1, 2]
    assert f"training report: {png}" in capsys.readouterr().out
    out = tmp_path / "pred"
    assert main(["-q", "predict", str(model), str(data / "images" / "cells_00.tif"),
                 str(data / "images" / "cells_01.tif"), "--out", str(out),
                 "--probabilities", "--tile-size", "96"]) == 0
    labels = tifffile.imread(out / "cells_00.tif")
    prob = tifffile.imread(out / "cells_00_prob.tif")
    assert labels.shape == (256, 256) and labels.dtype in (np.uint16, np.uint32)
    assert prob.shape == (2, 256, 256) and prob.dtype == np.float32
    assert sorted(p.name for p in out.iterdir()) == [
        "cells_00.tif", "cells_00_prob.tif", "cells_01.tif", "cells_01_prob.tif"]
    # cells of another size: resized to the model's, labels back at the image's size
    assert ck.object_diameter > 10
    assert main(["-q", "predict", str(model), str(data / "images" / "cells_00.tif"),
                 "--out", str(tmp_path / "sized"), "--diameter",
                 str(1.5 * ck.object_diameter)]) == 0
    assert tifffile.imread(tmp_path / "sized" / "cells_00.tif").shape == (256, 256)
    capsys.readouterr()
    assert main(["predict", str(model), str(data / "images" / "cells_00.tif"),
                 "--out", str(tmp_path / "auto"), "--diameter", "auto"]) == 0
    assert "cells_00.tif: " in capsys.readouterr().out  # what the estimate found, or not
    # a model that does not record its cell size: one line, exit 2, nothing written
    del ck.task["object_diameter"]
    unsized = save_checkpoint(tmp_path / "unsized.safetensors", ck)
    assert main(["-q", "predict", str(unsized), str(data / "images" / "cells_00.tif"),
                 "--out", str(tmp_path / "none"), "--diameter", "30"]) == 2
    assert "does not record the size" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_a_model_named_without_its_suffix_is_saved_with_it(tmp_path, capsys):
    """`--out mymodel` wrote a file `mymodel`, which no widget lists and no drop on napari
    opens."""
    _, model = sample_and_train(tmp_path, 2, "mymodel", "--epochs", "1", "--steps-per-epoch",
                                "2", "--base-channels", "4", "--depth", "2", "--patch-size",
                                "64")
    assert not model.exists() and load_checkpoint(tmp_path / "mymodel.safetensors")
    assert f"saved {tmp_path / 'mymodel.safetensors'} (" in capsys.readouterr().out


def test_offsets_target_end_to_end_writes_the_vectors_after_the_classes(tmp_path):
    data, model = sample_and_train(tmp_path, 2, "o.safetensors", "--target", "offsets",
                                   "--epochs", "1", "--steps-per-epoch", "2",
                                   "--base-channels", "4", "--depth", "2", "--patch-size", "64")
    ck = load_checkpoint(model)
    assert ck.target == "offsets" and ck.config.out_channels == 4
    out = tmp_path / "pred"
    assert main(["-q", "predict", str(model), str(data / "images" / "cells_00.tif"),
                 "--out", str(out), "--probabilities"]) == 0
    prob = tifffile.imread(out / "cells_00_prob.tif")
    assert prob.shape == (4, 256, 256)
    np.testing.assert_allclose(prob[:2].sum(0), 1.0, atol=1e-4)
    assert tifffile.imread(out / "cells_00.tif").shape == (256, 256)


def test_training_on_regions_of_partly_labelled_images(tmp_path, capsys):
    data = tmp_path / "demo"
    assert main(["sample", str(data), "--count", "2"]) == 0
    labels = tifffile.imread(data / "labels" / "cells_00.tif")
    tifffile.imwrite(data / "labels" / "cells_00.tif", np.where(
        np.arange(labels.shape[1]) < 128, labels, 0).astype(labels.dtype))  # left half painted
    (tmp_path / "regions").mkdir()
    region = np.zeros(labels.shape, np.uint8)
    region[:, :128] = 255
    tifffile.imwrite(tmp_path / "regions" / "cells_00.tif", region)
    model = tmp_path / "m.safetensors"
    args = ["-q", "train", str(data / "images"), str(data / "labels"), "--out", str(model),
            "--epochs", "1", "--steps-per-epoch", "2", "--base-channels", "4", "--depth", "2",
            "--patch-size", "64", "--regions", str(tmp_path / "regions")]
    assert main(args) == 0
    assert load_checkpoint(model).training["annotated_regions"] == 1  # cells_01: all of it
    tifffile.imwrite(tmp_path / "regions" / "cells_00.tif", region[:100])
    assert main(args[:4] + ["--out", str(tmp_path / "n.safetensors")] + args[6:]) == 2
    assert "annotated region of cells_00.tif has shape" in capsys.readouterr().err
    assert not (tmp_path / "n.safetensors").exists()


def test_bad_input_exits_2_with_one_line(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    tifffile.imwrite(images / "a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(labels / "a.tif", np.zeros((30, 32), np.uint16))
    cmd = [sys.executable, "-m", "napari_unet.cli", "train", str(images), str(labels),
           "--out", str(tmp_path / "m.safetensors"), "--epochs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "differ" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m.safetensors").exists()
    (labels / "a.tif").rename(labels / "b.tif")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "a.tif" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "napari_unet.cli", "predict",
                           str(tmp_path / "missing.safetensors"), str(images), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not (tmp_path / "out").exists()
    for size in ("many", "-5"):
        proc = subprocess.run([sys.executable, "-m", "napari_unet.cli", "predict", "nuclei",
                               str(images), "--out", str(tmp_path / "out"), "--min-size",
                               size], capture_output=True, text=True)
        assert proc.returncode == 2 and "--min-size" in proc.stderr and "auto" in proc.stderr
        assert not (tmp_path / "out").exists()
    tifffile.imwrite(labels / "a.tif", np.zeros((32, 32), np.uint16))
    for option, words in ((["--epochs", "0"], "epochs must be a positive number, not 0."),
                          (["--depth", "9"], "depth 9 has 7,964 million parameters"),
                          (["--seed", "-1"], "seed must be a whole number from 0 to 2**63 - 1, "
                                             "not -1.")):  # numpy's traceback
        proc = subprocess.run([*cmd[:-2], *option], capture_output=True, text=True)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr


def test_importing_the_package_imports_neither_torch_nor_qt():
    code = ("import sys, napari_unet, napari_unet.config, napari_unet.tiling; "
            "print(any(m.split('.')[0] in ('torch', 'qtpy', 'PyQt5', 'napari') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_every_option_says_what_it_does():
    """`napari-unet COMMAND -h` is the manual of users who never read the README: every
    argument of every command has a help text."""
    import argparse

    from napari_unet.cli import parser

    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"napari-unet {name}: {action.dest} has no help text"


def test_the_readme_synopsis_lists_every_option_and_no_other():
    """The README's command-line synopsis and the parser agree, command by command."""
    import argparse
    import re
    from pathlib import Path

    from napari_unet.cli import parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    synopsis = re.search(r"## Command line\n\n```\n(.*?)\n```", readme, re.S).group(1)
    listed: dict[str, set[str]] = {}
    command = None
    for line in synopsis.splitlines():
        start = re.match(r"napari-unet (\w+)", line)
        command = start.group(1) if start else None if line.startswith("torchrun") else command
        if command:
            listed.setdefault(command, set()).update(re.findall(r"--[a-z][a-z0-9-]*", line))
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(listed) == set(commands.choices)
    for name, sub in commands.choices.items():
        options = {o for a in sub._actions if not isinstance(a, argparse._HelpAction)
                   for o in a.option_strings if o.startswith("--")} - {"--quiet"}
        assert listed[name] == options, (name, listed[name] ^ options)
    assert "`-q`/`--quiet`" in readme  # every command's, said once


@pytest.mark.parametrize("words", [["-q", "info", "nuclei"], ["info", "nuclei", "-q"],
                                   ["info", "nuclei"]])
def test_quiet_goes_before_or_after_the_command(words):
    from napari_unet.cli import parser

    assert parser().parse_args(words).quiet is ("-q" in words)


def test_evaluate_scores_segmentations_against_the_truth(tmp_path, capsys):
    import json

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    lab = discs((64, 96), [(32, 20), (32, 37), (32, 75)], 9)  # 1 and 2 touch, 3 apart
    truth.mkdir()
    pred.mkdir()
    tifffile.imwrite(truth / "a.tif", lab)
    tifffile.imwrite(pred / "a.tif", lab * 7)  # the same objects, other ids
    merged = np.where(lab == 2, 1, lab)  # the touching pair as one object
    tifffile.imwrite(truth / "b.tif", (lab > 0).astype(np.uint8) * 255)  # a 0/255 mask
    tifffile.imwrite(pred / "b.tif", merged.astype(np.uint16))
    tifffile.imwrite(pred / "a_prob.tif", np.zeros((2, 64, 96), np.float32))  # ignored
    assert main(["evaluate", str(pred), str(truth), "--out", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    a, b = scores["images"]
    assert (a["ap50"], a["map"], a["touching_separated"], a["touching_pairs"]) == (1, 1, 1, 1)
    # the mask's touching discs are one object in the truth too: b is right about them
    assert b["objects"] == 2 and b["ap50"] == 1.0 and b["touching_pairs"] == 0
    assert scores["ap50"] == 1.0 and scores["tp_fp_fn_at_0.5"] == [5, 0, 0]
    tifffile.imwrite(truth / "b.tif", lab.astype(np.uint16))  # now the truth separates them
    capsys.readouterr()
    assert main(["evaluate", str(pred), str(truth)]) == 0
    out = capsys.readouterr().out
    # b: the merged pair still matches disc 2 (the one drawn whole) at IoU > 0.5, disc 1 is
    # missed: TP 2, FP 0, FN 1 -> AP 2/3; the mean with a's 1 is 0.833
    assert (lab == 2).sum() / ((lab == 1) | (lab == 2)).sum() > 0.5
    assert "2 images: AP@0.5 0.833" in out and "TP 5, FP 0, FN 1" in out
    assert "separated 50.0 % of 2" in out
    # semantic: the pixel error is the share of pixels of another class
    flipped = (lab > 0).astype(np.uint8)
    flipped[:8] = 1 - flipped[:8]
    tifffile.imwrite(pred / "b.tif", flipped)
    tifffile.imwrite(truth / "b.tif", (lab > 0).astype(np.uint8) * 255)
    tifffile.imwrite(pred / "a.tif", (lab > 0).astype(np.uint8))
    tifffile.imwrite(truth / "a.tif", (lab > 0).astype(np.uint8))
    assert main(["evaluate", str(pred), str(truth), "--mode", "semantic", "--out",
                 str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["images"][1]["pixel_error"] == round(8 * 96 / (64 * 96), 4)
    assert scores["pixel_error"] == round(8 * 96 / (64 * 96) / 2, 4)
    (pred / "b.tif").unlink()
    proc = subprocess.run([sys.executable, "-m", "napari_unet.cli", "evaluate", str(pred),
                           str(truth)], capture_output=True, text=True)
    assert proc.returncode == 2 and "b.tif" in proc.stderr and "Traceback" not in proc.stderr
    assert "for 1 of the 2 truth file(s) (b.tif): predict them, or give only the" in proc.stderr
    assert main(["evaluate", str(pred), str(truth / "a.tif")]) == 0  # as the sentence says


def test_evaluate_refuses_an_image_given_as_labels(tmp_path, capsys):
    """The images' folder given for the predictions (or the truth) was scored as labels,
    each grey level's pixels as objects: AP 0 and thousands of false positives."""
    truth, images = tmp_path / "truth", tmp_path / "images"
    truth.mkdir()
    images.mkdir()
    lab = discs((64, 96), [(32, 20), (32, 37), (32, 75)], 9)
    image = (lab > 0) * 150 + np.random.default_rng(0).integers(0, 40, lab.shape)
    tifffile.imwrite(truth / "a.tif", lab)
    tifffile.imwrite(images / "a.tif", image.astype(np.uint8))
    for args in ([images, truth], [truth, images]):
        capsys.readouterr()
        assert main(["evaluate", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert f"{images / 'a.tif'} looks like an image, not labels" in err, err
        assert len(err.strip().splitlines()) == 1
    (tmp_path / "pred").mkdir()
    tifffile.imwrite(tmp_path / "pred" / "a.tif", lab * 7)
    assert main(["evaluate", str(tmp_path / "pred"), str(truth)]) == 0  # labels are no image


def test_evaluate_scores_each_labelled_plane_of_a_stack(tmp_path, capsys):
    """Stacks (a z-stack, a time-lapse of z-stacks) were refused ("both must be 2D");
    each plane whose truth holds labels is scored as an image."""
    import json

    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    lab = discs((64, 96), [(32, 20), (32, 37), (32, 75)], 9)
    stack = np.stack([lab, lab, np.zeros_like(lab), lab]).reshape(2, 2, 64, 96)
    tifffile.imwrite(truth / "tz.tif", stack.astype(np.uint16))
    guess = stack.copy()
    guess[1, 1][guess[1, 1] == 3] = 0  # a disc missed in time 2, plane 2
    guess[1, 0][:] = 0  # where the truth has none: left out, whatever is predicted
    guess[1, 0][:4, :4] = 1
    tifffile.imwrite(pred / "tz.tif", guess.astype(np.uint16))
    assert main(["evaluate", str(pred), str(truth), "--out", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "left out 1 plane(s) without labels in the truth" in out
    assert "3 images and planes: AP@0.5 0.889" in out  # (1 + 1 + 2/3) / 3
    scores = json.loads((tmp_path / "s.json").read_text())
    assert [row["name"] for row in scores["images"]] == [
        "tz.tif time 1, plane 1", "tz.tif time 1, plane 2", "tz.tif time 2, plane 2"]
    assert scores["tp_fp_fn_at_0.5"] == [8, 0, 1]


def test_predict_cuts_touching_round_cells_at_their_neck_unless_told_not_to(tmp_path):
    """Two overlapping bright discs, which a model that thresholds the image sees as one
    foreground without a line or dip between them: `predict` cuts them apart at the neck,
    `predict --no-neck-cut` leaves them one object."""
    from _models import thresholding_model

    model = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    image = np.where(discs((64, 96), [(32, 30), (32, 30 + 22)], 14) > 0, 200, 20)
    tifffile.imwrite(tmp_path / "pair.tif", image.astype(np.uint8))
    for flags, objects in (([], 2), (["--no-neck-cut"], 1)):
        out = tmp_path / f"out{objects}"
        assert main(["-q", "predict", str(model), str(tmp_path / "pair.tif"), "--out",
                     str(out), *flags]) == 0
        labels = tifffile.imread(out / "pair.tif")
        assert labels.max() == objects and (labels > 0).sum() == (image > 100).sum()


def test_predict_stops_at_a_bad_file_or_with_keep_going_skips_it(tmp_path, capsys):
    """A file the model cannot read ends `predict` there (exit status 2, the files before
    written, nothing of it); with --keep-going it is skipped and named, the others are
    written, and the exit status is still 2."""
    from _models import thresholding_model

    model = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    folder = tmp_path / "in"
    folder.mkdir()
    image = np.where(discs((64, 64), [(32, 32)], 12) > 0, 200, 20).astype(np.uint8)
    for name in ("a", "c"):
        tifffile.imwrite(folder / f"{name}.tif", image)
    tifffile.imwrite(folder / "b.tif", np.full((64, 64), np.nan, np.float32))
    assert main(["-q", "predict", str(model), str(folder), "--out", str(tmp_path / "o1")]) == 2
    assert "napari-unet: error: b.tif contains NaN" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["a.tif"]

    assert main(["-q", "predict", str(model), str(folder), "--out", str(tmp_path / "o2"),
                 "--keep-going"]) == 2
    said = capsys.readouterr()
    assert "napari-unet: skipped b.tif: b.tif contains NaN" in said.err
    assert "napari-unet: skipped 1 image file(s): b.tif" in said.err
    assert f"wrote 2 result(s) to {tmp_path / 'o2'}" in said.out
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["a.tif", "c.tif"]
    assert tifffile.imread(tmp_path / "o2" / "c.tif").max() == 1


def test_predict_measure_writes_each_images_objects_beside_its_labels(tmp_path):
    """`predict --measure` writes <stem>.csv beside each label file, of a TIFF and of a
    zarr input (read block by block), one row per object, as napari_unet.measure takes
    them; without the flag, no CSV."""
    import csv

    import zarr
    from _models import thresholding_model

    from napari_unet.io import open_zarr
    from napari_unet.measure import measure

    model = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    image = np.where(discs((64, 96), [(20, 20), (40, 70)], 10) > 0, 200, 20).astype(np.uint8)
    tifffile.imwrite(tmp_path / "two.tif", image)
    big = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=(64, 96),
                          chunks=(32, 32), dtype=np.uint8)
    big[:] = image
    out = tmp_path / "out"
    assert main(["-q", "predict", str(model), str(tmp_path / "two.tif"),
                 str(tmp_path / "big.zarr"), "--out", str(out), "--measure"]) == 0
    for csv_name, labels in (("two.csv", tifffile.imread(out / "two.tif")),
                             ("big.csv", open_zarr(out / "big.zarr").compute())):
        with open(out / csv_name, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        expected = measure(labels, image)
        assert len(rows) == len(expected["index"]) == 2
        assert [int(r["index"]) for r in rows] == expected["index"].tolist()
        assert [int(r["area"]) for r in rows] == expected["area"].tolist()
        np.testing.assert_allclose([float(r["mean_intensity"]) for r in rows], 200)
    with open(out / "objects_per_image.csv", newline="", encoding="utf-8") as f:
        summary = list(csv.DictReader(f))  # a row per image, the zarr input's too
    assert [(r["image"], r["objects"]) for r in summary] == [("two.tif", "2"),
                                                             ("big.zarr", "2")]
    clash = zarr.open_array(str(tmp_path / "objects_per_image.zarr"), mode="w",
                            shape=(64, 96), chunks=(32, 32), dtype=np.uint8)
    clash[:] = image
    assert main(["-q", "predict", str(model), str(tmp_path / "objects_per_image.zarr"),
                 "--out", str(tmp_path / "clash"), "--measure"]) == 2
    assert not (tmp_path / "clash").exists()  # refused before any work
    assert main(["-q", "predict", str(model), str(tmp_path / "two.tif"), "--out",
                 str(tmp_path / "plain")]) == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["two.tif"]


def test_predict_rois_writes_each_images_objects_as_imagej_rois(tmp_path, capsys):
    """`predict --rois` writes <stem>_rois.zip beside each label file, one ROI per object
    whose outline fills back to its pixels; none for an image without objects; a zarr
    input and a model of classes are refused in a sentence before any work."""
    import roifile
    import zarr
    from _models import thresholding_model
    from skimage.draw import polygon2mask

    model = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    image = np.where(discs((64, 96), [(20, 20), (40, 70)], 10) > 0, 200, 20).astype(np.uint8)
    tifffile.imwrite(tmp_path / "two.tif", image)
    tifffile.imwrite(tmp_path / "none.tif", np.full((64, 96), 20, np.uint8))
    out = tmp_path / "out"
    assert main(["-q", "predict", str(model), str(tmp_path / "two.tif"),
                 str(tmp_path / "none.tif"), "--out", str(out), "--rois"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["none.tif", "two.tif", "two_rois.zip"]
    labels = tifffile.imread(out / "two.tif")
    rois = roifile.roiread(out / "two_rois.zip")
    assert sorted(int(r.name) for r in rois) == [1, 2]
    for roi in rois:  # filled as ImageJ fills: the pixels whose centres lie inside
        xy = roi.coordinates() - 0.5
        filled = polygon2mask(labels.shape, xy[:, ::-1])
        assert np.array_equal(filled, labels == int(roi.name))
    big = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=(64, 96),
                          chunks=(32, 32), dtype=np.uint8)
    big[:] = image
    assert main(["-q", "predict", str(model), str(tmp_path / "big.zarr"), "--out",
                 str(tmp_path / "z"), "--rois"]) == 2
    assert "--rois writes the ImageJ ROIs of image files" in capsys.readouterr().err
    semantic = save_checkpoint(tmp_path / "classes.safetensors", thresholding_model("semantic"))
    assert main(["-q", "predict", str(semantic), str(tmp_path / "two.tif"), "--out",
                 str(tmp_path / "c"), "--rois"]) == 2
    assert "ImageJ ROIs are of objects, and this model labels classes" in \
        capsys.readouterr().err
    assert not (tmp_path / "z").exists() and not (tmp_path / "c").exists()


def test_measure_writes_a_table_for_each_label_file(tmp_path, capsys):
    """`measure` measures label files (corrected by hand, or another tool's) as predict
    --measure does: with their images beside them (img_masks.tif) or from --images, a
    mask as its connected components, a stack plane by plane unless --linked; with
    --rois, their objects as ImageJ ROIs too. A label file
    without its image in --images is refused before anything is written; an image of
    another size, or an image given as labels, ends the run at that file (the tables
    before it written, as predict does)."""
    import csv

    from napari_unet.measure import measure

    def rows(path):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    both = tmp_path / "both"
    both.mkdir()
    image = np.where(discs((64, 96), [(20, 20), (40, 70)], 10) > 0, 200, 20).astype(np.uint8)
    labels = discs((64, 96), [(20, 20), (40, 70), (60, 5)], 10).astype(np.uint16)
    tifffile.imwrite(both / "a.tif", image)
    tifffile.imwrite(both / "a_masks.tif", labels)
    assert main(["measure", str(both), "--out", str(tmp_path / "m1")]) == 0
    said = capsys.readouterr().out
    assert "a_masks.tif: 3 objects, 1 on the image's edge\n" in said
    assert "wrote 1 table(s) and a row per file to objects_per_image.csv" in said
    table = rows(tmp_path / "m1" / "a_masks.csv")
    expected = measure(labels, image)
    assert [int(r["index"]) for r in table] == expected["index"].tolist() == [1, 2, 3]
    assert [r["on_border"] for r in table] == ["False", "False", "True"]
    np.testing.assert_allclose([float(r["mean_intensity"]) for r in table],
                               expected["mean_intensity"], rtol=1e-5)

    alone = tmp_path / "alone"
    alone.mkdir()
    tifffile.imwrite(alone / "a.tif", (labels > 0).astype(np.uint8) * 255)  # a mask
    tifffile.imwrite(alone / "z.tif", np.stack([labels, labels]))  # a stack
    assert main(["-q", "measure", str(alone), "--images", str(both), "--out",
                 str(tmp_path / "m2")]) == 2
    assert "no image of the same name in --images for 1 label file(s) (z.tif)" in \
        capsys.readouterr().err
    assert not (tmp_path / "m2").exists()
    assert main(["measure", str(alone), "--out", str(tmp_path / "m2")]) == 0
    said = capsys.readouterr().out
    assert "a.tif: 3 objects, 1 on the image's edge (a mask: its connected components); " \
        "no image, so no intensities" in said
    assert [int(r["area"]) for r in rows(tmp_path / "m2" / "a.csv")] == \
        expected["area"].tolist()
    apart = rows(tmp_path / "m2" / "z.csv")
    assert [(r["plane"], r["index"]) for r in apart] == [
        ("0", "1"), ("0", "2"), ("0", "3"), ("1", "1"), ("1", "2"), ("1", "3")]
    assert main(["-q", "measure", str(alone / "z.tif"), "--linked", "--out",
                 str(tmp_path / "m3")]) == 0
    linked = rows(tmp_path / "m3" / "z.csv")
    assert [int(r["area"]) for r in linked] == (2 * expected["area"]).tolist()
    assert main(["measure", str(alone), "--out", str(tmp_path / "r"), "--rois"]) == 0
    assert "a.tif: 3 objects, 1 on the image's edge (a mask: its connected components); " \
        "no image, so no intensities; ImageJ ROIs in a_rois.zip" in capsys.readouterr().out
    import roifile  # the mask's objects, and each plane's of the stack

    assert sorted(r.name for r in roifile.roiread(tmp_path / "r" / "a_rois.zip")) == \
        ["1", "2", "3"]
    assert len(roifile.roiread(tmp_path / "r" / "z_rois.zip")) == 6
    assert main(["-q", "measure", str(alone), "--out", str(tmp_path / "r2"), "--rois",
                 "--mode", "semantic"]) == 2
    assert "ImageJ ROIs are of objects" in capsys.readouterr().err

    tifffile.imwrite(both / "b.tif", image[:32])
    tifffile.imwrite(both / "b_masks.tif", labels)
    assert main(["measure", str(both), "--out", str(tmp_path / "m4")]) == 2
    assert "b.tif: an image of shape (32, 96) for labels of shape (64, 96)" in \
        capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "m4").iterdir()) == ["a_masks.csv"]
    noise = np.random.default_rng(0).integers(0, 255, (64, 96), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "noise.tif", noise)
    assert main(["measure", str(tmp_path / "noise.tif"), "--out", str(tmp_path / "m5")]) == 2
    assert "noise.tif looks like an image, not labels" in capsys.readouterr().err


def test_semantic_training_calibrates_the_label_offset_unless_told_not_to(tmp_path):
    flags = ("--mode", "semantic", "--epochs", "1", "--steps-per-epoch", "2",
             "--base-channels", "4", "--depth", "2", "--patch-size", "64")
    _, model = sample_and_train(tmp_path, 3, "on.safetensors", *flags)
    assert "label_offset" in load_checkpoint(model).training  # calibrated, found or not
    _, model = sample_and_train(tmp_path, 3, "off.safetensors", *flags, "--no-label-offset")
    ck = load_checkpoint(model)
    assert "label_offset" not in ck.training and ck.label_offset == (0.0, 0.0)
    assert ck.training["config"]["label_offset"] is False


def test_ctrl_c_keeps_the_best_model_with_its_label_offset(tmp_path):
    import os
    import signal
    import time

    data = tmp_path / "demo"
    assert main(["sample", str(data), "--count", "3"]) == 0
    as_masks(data / "labels")
    model = tmp_path / "m.safetensors"
    child = subprocess.Popen(
        [sys.executable, "-m", "napari_unet.cli", "-q", "train", str(data / "images"),
         str(data / "labels"), "--out", str(model), "--mode", "semantic", "--epochs", "10000",
         "--steps-per-epoch", "2", "--base-channels", "4", "--depth", "2",
         "--patch-size", "64"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not model.exists():  # the first epoch's model is saved
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGINT)
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130
    assert f"the best model so far is saved in {model}" in err and "Traceback" not in err
    assert "label_offset" in load_checkpoint(model).training  # calibrated, found or not


def test_output_to_a_reader_that_stopped_ends_without_a_traceback():
    """`napari-unet info nuclei | head -1`: the pipe closes before the JSON is written."""
    proc = subprocess.Popen([sys.executable, "-m", "napari_unet.cli", "info", "nuclei"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader stops before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait() == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_gpu_that_is_not_there_is_one_warning_line_not_a_source_line(tmp_path, capsys,
                                                                        monkeypatch):
    import torch
    from _models import thresholding_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = save_checkpoint(tmp_path / "threshold.safetensors", thresholding_model())
    for i in range(3):
        tifffile.imwrite(tmp_path / f"{i}.tif", discs((64, 64), [(32, 32)], 10) * 200)
    assert main(["-q", "predict", str(model), *(str(tmp_path / f"{i}.tif") for i in range(3)),
                 "--out", str(tmp_path / "out"), "--device", "cuda"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: CUDA was asked for, but no CUDA GPU is available to PyTorch: "
                   "using the CPU instead."]  # once for three images, without the code line
    assert len(list((tmp_path / "out").iterdir())) == 3
