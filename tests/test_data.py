import numpy as np
import pytest

from napari_unet.data import (
    as_channels_last,
    grey_of_colour,
    image_for_model,
    normalize,
    training_planes,
)
from napari_unet.errors import InputError


def test_training_planes_for_every_layer_layout():
    lab = np.zeros((3, 20, 30), np.int32)
    lab[0, 2:5, 2:5] = 1
    lab[2, 5:9, 5:9] = 2  # plane 1 has no label: skipped
    images, labels, regions, kept = training_planes(np.ones((3, 20, 30)), lab)
    assert len(images) == len(labels) == 2 and kept == [0, 2] and regions == [None, None]
    region = np.zeros(lab.shape, bool)
    region[1:, :10, :10] = True  # plane 1: no label, but a region that says "no cell here"
    _, _, regions, kept = training_planes(np.ones((3, 20, 30)), lab, region=region)
    assert kept == [0, 1, 2] and regions[0] is None and regions[1].sum() == 100
    with pytest.raises(InputError, match="annotated region has shape"):
        training_planes(np.ones((3, 20, 30)), lab, region=region[0])
    rgb, _, _, _ = training_planes(np.ones((20, 30, 3)), lab[0], rgb=True)
    assert rgb[0].shape == (20, 30, 3)
    chw, _, _, _ = training_planes(np.ones((4, 20, 30)), lab[0])
    assert chw[0].shape == (20, 30, 4)  # channels first becomes channels last
    stack, _, _, _ = training_planes(np.ones((3, 2, 20, 30)), lab)
    assert len(stack) == 2 and stack[0].shape == (20, 30, 2)


@pytest.mark.parametrize("channels", [None, 2])
def test_training_planes_read_only_the_labelled_planes_of_a_lazy_image(channels):
    """A large lazy stack with a few labelled planes: only those planes are read (napari
    would otherwise load the whole stack on its GUI thread), each as a copy."""
    import dask.array as da

    read = []

    def plane(block, block_info=None):
        read.append(block_info[0]["chunk-location"][0])
        return block

    shape = (5, 20, 30) if channels is None else (5, channels, 20, 30)
    stack = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    lazy = da.from_array(stack, chunks=(1,) + shape[1:]).map_blocks(plane, dtype=np.float32)
    lab = np.zeros((5, 20, 30), np.int32)
    lab[3, 2:5, 2:5] = 1
    images, labels, _, kept = training_planes(lazy, lab)
    assert read == [3] and kept == [3] and len(images) == 1
    expected = stack[3] if channels is None else np.moveaxis(stack[3], 0, -1)
    np.testing.assert_array_equal(images[0], expected)
    assert isinstance(images[0], np.ndarray) and images[0].flags.c_contiguous


def test_training_planes_mismatch_is_one_sentence():
    with pytest.raises(InputError, match="do not match"):
        training_planes(np.ones((20, 31)), np.ones((20, 30), np.int32), name="a / b")
    with pytest.raises(InputError, match="differ"):
        training_planes(np.ones((20, 31, 3)), np.ones((20, 30), np.int32), rgb=True)


def test_image_for_model_moves_channels_first_only_when_needed():
    assert image_for_model(np.ones((2, 20, 30)), rgb=False, channels=2).shape == (20, 30, 2)
    assert image_for_model(np.ones((5, 2, 20, 30)), rgb=False,
                           channels=2).shape == (5, 20, 30, 2)
    assert image_for_model(np.ones((20, 30, 3)), rgb=True, channels=3).shape == (20, 30, 3)
    assert image_for_model(np.ones((4, 20, 30)), rgb=False, channels=1).shape == (4, 20, 30)


def test_layout_and_normalisation():
    assert as_channels_last(np.zeros((5, 6), bool)).shape == (5, 6, 1)
    with pytest.raises(InputError, match="channel"):
        as_channels_last(np.zeros((5, 6, 2)), channels=3)
    img = np.arange(100, dtype=np.uint16).reshape(10, 10, 1)
    out = normalize(img)
    assert out.dtype == np.float32 and out.min() < 0.01 and 0.99 < out.max() < 1.01
    with pytest.raises(InputError, match="NaN"):
        normalize(np.full((4, 4, 1), np.nan))


@pytest.mark.parametrize("dtype,top", [(np.uint8, 256), (np.uint16, 65536), (np.uint16, 300),
                                       (np.bool_, 2)])
@pytest.mark.parametrize("shape", [(600, 700, 1), (333, 517, 3), (7, 5, 1), (1, 1, 1)])
def test_percentiles_of_integer_images_by_counting_equal_numpys(dtype, top, shape):
    from napari_unet.data import percentiles

    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, top, size=shape).astype(dtype)
    if dtype != np.bool_:
        image[: shape[0] // 2] //= 3  # not uniform
    lo, hi = percentiles(image)
    want = np.percentile(image.reshape(-1, shape[-1]).astype(np.float32), [1.0, 99.8], axis=0)
    np.testing.assert_array_equal(lo, want[0].astype(np.float32))
    np.testing.assert_array_equal(hi, want[1].astype(np.float32))
    assert lo.dtype == hi.dtype == np.float32 and lo.shape == (shape[-1],)


def test_grey_of_colour_finds_the_grey_image_an_rgb_array_holds(rng):
    grey = rng.integers(0, 255, (20, 30), dtype=np.uint8)
    flat = np.full_like(grey, 10)
    g, why = grey_of_colour(np.stack([grey, grey, grey, flat], -1))
    assert g is not None and np.array_equal(g, grey) and "equal" in why
    g, why = grey_of_colour(np.stack([flat, grey, flat], -1))  # constant, not only zero
    assert np.array_equal(g, grey) and why == "only its green channel holds signal"
    assert grey_of_colour(np.stack([grey, grey[::-1], flat], -1)) == (None, "")  # colour
    assert grey_of_colour(np.stack([grey] * 5, -1)) == (None, "")  # not RGB
    assert grey_of_colour(np.stack([grey] * 3, -1).tolist()) == (None, "")  # not in memory
