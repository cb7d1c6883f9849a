"""bioimage.io export and import, checked with the bioimage.io libraries themselves."""

import zipfile

import bioimageio.core  # noqa: F401  (the testing extra has it: a broken install fails here)
import numpy as np
import pytest
import torch
from conftest import tiny_config

from napari_unet.checkpoint import load_checkpoint
from napari_unet.cli import main
from napari_unet.config import TrainConfig
from napari_unet.errors import ModelFileError
from napari_unet.predict import predict
from napari_unet.progress import run
from napari_unet.synthetic import touching_cells
from napari_unet.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A freshly trained tiny model ('same' padding, batch norm)."""
    path = tmp_path_factory.mktemp("zoo") / "tiny.safetensors"
    pairs = [touching_cells((96, 96), n_cells=10, radius=8, seed=s) for s in range(2)]
    run(train([p[0] for p in pairs], [p[1] for p in pairs],
              TrainConfig(epochs=1, steps_per_epoch=3, batch_size=2, patch_size=48,
                          val_fraction=0.5),
              model_config=tiny_config(padding="same", norm="batch"), out=path))
    return path


def test_export_validates_passes_the_model_test_and_reimports_identically(trained, tmp_path):
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    package = tmp_path / "tiny.zip"  # named without .zip, the package is named with it
    assert main(["export", str(trained), "--out", str(tmp_path / "tiny"), "--author",
                 "A. Biologist"]) == 0
    assert not (tmp_path / "tiny").exists()
    descr = load_description(package)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary
    assert {"pytorch_state_dict", "torchscript", "onnx"} <= set(descr.weights.model_fields_set)
    summary = test_model(package)
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors])
                                        for d in summary.details if d.errors]
    with zipfile.ZipFile(package) as z:
        names = set(z.namelist())
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy"} <= names

    image, _ = touching_cells((150, 130), n_cells=12, radius=10, seed=5)
    before = run(predict(trained, image))
    again = run(predict(package, image))  # the package opens wherever a model file does
    np.testing.assert_array_equal(before.probabilities, again.probabilities)
    np.testing.assert_array_equal(before.labels, again.labels)
    assert load_checkpoint(package).threshold == load_checkpoint(trained).threshold


def test_valid_padding_model_exports_with_the_output_size_reference(tmp_path):
    from bioimageio.core import test_model

    from napari_unet.checkpoint import Checkpoint
    from napari_unet.model import UNet
    from napari_unet.modelzoo import export_package

    torch.manual_seed(0)
    net = UNet(tiny_config(padding="valid", in_channels=3, n_classes=3))
    ckpt = Checkpoint(net.config, net.state_dict(), task={"mode": "semantic"})
    package = export_package(ckpt, tmp_path / "valid.zip", authors=["X"], torchscript=False)
    assert test_model(package).status == "passed"


def test_a_package_is_opened_without_unpickling_its_weights(trained, tmp_path):
    """The import reads the attached safetensors model file: a crafted pickle in the
    package's PyTorch weights is never opened, and a package without that file is refused."""
    import os

    import yaml

    from napari_unet.modelzoo import MODEL_FILE, export_package

    package = export_package(trained, tmp_path / "ok.zip", authors=["X"], torchscript=False)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    def rewrite(dest, *, drop=()):
        with zipfile.ZipFile(package) as src, zipfile.ZipFile(dest, "w") as dst:
            for item in src.namelist():
                if item in drop:
                    continue
                data = src.read(item)
                if item == "rdf.yaml" and drop:  # as an older export: no attachment
                    rdf = yaml.safe_load(data)
                    rdf.pop("attachments", None)
                    data = yaml.safe_dump(rdf)
                if item == "weights.pt":
                    buf = tmp_path / "w.pt"
                    torch.save({"x": Evil()}, buf)
                    data = buf.read_bytes()
                dst.writestr(item, data)
        return dest

    bad = rewrite(tmp_path / "bad.zip")
    image, _ = touching_cells((96, 96), n_cells=8, radius=10, seed=1)
    np.testing.assert_array_equal(run(predict(bad, image)).probabilities,
                                  run(predict(trained, image)).probabilities)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ModelFileError, match="pickles that napari-unet does not open"):
        load_checkpoint(rewrite(tmp_path / "bare.zip", drop={MODEL_FILE}))
    assert not (tmp_path / "pwned").exists()


def test_a_zip_bomb_is_refused_before_it_is_unpacked(trained, tmp_path, monkeypatch):
    """A package whose model file unpacks to more than any napari-unet model (here: more
    than a lowered limit) is refused from its declared size, never read into memory."""
    import napari_unet.modelzoo as modelzoo

    package = modelzoo.export_package(trained, tmp_path / "ok.zip", authors=["X"],
                                      torchscript=False)
    monkeypatch.setattr(modelzoo, "MAX_MODEL_BYTES", 10_000)  # the tiny model is larger
    read = zipfile.ZipFile.read
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda z, name: pytest.fail("unpacked")
                        if name == modelzoo.MODEL_FILE else read(z, name))
    with pytest.raises(ModelFileError, match=r"ok.zip: its model.safetensors would unpack to "
                       r"0.0 GB, more than any napari-unet package holds; it was not opened."):
        load_checkpoint(package)


@pytest.mark.parametrize("target", ["distance", "offsets"])
def test_a_model_with_regression_channels_is_refused_with_a_sentence(tmp_path, capsys,
                                                                     target):
    from napari_unet.checkpoint import Checkpoint, save_checkpoint
    from napari_unet.model import UNet

    config = tiny_config(padding="same", norm="batch").replace(**{target: True})
    state = {k: v.clone() for k, v in UNet(config).state_dict().items()}
    path = save_checkpoint(tmp_path / "d.safetensors", Checkpoint(
        config=config, state_dict=state,
        task={"mode": "instances", "target": target, "n_classes": 2, "threshold": 0.5},
        normalization={"kind": "percentile", "low": 1.0, "high": 99.8}, training={}))
    assert main(["export", str(path), "--out", str(tmp_path / "d.zip")]) == 2
    err = capsys.readouterr().err
    assert target in err and "Traceback" not in err
    assert not (tmp_path / "d.zip").exists()


def test_the_readme_states_a_label_offset_the_weights_alone_do_not_apply(trained, tmp_path):
    from dataclasses import replace

    from napari_unet.modelzoo import _readme

    ckpt = load_checkpoint(trained)
    plain = _readme(ckpt, "plain", tmp_path / "plain.md").read_text()
    moved = replace(ckpt, task={**ckpt.task, "label_offset": [-0.5, 0.25]})
    text = _readme(moved, "moved", tmp_path / "moved.md").read_text()
    assert "(-0.5, 0.25) px" in text and "annotations this model" not in plain
