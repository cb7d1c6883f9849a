import numpy as np
import pytest
from conftest import discs
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_unet.metrics import same_partition
from napari_unet.targets import (
    border_weights,
    class_weights,
    instance_targets,
    relabel_objects,
    semantic_classes,
    semantic_targets,
    touching_border,
)


def brute_force_border_term(labels, w0, sigma):
    """Direct evaluation of w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) from all object pixels."""
    ids = [i for i in np.unique(labels) if i != 0]
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    dists = []
    for i in ids:
        py, px = np.nonzero(labels == i)
        d = np.sqrt((yy[..., None] - py) ** 2 + (xx[..., None] - px) ** 2).min(-1)
        dists.append(d)
    dists = np.sort(np.stack(dists), axis=0)
    d1, d2 = dists[0], dists[1] if len(ids) > 1 else np.full(labels.shape, np.inf)
    return w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))


def random_instances(rng, shape=(40, 48), n=5):
    """Random overlapping rectangles (so some touch), at least two objects."""
    while True:
        lab = np.zeros(shape, np.int32)
        for i in range(1, n + 1):
            cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            ry, rx = rng.integers(2, 8, 2)
            lab[max(cy - ry, 0) : cy + ry, max(cx - rx, 0) : cx + rx] = i
        if len(np.unique(lab)) >= 3:
            return lab


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sigma", [2.0, 5.0])
def test_weight_map_matches_brute_force(seed, sigma):
    rng = np.random.default_rng(seed)
    lab = random_instances(rng)
    fast = border_weights(lab, 10.0, sigma)
    slow = brute_force_border_term(lab, 10.0, sigma)
    np.testing.assert_allclose(fast, slow, atol=1e-5 * 10.0, rtol=1e-5)


def test_weight_map_formula_on_the_background():
    lab = discs((40, 60), [(20, 15), (20, 45)], 10)  # gap of 10 px between the discs
    cls, w = instance_targets(lab, w0=10.0, sigma=5.0)
    wc = class_weights(cls, 2)
    term = brute_force_border_term(lab, 10.0, 5.0)
    background = cls == 0
    np.testing.assert_allclose(w[background], (wc + term)[background], atol=1e-4)
    np.testing.assert_allclose(w[~background], wc[~background])
    assert w[20, 30] > w[2, 2] + 1.0  # the gap between the cells is emphasised


def test_touching_objects_get_a_separating_background_line():
    lab = discs((40, 60), [(20, 20), (20, 36)], 10)  # overlapping: they touch
    assert touching_border(lab).any()
    cls, w = instance_targets(lab)
    comps, n = ndi.label(cls == 1, structure=ndi.generate_binary_structure(2, 1))
    assert n == 2
    line = touching_border(lab)
    assert (cls[line] == 0).all()
    assert w[line].min() > 8.0  # the paper's large weights on the separating line


def test_three_class_target():
    lab = discs((40, 60), [(20, 20), (20, 36)], 10)
    cls, w = instance_targets(lab, target="three_class")
    assert set(np.unique(cls)) == {0, 1, 2}
    interior, _ = ndi.label(cls == 1, structure=ndi.generate_binary_structure(2, 1))
    assert interior.max() == 2
    assert (cls[lab == 0] == 0).all()


def test_distance_target_packs_classes_and_normalised_distance():
    from napari_unet.targets import normalized_distance, unpack_distance

    lab = discs((40, 70), [(20, 20), (20, 36)], 10)  # two touching discs
    lab[30:40, 60:70] = 3  # cut by the image's corner
    dist = normalized_distance(lab)
    assert (dist[lab == 0] == 0).all() and (dist[lab > 0] > 0).all()
    for k in (1, 2, 3):
        assert dist[lab == k].max() == pytest.approx(1.0)
    line = touching_border(lab)
    assert dist[line].max() < 0.3  # low where the two discs meet
    assert dist[39, 69] == pytest.approx(1.0)  # the image's edge is not a border
    packed, w = instance_targets(lab, target="distance")
    cls, back = unpack_distance(packed)
    two, w2 = instance_targets(lab, target="two_class")
    np.testing.assert_array_equal(cls, two)  # the paper's map and weights, unchanged
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_allclose(back, dist, atol=1e-3)


def test_binary_masks_become_objects():
    mask = (discs((30, 30), [(8, 8), (20, 20)], 5) > 0).astype(np.uint8) * 255
    cls, _ = instance_targets(mask)
    assert ndi.label(cls)[1] == 2


def test_semantic_targets_and_class_balance():
    lab = np.zeros((10, 10), np.uint8)
    lab[:2] = 255
    cls, w = semantic_targets(lab, 2)
    assert set(np.unique(cls)) == {0, 1}
    assert w[cls == 1].mean() == pytest.approx(4.0)  # 80 / 20
    assert w[cls == 0].mean() == pytest.approx(1.0)
    multi = np.array([[0, 1], [2, 2]])
    cls, w = semantic_targets(multi, 3)
    assert cls.tolist() == [[0, 1], [2, 2]]


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 10_000), w0=st.floats(0.5, 20), sigma=st.floats(1, 8))
def test_weight_map_bounds_and_flip_symmetry(seed, w0, sigma):
    lab = random_instances(np.random.default_rng(seed), shape=(30, 34), n=4)
    cls, w = instance_targets(lab, w0=w0, sigma=sigma)
    wc = class_weights(cls, 2)
    assert (w >= wc - 1e-6).all() and (w <= wc + w0 + 1e-4).all()
    for axis in (0, 1):
        _, wf = instance_targets(np.flip(lab, axis), w0=w0, sigma=sigma)
        np.testing.assert_allclose(np.flip(wf, axis), w, atol=1e-5)


def test_class_balance_can_be_switched_off():
    lab = np.zeros((10, 10), np.uint8)
    lab[:2] = 255
    _, w = semantic_targets(lab, 2, balance=False)
    assert (w == 1).all()
    _, w = instance_targets(discs((40, 60), [(20, 20), (20, 36)], 10), w0=0.0, balance=False)
    assert (w == 1).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), value=st.sampled_from([1, 255, True]))
def test_label_conversions(seed, value):
    lab = random_instances(np.random.default_rng(seed), shape=(30, 34), n=5)
    mask = np.where(lab > 0, value, 0).astype(type(value) if value is not True else bool)
    objects = relabel_objects(mask)
    assert ((objects > 0) == (lab > 0)).all()  # the same foreground, split into components
    n_components = ndi.label(lab > 0, np.ones((3, 3)))[1]  # 8-neighbourhood
    assert len(np.unique(objects)) - 1 == n_components
    relabelled = relabel_objects(lab)
    pieces = {v: ndi.label(lab == v, np.ones((3, 3)))[1] for v in np.unique(lab)[1:]}
    if all(n == 1 for n in pieces.values()):
        np.testing.assert_array_equal(relabelled, lab)  # instances stay as they are
    else:  # an id in pieces (a disc painted over another's middle): one object per piece
        assert len(np.unique(relabelled)) - 1 == sum(pieces.values())
        assert ((relabelled > 0) == (lab > 0)).all()
    if value == 255:
        np.testing.assert_array_equal(semantic_classes(mask), (lab > 0).astype(int))
    cls, _ = instance_targets(lab)
    assert set(np.unique(cls)) <= {0, 1} and not (cls.astype(bool) & (lab == 0)).any()


def test_offsets_target_packs_classes_and_sequential_ids():
    from napari_unet.targets import unpack_ids

    lab = np.zeros((20, 30), int)
    lab[2:8, 2:9] = 7
    lab[2:8, 9:15] = 40  # touches 7
    lab[12:18, 20:27] = 3
    packed, w = instance_targets(lab, target="offsets")
    two, w2 = instance_targets(lab, target="two_class")
    cls, ids = unpack_ids(packed)
    np.testing.assert_array_equal(cls, two)
    np.testing.assert_array_equal(w, w2)
    assert sorted(np.unique(ids).tolist()) == [0, 1, 2, 3]
    for k in (7, 40, 3):  # one id per object, the same pixels
        assert np.unique(ids[lab == k]).size == 1 and np.all(ids[lab != k] != ids[lab == k][0])


def test_centre_offsets_point_to_centroids_and_skip_cut_objects():
    import torch

    from napari_unet.losses import centre_offsets, offset_loss
    from napari_unet.targets import OFFSET_SCALE

    ids = np.zeros((2, 24, 24), np.int64)
    ids[0, 3:8, 4:11] = 1      # inside
    ids[0, 15:24, 10:14] = 2   # reaches the patch edge: no loss
    ids[1, 5:12, 5:9] = 1      # the same id in another patch is another object
    counted = np.ones(ids.shape, bool)
    counted[1, :, 7:10] = False  # ...which reaches pixels beyond the image: no loss
    ids[1, 14:20, 14:20] = 3
    off, use = centre_offsets(torch.as_tensor(ids), torch.as_tensor(counted))
    use = use.numpy()
    assert use[0][ids[0] == 1].all() and not use[0][ids[0] == 2].any()
    assert not use[1][ids[1] == 1].any() and use[1][ids[1] == 3].all()
    assert not use[ids == 0].any()
    ys, xs = np.nonzero(ids[0] == 1)
    np.testing.assert_allclose(off[0, 0].numpy()[ys, xs] * OFFSET_SCALE, 5.0 - ys, atol=1e-5)
    np.testing.assert_allclose(off[0, 1].numpy()[ys, xs] * OFFSET_SCALE, 7.0 - xs, atol=1e-5)
    # the loss is zero for the right vectors, and grows with a wrong one
    t, c = torch.as_tensor(ids), torch.as_tensor(counted)
    assert float(offset_loss(off, t, c)) == 0.0
    assert float(offset_loss(off + 0.5, t, c)) == pytest.approx(1.0)


def test_a_value_reused_for_separate_cells_makes_separate_objects():
    """Touching cells painted in two alternating values: each connected region of a value is
    its own cell, so cells of the same value far apart get the weight map and separating
    lines of separate cells."""
    centres = [(20, 20), (20, 37), (20, 54), (20, 71)]
    lab = discs((40, 92), centres, 9)
    alternating = np.where(lab > 0, 1 + (lab - 1) % 2, 0)  # values 1, 2, 1, 2
    objects = relabel_objects(alternating)
    assert len(np.unique(objects)) - 1 == 4
    assert same_partition(objects, lab)
    cls, w = instance_targets(alternating)
    cls_true, w_true = instance_targets(lab)
    np.testing.assert_array_equal(cls, cls_true)
    np.testing.assert_allclose(w, w_true, rtol=1e-6)
