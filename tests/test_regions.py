"""Images labelled in part: only the annotated region carries loss, patches and validation."""

import numpy as np
import pytest
from conftest import discs, tiny_config

from napari_unet.checkpoint import load_checkpoint
from napari_unet.config import TrainConfig
from napari_unet.data import REGION_MARGIN, PatchSampler
from napari_unet.errors import InputError
from napari_unet.progress import run
from napari_unet.synthetic import touching_cells
from napari_unet.targets import instance_targets
from napari_unet.train import crop_to_region, prepare, train


def test_a_region_is_cropped_with_a_margin_of_context():
    image = np.arange(400 * 300, dtype=np.float32).reshape(400, 300)
    labels = np.zeros((400, 300), np.int32)
    region = np.zeros((400, 300), bool)
    region[200:250, 100:120] = True
    img, lab, reg = crop_to_region(image, labels, region, "x")
    m = REGION_MARGIN
    assert img.shape == (50 + 2 * m, 20 + 2 * m) == lab.shape == reg.shape
    assert img[0, 0] == image[200 - m, 100 - m] and reg.sum() == 50 * 20
    with pytest.raises(InputError, match="annotated region of x has shape"):
        crop_to_region(image, labels, region[:10], "x")
    with pytest.raises(InputError, match="annotated region of x is empty"):
        crop_to_region(image, labels, np.zeros_like(region), "x")


def test_only_the_region_carries_weight_and_its_classes_are_balanced_there():
    # cells everywhere in the image, but labelled in the left half only
    lab = discs((64, 64), [(16, 16), (48, 16)], 6)
    region = np.zeros((64, 64), bool)
    region[:, :32] = True
    cls, w = instance_targets(lab, w0=0.0, region=region)
    assert np.all(w[:, 32:] == 0) and np.all(w[:, :32] > 0)
    fg, bg = (cls[region] == 1).sum(), (cls[region] == 0).sum()
    assert w[16, 16] == pytest.approx(bg / fg)  # counted in the region, not the image
    assert w[0, 0] == pytest.approx(1.0)


def test_patches_are_centred_in_the_region():
    image = np.random.default_rng(0).random((300, 300, 1)).astype(np.float32)
    labels = np.zeros((300, 300), np.int32)
    region = np.zeros((300, 300), bool)
    region[140:160, 140:160] = True  # all background: no object to centre patches on,
    labels[100:110, 100:110] = 1  # but one outside it, in the context kept around it
    prep = prepare([image], [labels], TrainConfig(mode="semantic"), n_classes=2,
                   regions=[region])
    assert prep.images[0].shape[:2] == (20 + 2 * REGION_MARGIN,) * 2
    sampler = PatchSampler(prep.images, prep.targets, prep.weights, in_size=32, out_size=32,
                           foreground_bias=0.5, augment=None,
                           rng=np.random.default_rng(1))
    weights = [sampler.sample()[2] for _ in range(200)]
    assert all(w.sum() > 0 for w in weights)


def test_training_on_regions_records_them_and_scores_only_inside(tmp_path):
    image, labels = touching_cells((128, 128), n_cells=16, radius=8, seed=3)
    partial = labels.copy()
    partial[:, 64:] = 0  # the right half is not labelled
    region = np.zeros(labels.shape, bool)
    region[:, :64] = True
    images, labs, regions = [image, image[::-1]], [partial, partial[::-1]], [region,
                                                                            region[::-1]]
    out = tmp_path / "m.safetensors"
    result = run(train(images, labs, TrainConfig(epochs=1, steps_per_epoch=3, batch_size=2,
                                                 patch_size=48, val_fraction=0.5),
                       model_config=tiny_config(), out=out, regions=regions))
    assert load_checkpoint(out).training["annotated_regions"] == 2
    assert result.history and "ap50" in result.history[0]
    with pytest.raises(InputError, match="2 images but 1 annotated regions"):
        run(train(images, labs, TrainConfig(epochs=1), regions=[region]))
