import numpy as np
from conftest import discs
from scipy import ndimage as ndi

from napari_unet.augment import Augmenter, displacement_field


def test_displacement_field_is_smooth_and_of_the_right_scale():
    rng = np.random.default_rng(0)
    fields = np.stack([displacement_field((64, 64), rng) for _ in range(200)])
    corners = fields[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert 8.0 < corners.std() < 12.0  # grid points keep sigma = 10 px
    assert np.abs(np.diff(fields, axis=-1)).max() < 3.0  # smooth, no tearing


def test_image_and_labels_stay_aligned_and_labels_keep_their_values():
    lab = discs((64, 64), [(20, 20), (40, 44), (30, 30)], 9)
    image = lab.astype(np.float64)[..., None] * 10.0  # the image encodes the labels
    weights = np.ones(lab.shape, np.float32)
    valid = np.ones(lab.shape, np.float32)
    aug = Augmenter(intensity=0.0)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        im2, lab2, w2, v2 = aug(image, lab, weights, valid, rng)
        assert set(np.unique(lab2)) <= set(np.unique(lab))
        assert lab2.shape == lab.shape and im2.shape == image.shape
        # the interpolated image, rounded to the nearest label value, agrees with the
        # nearest-neighbour labels everywhere except along object edges
        agree = np.round(im2[..., 0] / 10.0) == lab2
        assert agree.mean() > 0.97
        # and exactly where the image is locally constant
        interior = np.isclose(im2[..., 0] / 10.0, np.round(im2[..., 0] / 10.0), atol=1e-6)
        assert (np.round(im2[..., 0][interior] / 10.0) == lab2[interior]).all()


def test_deformation_is_applied():
    lab = discs((64, 64), [(32, 32)], 12)
    aug = Augmenter(flips=False, rotations=False, intensity=0.0)
    out = aug(lab[..., None].astype(float), lab, lab * 0.0, lab * 0.0,
              np.random.default_rng(3))[1]
    assert (out != lab).sum() > 20


def test_zoom_scales_objects_within_its_range_and_keeps_them_aligned():
    lab = discs((96, 96), [(48, 48)], 12)
    image = lab.astype(np.float64)[..., None]
    aug = Augmenter(elastic=False, flips=False, rotations=False, intensity=0.0, zoom=0.5)
    ratios = []
    for seed in range(20):
        im2, lab2, _, _ = aug(image, lab, lab * 0.0, lab * 0.0, np.random.default_rng(seed))
        ratios.append(lab2.sum() / lab.sum())
        assert (np.abs(im2[..., 0] - lab2) > 0.5).mean() < 0.02
    ratios = np.array(ratios)
    assert ratios.min() > 1 / 1.5**2 - 0.05 and ratios.max() < 1.5**2 + 0.05
    assert ratios.min() < 0.8 and ratios.max() > 1.25  # both ways
    off = Augmenter(elastic=False, flips=False, rotations=False, intensity=0.0)
    assert (off(image, lab, lab * 0.0, lab * 0.0, np.random.default_rng(0))[1] == lab).all()


def test_deformed_images_stay_sharp():
    """Cubic interpolation of the image: linear interpolation would blur white noise's
    fine detail to about half (Laplacian 0.53-0.57 of the input's here), which teaches the
    network blurred membranes."""
    from scipy import ndimage as ndi

    image = np.random.default_rng(0).random((128, 128, 1))
    lab = np.zeros((128, 128), int)
    aug = Augmenter(flips=False, rotations=False, intensity=0.0)

    def detail(x):
        return ndi.laplace(x[..., 0])[16:-16, 16:-16].std()

    for seed in range(5):
        out = aug(image, lab, lab * 0.0, lab * 0.0, np.random.default_rng(seed))[0]
        assert out.shape == image.shape
        assert detail(out) > 0.7 * detail(image)


def test_displacement_field_is_the_bicubic_interpolation_of_the_coarse_grid():
    """The separable fast path against plain ``map_coordinates`` over the full grid."""
    for shape, grid in [((64, 64), 3), ((37, 100), 3), ((90, 64), 5), ((1, 7), 3)]:
        field = displacement_field(shape, np.random.default_rng(7), grid=grid, sigma=4.0)
        coarse = np.random.default_rng(7).normal(0.0, 4.0, size=(2, grid, grid))
        yy, xx = np.meshgrid(np.linspace(0, grid - 1, shape[0]),
                             np.linspace(0, grid - 1, shape[1]), indexing="ij")
        brute = np.stack([ndi.map_coordinates(c, [yy, xx], order=3, mode="nearest")
                          for c in coarse])
        assert field.shape == (2, *shape)
        np.testing.assert_allclose(field, brute, atol=1e-9)


def test_varying_weights_are_warped_with_the_labels():
    lab = discs((64, 64), [(20, 20), (40, 44)], 9)
    weights = 1.0 + 5.0 * lab.astype(np.float32)  # the weights encode the labels
    aug = Augmenter(intensity=0.0)
    for seed in range(5):
        _, lab2, w2, _ = aug(lab[..., None].astype(float), lab, weights,
                             np.ones(lab.shape, np.float32), np.random.default_rng(seed))
        assert (np.round((w2 - 1.0) / 5.0) == lab2).mean() > 0.97
