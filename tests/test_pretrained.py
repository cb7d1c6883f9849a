"""The shipped nuclei model: present, small, documented, usable by name everywhere."""

from pathlib import Path

import numpy as np
import pytest
from conftest import sample_and_train

from napari_unet.checkpoint import load_checkpoint
from napari_unet.errors import ModelFileError
from napari_unet.io import read_image
from napari_unet.pretrained import pretrained_names, pretrained_path, shipped_choices

REPO = Path(__file__).resolve().parents[1]
DSB_VAL = REPO.parent / "shared" / "data" / "dsb2018_fluo" / "val"


def test_the_nuclei_model_is_shipped_small_and_documented():
    assert "nuclei" in pretrained_names() and "nuclei (shipped)" in shipped_choices()
    path = pretrained_path("nuclei")
    assert path.stat().st_size < 20 * 1024**2
    ck = load_checkpoint("nuclei")
    assert ck.mode == "instances" and ck.config.in_channels == 1
    meta = ck.training
    assert meta["licence"] == "CC0" and "BBBC038" in meta["data"]["name"]
    assert (REPO / meta["recipe"]["script"]).is_file()
    assert meta["recipe"]["hardware"]["cpu_count"] >= 1 and "note" in meta["recipe"]
    assert 0 < meta["scores"]["components"]["ap50"] <= 1


def test_an_unknown_model_name_is_one_clear_sentence():
    with pytest.raises(ModelFileError, match="no shipped model.*nuclei"):
        load_checkpoint("nucleii")


@pytest.mark.skipif(not DSB_VAL.is_dir(), reason="needs ../shared/data (DSB 2018)")
def test_the_shipped_model_finds_real_nuclei():
    from napari_unet.metrics import average_precision
    from napari_unet.predict import predict
    from napari_unet.progress import run

    names = sorted(p.stem for p in (DSB_VAL / "images").glob("*.png"))[:3]
    aps = []
    for name in names:
        image = read_image(DSB_VAL / "images" / f"{name}.png")
        truth = read_image(DSB_VAL / "labels" / f"{name}.tif")
        pred = run(predict(load_checkpoint("nuclei"), image)).labels
        aps.append(average_precision(truth, pred)[0.5])
    assert np.mean(aps) > 0.6, aps


def test_cli_fine_tunes_from_the_shipped_model(tmp_path):
    _, out = sample_and_train(tmp_path, 2, "tuned.safetensors", "--from", "nuclei",
                              "--epochs", "1", "--steps-per-epoch", "2", "--patch-size", "64")
    tuned, shipped = load_checkpoint(out), load_checkpoint("nuclei")
    assert tuned.config == shipped.config and tuned.target == shipped.target
    assert tuned.training["fine_tuned_from"] == "nuclei"
