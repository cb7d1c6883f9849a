"""The bad-input table (docs/reliability.md), through the Python API and the CLI.

Every refused case must raise ``NapariUNetError`` with one sentence naming the image (or
file) and the problem; on the CLI it must print that one line, exit with status 2 and write
nothing. The accepted cases (other data types, tiny images, views, Dask) must just work.
"""

import dataclasses

import numpy as np
import pytest
import tifffile
import torch
from conftest import discs, tiny_config
from scipy import ndimage as ndi

from napari_unet.checkpoint import Checkpoint, save_checkpoint
from napari_unet.cli import main
from napari_unet.config import ModelConfig, TrainConfig
from napari_unet.errors import NapariUNetError
from napari_unet.model import UNet
from napari_unet.predict import predict
from napari_unet.progress import run
from napari_unet.train import train

H = W = 48
GOOD_LABELS = discs((H, W), [(14, 14), (14, 30), (34, 24)], 8).astype(np.uint16)


def good_image(dtype=np.uint8):
    rng = np.random.default_rng(0)
    img = (GOOD_LABELS > 0) * 150 + rng.integers(0, 40, (H, W))
    return img.astype(dtype)


def with_nan():
    img = good_image(np.float32)
    img[3, 3] = np.nan
    return img


def with_inf():
    img = good_image(np.float64)
    img[5, 7] = np.inf
    return img


# (case, image, labels, words the message must contain)
TRAIN_REFUSED = [
    ("shape mismatch", good_image(), GOOD_LABELS[:40], "differ"),
    ("labels without objects", good_image(), np.zeros((H, W), np.uint16), "no object"),
    ("a single class", good_image(), np.ones((H, W), np.uint16), "background"),
    ("NaN in the image", with_nan(), GOOD_LABELS, "NaN"),
    ("inf in the image", with_inf(), GOOD_LABELS, "infinite"),
    ("constant image", np.full((H, W), 7, np.uint8), GOOD_LABELS, "constant"),
    ("negative labels", good_image(), GOOD_LABELS.astype(np.int32) - 1, "negative"),
    ("non-integer labels", good_image(), GOOD_LABELS * 0.5, "whole numbers"),
    ("3D stack given as one image", np.stack([good_image()] * 3), GOOD_LABELS, "stack of 3"),
    ("3D labels for a 2D image", good_image(), np.stack([GOOD_LABELS] * 3), "shape"),
    ("image and labels the other way round", GOOD_LABELS.astype(np.uint8) * 50, good_image(),
     "look like an image, not labels"),
]

TRAIN_ACCEPTED = [
    ("uint16", good_image(np.uint16) * 200, GOOD_LABELS),
    ("int32", good_image(np.int32) - 100, GOOD_LABELS.astype(np.int32)),
    ("float64", good_image(np.float64) / 255, GOOD_LABELS),
    ("bool", GOOD_LABELS > 0, GOOD_LABELS),
    ("RGB", np.stack([good_image()] * 3, axis=-1), GOOD_LABELS),
    ("RGBA", np.dstack([good_image()] * 3 + [np.full((H, W), 255, np.uint8)]), GOOD_LABELS),
    ("5 channels", np.stack([good_image()] * 5, axis=-1), GOOD_LABELS),
    ("smaller than a patch", good_image()[:20, :24], GOOD_LABELS[:20, :24]),
    ("non-contiguous view", np.asfortranarray(good_image())[:, ::-1],
     GOOD_LABELS[:, ::-1]),
    ("0/255 mask", good_image(), (GOOD_LABELS > 0).astype(np.uint8) * 255),
    ("ids numbered sparsely", good_image(), GOOD_LABELS.astype(np.uint64) * 2**60),
    ("float labels", good_image(), GOOD_LABELS.astype(np.float32)),
]


def quick():
    return TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32,
                       val_fraction=0)


@pytest.mark.parametrize("case,image,labels,words", TRAIN_REFUSED, ids=[c[0] for c in
                                                                        TRAIN_REFUSED])
def test_training_refuses_with_one_sentence_naming_the_image(case, image, labels, words):
    with pytest.raises(NapariUNetError) as err:
        run(train([image], [labels], quick(), model_config=tiny_config(),
                  names=["nuclei.tif"]))
    message = str(err.value)
    assert "nuclei.tif" in message and words in message, message
    assert "\n" not in message


@pytest.mark.parametrize("case,image,labels", TRAIN_ACCEPTED, ids=[c[0] for c in
                                                                   TRAIN_ACCEPTED])
def test_training_accepts(case, image, labels):
    result = run(train([image], [labels], quick(),
                       model_config=tiny_config(padding="same")))
    assert result.steps == 2


def grid_of_discs(rows: int, cols: int, per_class: int = 1) -> np.ndarray:
    """Discs on a grid, numbered 1, 2, ... (``per_class`` discs share a number)."""
    centres = [(12 + 24 * r, 12 + 24 * c) for r in range(rows) for c in range(cols)]
    labels = np.zeros((24 * rows, 24 * cols), np.uint16)
    for i, centre in enumerate(centres):
        labels[discs(labels.shape, [centre], 8) > 0] = 1 + i // per_class
    return labels


@pytest.mark.parametrize("cells,warned", [(12, True), (8, False)])
def test_semantic_training_warns_of_objects_numbered_1_to_n(cells, warned):
    """Cells numbered 1..N trained as classes make a model of N + 1 classes: more than eight
    classes, each one object, get a warning that points to the instances mode (organs, one
    object each, are classes too, so it is not refused)."""
    labels = grid_of_discs(2, cells // 2)
    image = ((labels > 0) * 150 + 30).astype(np.uint8)
    semantic = TrainConfig(**{**quick().to_dict(), "mode": "semantic"})
    events = []
    result = run(train([image], [labels], semantic, model_config=tiny_config(
        padding="same", n_classes=cells + 1), names=["nuclei.tif"]), events.append)
    assert result.steps == 2
    said = [e.message for e in events if e.kind == "warning"]
    if not warned:
        assert said == []
        return
    assert len(said) == 1 and "nuclei.tif" in said[0] and "12 classes" in said[0], said
    assert "instances mode" in said[0] and "\n" not in said[0]


def test_semantic_training_takes_many_classes_of_several_regions():
    labels = grid_of_discs(2, 10, per_class=2)  # ten classes of two discs each
    image = ((labels > 0) * 150 + 30).astype(np.uint8)
    semantic = TrainConfig(**{**quick().to_dict(), "mode": "semantic"})
    result = run(train([image], [labels], semantic,
                       model_config=tiny_config(padding="same", n_classes=11)))
    assert result.steps == 2


def test_training_refuses_a_model_of_another_channel_count(tmp_path):
    path = model_file(tmp_path, channels=3)
    with pytest.raises(NapariUNetError, match="3 channel"):
        run(train([good_image()], [GOOD_LABELS], quick(), init_from=path))


def test_training_refuses_images_of_channel_counts_that_do_not_mix():
    two = np.stack([good_image(), good_image()[::-1]], axis=-1)
    with pytest.raises(NapariUNetError, match=r"different channel counts \[1, 2\]\.$"):
        run(train([good_image(), two], [GOOD_LABELS] * 2, quick(), model_config=tiny_config()))


# ---- prediction ---------------------------------------------------------------------------
def model_file(tmp_path, channels=1):
    torch.manual_seed(0)
    net = UNet(ModelConfig(in_channels=channels, depth=2, base_channels=4, dropout=0.0))
    ck = Checkpoint(net.config, net.state_dict(), task={"mode": "instances"})
    return save_checkpoint(tmp_path / f"m{channels}.safetensors", ck)


PREDICT_REFUSED = [
    ("NaN", 1, with_nan(), "NaN"),
    ("inf", 1, with_inf(), "infinite"),
    ("colour RGB for a grey model", 1,
     np.stack([good_image(), good_image()[::-1], good_image()], axis=-1), "RGB"),
    ("grey for an RGB model", 3, good_image(), "channel"),
    ("2 channels for an RGB model", 3, np.stack([good_image()] * 2, axis=-1), "channel"),
    ("a stack of colour images for a grey model", 1,
     np.stack([np.stack([good_image(), good_image()[::-1], good_image()], axis=-1)] * 2),
     "looks like an RGB image (2, 48, 48, 3) in colour"),
    ("a 5D array for an RGB model", 3, np.zeros((2, 3, H, W, 2), np.uint8), "shape"),
    ("text", 1, np.array([["a", "b"], ["c", "d"]]), "data type"),
]


@pytest.mark.parametrize("case,channels,image,words", PREDICT_REFUSED,
                         ids=[c[0] for c in PREDICT_REFUSED])
def test_prediction_refuses_with_one_sentence_naming_the_image(tmp_path, case, channels,
                                                              image, words):
    with pytest.raises(NapariUNetError) as err:
        run(predict(model_file(tmp_path, channels), image, name="nuclei.tif"))
    message = str(err.value)
    assert "nuclei.tif" in message and words in message, message


PREDICT_ACCEPTED = [
    ("uint16", 1, good_image(np.uint16), (H, W)),
    ("int32", 1, good_image(np.int32), (H, W)),
    ("float64", 1, good_image(np.float64), (H, W)),
    ("bool", 1, GOOD_LABELS > 0, (H, W)),
    ("constant", 1, np.zeros((H, W), np.uint8), (H, W)),
    ("smaller than one tile", 1, good_image()[:7, :9], (7, 9)),
    ("non-contiguous view", 1, good_image()[::-1, ::2], (H, W // 2)),
    ("stack", 1, np.stack([good_image()] * 2), (2, H, W)),
    ("time-lapse of z-stacks", 1, np.stack([good_image()] * 6).reshape(2, 3, H, W),
     (2, 3, H, W)),
    ("grey with a channel axis of one", 1, good_image()[..., None], (H, W)),
    ("RGBA for an RGB model", 3, np.dstack([good_image()] * 4), (H, W)),
    ("RGB stack", 3, np.stack([np.dstack([good_image()] * 3)] * 2), (2, H, W)),
]


@pytest.mark.parametrize("case,channels,image,shape", PREDICT_ACCEPTED,
                         ids=[c[0] for c in PREDICT_ACCEPTED])
def test_prediction_accepts(tmp_path, case, channels, image, shape):
    labels = run(predict(model_file(tmp_path, channels), image)).labels
    assert labels.shape == shape


def test_prediction_reads_dask_arrays(tmp_path):
    import dask.array as da

    image = da.from_array(good_image(), chunks=(16, 16))
    labels = run(predict(model_file(tmp_path), image)).labels
    assert labels.shape == (H, W)


# ---- the same through the CLI -------------------------------------------------------------
def one_line_exit_2(capsys, argv, written):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-unet: error:") and "\n" not in err, err
    assert "Traceback" not in err
    assert not written.exists()
    return err


@pytest.mark.parametrize("case,image,labels,words", [
    c for c in TRAIN_REFUSED if c[0] not in ("non-integer labels",)],  # TIFF keeps floats too
    ids=[c[0] for c in TRAIN_REFUSED if c[0] != "non-integer labels"])
def test_cli_train_refuses_with_one_line(tmp_path, capsys, case, image, labels, words):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    stack = image.ndim == 3 and image.shape[0] == 3  # planes, not colour samples (below)
    tifffile.imwrite(tmp_path / "images" / "nuclei.tif", image,
                     photometric="minisblack" if stack else None)
    tifffile.imwrite(tmp_path / "labels" / "nuclei.tif", labels)
    out = tmp_path / "model.safetensors"
    err = one_line_exit_2(capsys, ["-q", "train", str(tmp_path / "images"),
                                   str(tmp_path / "labels"), "--out", str(out),
                                   "--epochs", "1", "--steps-per-epoch", "1"], out)
    assert "nuclei.tif" in err and words in err, err


def test_cli_train_refuses_a_label_file_saved_in_colour(tmp_path, capsys):
    import imageio.v3 as iio

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a", "b"):
        iio.imwrite(tmp_path / "images" / f"{name}.png", np.full((64, 64), 80, np.uint8))
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 10:30] = 1
    iio.imwrite(tmp_path / "labels" / "a.png", labels)
    iio.imwrite(tmp_path / "labels" / "b.png", np.stack([labels * 255] * 3, -1))  # RGB
    out = tmp_path / "model.safetensors"
    err = one_line_exit_2(capsys, ["-q", "train", str(tmp_path / "images"),
                                   str(tmp_path / "labels"), "--out", str(out),
                                   "--epochs", "1", "--steps-per-epoch", "1"], out)
    assert "b.png" in err and "colour image" in err, err


@pytest.mark.parametrize("case,channels,image,words",
                         [c for c in PREDICT_REFUSED if c[0] != "text"],
                         ids=[c[0] for c in PREDICT_REFUSED if c[0] != "text"])
def test_cli_predict_refuses_with_one_line(tmp_path, capsys, case, channels, image, words):
    if "colour" in case and channels == 1:  # the file names its colour samples
        words = "has 3 channels (colour samples), and the model reads one: choose"
    tifffile.imwrite(tmp_path / "nuclei.tif", image)
    out = tmp_path / "out"
    err = one_line_exit_2(capsys, ["-q", "predict", str(model_file(tmp_path, channels)),
                                   str(tmp_path / "nuclei.tif"), "--out", str(out)], out)
    assert "nuclei.tif" in err and words in err, err


@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_pytorch_that_cannot_be_loaded_is_said_in_one_line(tmp_path, capsys, monkeypatch,
                                                             command):
    """A failed or broken PyTorch install (a DLL that will not load on Windows) ends with a
    line saying so and what to do, not with an import's traceback."""
    import sys

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "nuclei.tif",
                         good_image() if folder == "images" else GOOD_LABELS)
    model = model_file(tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # 'import torch' now fails
    out = tmp_path / ("model.safetensors" if command == "train" else "out")
    argv = (["train", str(tmp_path / "images"), str(tmp_path / "labels"), "--epochs", "1",
             "--steps-per-epoch", "1"] if command == "train"
            else ["predict", str(model), str(tmp_path / "images")])
    err = one_line_exit_2(capsys, ["-q", *argv, "--out", str(out)], out)
    assert "PyTorch could not be loaded" in err and "pip install torch" in err, err


@pytest.mark.parametrize("content,words", [
    (None, "not found"),
    (b"", "nuclei.safetensors"),
    (b"PK\x03\x04 a zip, not a model", "nuclei.safetensors"),
])
def test_cli_refuses_missing_and_foreign_model_files(tmp_path, capsys, content, words):
    model = tmp_path / "nuclei.safetensors"
    if content is not None:
        model.write_bytes(content)
    tifffile.imwrite(tmp_path / "a.tif", good_image())
    out = tmp_path / "out"
    err = one_line_exit_2(capsys, ["-q", "predict", str(model), str(tmp_path / "a.tif"),
                                   "--out", str(out)], out)
    assert words in err or "does not exist" in err, err


def _isolated(labels, keep):
    """``labels`` with only the objects ``keep`` labelled."""
    return np.where(np.isin(labels, keep), labels, 0).astype(np.uint16)


@pytest.mark.parametrize("polarity", ["bright cells", "dark cells"])
def test_cells_left_unlabelled_are_warned_of_and_complete_labels_are_not(polarity):
    from napari_unet.synthetic import touching_cells
    from napari_unet.targets import unlabelled_regions
    from napari_unet.train import prepare

    image, labels = touching_cells((192, 192), n_cells=24, radius=9, seed=4)
    image = image if polarity == "bright cells" else 255 - image
    config = quick()
    assert unlabelled_regions(image, labels).max() == 0
    assert prepare([image], [labels], config).warnings == []
    half = _isolated(labels, np.arange(1, 13))
    assert unlabelled_regions(image, half).max() >= 3
    warned = prepare([image, image], [labels, half], config, names=["a", "b"]).warnings
    assert len(warned) == 1 and "b (" in warned[0] and "a (" not in warned[0]
    assert "learnt as background" in warned[0] and "Labelled in" in warned[0]
    # marked as labelled in part: nothing to say about the cells outside the part
    region = np.zeros(labels.shape, bool)
    region[ndi.binary_dilation(half > 0, iterations=3)] = True
    assert prepare([image], [half], config, regions=[region]).warnings == []
    # but cells left unlabelled inside the part said to be complete are warned of
    region[:] = True
    warned = prepare([image], [half], config, regions=[region], names=["c"]).warnings
    assert len(warned) == 1 and "c (" in warned[0]
    # semantic masks are not instance labels: the check is for the instances mode
    semantic = dataclasses.replace(quick(), mode="semantic")
    assert prepare([image], [(half > 0).astype(np.uint8)], semantic).warnings == []


def test_touching_cells_painted_with_one_label_are_warned_of():
    from napari_unet.synthetic import touching_cells
    from napari_unet.targets import joined_cells
    from napari_unet.train import prepare

    image, labels = touching_cells((192, 192), n_cells=24, radius=9, seed=4)
    mask = (labels > 0).astype(np.uint8)  # napari's brush left at label 1
    assert joined_cells(labels) == 0  # every cell its own label
    assert joined_cells(mask) >= 2
    assert prepare([image], [labels], quick()).warnings == []
    warned = prepare([image], [mask * 255], quick(), names=["nuclei.tif"]).warnings
    assert len(warned) == 1 and "painted with one label" in warned[0]
    assert "nuclei.tif (" in warned[0] and "press M" in warned[0]
    # the same cells apart from each other: a mask of them is fine
    apart = np.zeros((192, 192), np.uint8)
    apart[discs((192, 192), [(30 + 45 * i, 30 + 45 * j) for i in range(4) for j in range(4)],
                12) > 0] = 1
    assert joined_cells(apart) == 0
    assert not any("painted with one label" in w
                   for w in prepare([image], [apart], quick()).warnings)


def test_training_refuses_a_folder_as_its_model_file_before_training(tmp_path):
    with pytest.raises(NapariUNetError, match=f"{tmp_path} is a folder; the model needs a "
                                              "file name, e.g. "):
        run(train([good_image()], [GOOD_LABELS], quick(), model_config=tiny_config(),
                  out=tmp_path))
    assert list(tmp_path.iterdir()) == []


API_MISUSE = [  # (case, call, words): what a notebook's first try gave (row-by-row shapes,
    # "tuple index out of range", numpy's "inhomogeneous shape")
    ("one image to train", lambda: train(good_image(), GOOD_LABELS, quick()),
     "images is one image of shape (48, 48); training takes a list"),
    ("a list of images with one label image", lambda: train([good_image()], GOOD_LABELS,
                                                            quick()), "labels is one image"),
    ("file names to train on", lambda: train(["a.tif"], ["a_masks.tif"], quick()),
     "image 1 is a file name (a.tif), not an image: read it first"),
    ("no labels", lambda: train([good_image()], [None], quick()), "labels of image 1 is None"),
    ("a file name to predict", lambda: predict("nuclei", "a.tif"), "image is a file name"),
    ("None to predict", lambda: predict("nuclei", None), "image is None"),
    ("images of two sizes to predict", lambda: predict("nuclei", [good_image(),
                                                                   good_image()[:40]]),
     "a list of arrays of different shapes, not one image; predict one image"),
]


@pytest.mark.parametrize("case,call,words", API_MISUSE, ids=[c[0] for c in API_MISUSE])
def test_the_python_api_says_what_it_takes(case, call, words):
    with pytest.raises(NapariUNetError) as err:
        run(call())
    assert words in str(err.value), str(err.value)


def test_synthetic_cells_that_cannot_fit_are_refused_not_searched_for_ever():
    from napari_unet.errors import InputError
    from napari_unet.synthetic import touching_cells

    image, labels = touching_cells((96, 96), n_cells=10, radius=8, seed=0)
    assert len(np.unique(labels)) - 1 == 10  # as many as asked where they fit
    with pytest.raises(InputError, match="40 cells of radius 10 px do not fit into an image "
                                         "of 96 x 96 px"):
        touching_cells((96, 96), n_cells=40, radius=10, seed=0)  # looped for ever
