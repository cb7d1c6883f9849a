from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet.config import ModelConfig

torch.set_num_threads(2)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tiny_config(**kw) -> ModelConfig:
    """A network small enough for fast tests."""
    base = dict(depth=2, base_channels=4, norm="none", dropout=0.0, padding="valid")
    base.update(kw)
    return ModelConfig(**base)


def discs(shape, centres, radius):
    """Instance labels of discs; later discs overwrite earlier ones where they overlap."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return lab


def as_masks(folder) -> None:
    """Rewrite the instance label files of ``folder`` (cells numbered 1..N) as class masks
    (0 background, 1 cell), the labels of a semantic model."""
    import tifffile

    for path in Path(folder).glob("*.tif"):
        tifffile.imwrite(path, (tifffile.imread(path) > 0).astype(np.uint8))


def sample_and_train(tmp_path, count: int, model_name: str, *flags: str):
    """``napari-unet sample`` of ``count`` images, then ``napari-unet train`` on them with
    ``flags``; returns the sample folder and the model file."""
    from napari_unet.cli import main

    data = tmp_path / "demo"
    assert main(["sample", str(data), "--count", str(count)]) == 0
    if "semantic" in flags:
        as_masks(data / "labels")
    model = tmp_path / model_name
    assert main(["-q", "train", str(data / "images"), str(data / "labels"), "--out", str(model),
                 *flags]) == 0
    return data, model
