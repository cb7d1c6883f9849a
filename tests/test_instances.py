import numpy as np
import pytest
from conftest import discs
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_unet.instances import instances_from_probabilities
from napari_unet.metrics import average_precision
from napari_unet.targets import instance_targets, normalized_distance


def one_hot(cls, n):
    return np.stack([(cls == k).astype(np.float32) for k in range(n)])


def distance_prob(lab):
    """What an ideal 'distance' model gives: the paper's two classes, then the distance."""
    cls, _ = instance_targets(lab, target="two_class")
    return np.concatenate([one_hot(cls, 2), normalized_distance(lab)[None]])


@pytest.mark.parametrize("overlap", [2, 4, 6])
def test_two_touching_discs_come_out_as_two(overlap):
    lab = discs((60, 80), [(30, 25), (30, 25 + 24 - overlap)], 12)
    for target, n, method in [("two_class", 2, "components"), ("two_class", 2, "watershed"),
                              ("three_class", 3, "auto")]:
        cls, _ = instance_targets(lab, target=target)
        pred = instances_from_probabilities(one_hot(cls, n), target=target, method=method)
        assert pred.max() == 2, (target, method)
        assert average_precision(lab, pred, (0.5,))[0.5] == 1.0, (target, method)
    pred = instances_from_probabilities(distance_prob(lab), target="distance")
    assert pred.max() == 2
    assert average_precision(lab, pred, (0.5,))[0.5] == 1.0


def test_distance_watershed_splits_merged_foreground_and_keeps_unseeded_objects():
    """The foreground of two overlapping discs without any separating line: the distance
    map alone splits it; a faint blob whose distance never reaches the seed level stays."""
    from napari_unet.metrics import separated_pairs

    lab = discs((60, 110), [(30, 25), (30, 45)], 12)
    lab[5:9, 95:99] = 3
    prob = distance_prob(lab)
    prob[1] = (lab > 0).astype(np.float32)  # no background line where they touch
    prob[0] = 1 - prob[1]
    prob[2][lab == 3] = 0.3
    pred = instances_from_probabilities(prob, target="distance")
    assert separated_pairs(lab, pred) == (1, 1)
    assert pred.max() == 3 and pred[7, 97] != 0
    assert instances_from_probabilities(prob, target="distance",
                                        method="components").max() == 2  # merged


def test_merged_foreground_is_one_object_without_the_line():
    lab = discs((60, 80), [(30, 25), (30, 45)], 12)
    prob = one_hot((lab > 0).astype(int), 2)
    assert instances_from_probabilities(prob, method="components").max() == 1


def test_small_objects_are_removed():
    fg = np.zeros((20, 20), bool)
    fg[2, 2] = True  # 5 px after growing by one: removed
    fg[8:16, 8:16] = True  # kept
    prob = np.stack([~fg, fg]).astype(np.float32)
    out = instances_from_probabilities(prob, min_size=10)
    assert out.max() == 1 and out[2, 2] == 0 and out[12, 12] == 1


def test_the_automatic_minimum_size_follows_the_cell_size():
    from napari_unet.instances import MIN_SIZE_FLOOR, MIN_SIZE_SHARE, auto_min_size

    model_cap = round(MIN_SIZE_SHARE * np.pi * 400)  # cells of 40 px
    assert auto_min_size([300, 310, 320], None) == MIN_SIZE_FLOOR == 10  # no cell size
    assert auto_min_size([], 40) == model_cap
    assert auto_min_size([5000, 6000, 7000, 3], 40) == model_cap  # the model's cell binds
    # an image of cells much smaller than the model's keeps them: its median binds
    assert auto_min_size([100, 120, 140, 3], 40) == round(MIN_SIZE_SHARE * 120)
    assert auto_min_size([20, 22, 24], 40) == 10  # never below the floor
    assert auto_min_size([5000] * 3, 4) == 10


@pytest.mark.parametrize("overlap", [3, 6])
@pytest.mark.parametrize("target,method", [("two_class", "components"),
                                           ("two_class", "watershed"),
                                           ("three_class", "watershed"),
                                           ("three_class", "components")])
def test_soft_noisy_probabilities_of_overlapping_discs_give_two(target, method, overlap):
    """Probabilities as a network gives them (blurred, noisy), not the ideal one-hot maps."""
    from scipy import ndimage as ndi

    from napari_unet.metrics import separated_pairs

    rng = np.random.default_rng(overlap)
    lab = discs((64, 100), [(32, 20), (32, 20 + 28 - overlap), (40, 84)], 14)
    cls, _ = instance_targets(lab, target=target)
    n = 2 if target == "two_class" else 3
    prob = np.stack([ndi.gaussian_filter(c, 1.0) for c in one_hot(cls, n)])
    prob = np.clip(prob + rng.normal(0, 0.05, prob.shape), 1e-3, None)
    prob /= prob.sum(axis=0, keepdims=True)
    pred = instances_from_probabilities(prob, target=target, method=method)
    assert separated_pairs(lab, pred) == (1, 1)
    assert pred.max() == 3


@pytest.mark.parametrize("overlap", [3, 6])
def test_soft_noisy_distance_maps_of_overlapping_discs_give_two(overlap):
    from scipy import ndimage as ndi

    from napari_unet.metrics import separated_pairs

    rng = np.random.default_rng(overlap)
    lab = discs((64, 100), [(32, 20), (32, 20 + 28 - overlap), (40, 84)], 14)
    prob = np.stack([ndi.gaussian_filter(c, 1.0) for c in distance_prob(lab)])
    prob = np.clip(prob + rng.normal(0, 0.05, prob.shape), 1e-3, 1.0)
    prob[:2] /= prob[:2].sum(axis=0, keepdims=True)
    pred = instances_from_probabilities(prob, target="distance")
    assert separated_pairs(lab, pred) == (1, 1)
    assert pred.max() == 3
    assert average_precision(lab, pred, (0.75,))[0.75] == 1.0


def test_two_class_watershed_gives_back_the_extent_a_high_threshold_takes():
    """Seeds above a high threshold keep a touching pair apart; flooding down to 0.5 gives
    the objects their whole extent, and a faint object below the threshold is kept."""
    from scipy import ndimage as ndi

    lab = discs((64, 100), [(32, 20), (32, 44), (32, 80)], 12)
    cls, _ = instance_targets(lab, target="two_class")
    fg = ndi.gaussian_filter(cls.astype(np.float32), 2.0)
    fg[lab == 3] = np.minimum(fg[lab == 3], 0.7)  # faint: never above 0.9
    prob = np.stack([1 - fg, fg])
    comps = instances_from_probabilities(prob, method="components", threshold=0.9)
    shed = instances_from_probabilities(prob, method="watershed", threshold=0.9)
    assert comps.max() == 2  # the faint object is lost, the other two shrink
    assert average_precision(lab, comps, (0.75,))[0.75] < 0.5
    assert shed.max() == 3
    assert average_precision(lab, shed, (0.75,))[0.75] == 1.0


def test_two_class_watershed_merges_a_single_object_split_by_a_shallow_dip():
    """One nucleus whose probability sags to 0.8 across its middle falls into two seeds at
    threshold 0.9; their shared boundary is still foreground, so they are merged again.
    A touching pair with the paper's background line (probability 0.2) stays apart."""
    from scipy import ndimage as ndi

    from napari_unet.instances import merge_split_objects

    lab = discs((64, 120), [(32, 20), (32, 44), (32, 96)], 12)
    cls, _ = instance_targets(lab, target="two_class")
    fg = ndi.gaussian_filter(cls.astype(np.float32), 1.0)
    fg = np.where(cls == 1, np.maximum(fg, 0.97), fg)
    fg[:, 95:98] = np.where(lab[:, 95:98] == 3, 0.8, fg[:, 95:98])  # sag inside object 3
    fg[(cls == 0) & ndi.binary_dilation(lab > 0)] = 0.2  # the line between 1 and 2
    prob = np.stack([1 - fg, fg])
    split = instances_from_probabilities(prob, method="watershed", threshold=0.9)
    assert split.max() == 3
    assert average_precision(lab, split, (0.5,))[0.5] == 1.0
    from napari_unet.instances import watershed_two_class

    unmerged = watershed_two_class(fg, threshold=0.9, merge=None)
    assert unmerged.max() == 4  # object 3 in two pieces without the merge
    assert merge_split_objects(unmerged, fg).max() == 3
    assert merge_split_objects(unmerged, fg, level=0.9).max() == 4


@pytest.mark.parametrize("overlap", [2, 6])
def test_two_class_watershed_cuts_touching_discs_at_their_neck(overlap):
    """Two overlapping discs whose foreground probability is high throughout: no background
    line, no dip, one seed. The shape's neck alone splits them, through the neck."""
    from napari_unet.instances import watershed_two_class
    from napari_unet.metrics import separated_pairs

    lab = discs((60, 80), [(30, 25), (30, 25 + 24 - overlap)], 12)
    fg = np.where(lab > 0, 0.97, 0.03).astype(np.float32)
    assert watershed_two_class(fg, threshold=0.9, necks=None).max() == 1
    pred = watershed_two_class(fg, threshold=0.9)
    assert separated_pairs(lab, pred) == (1, 1)
    assert average_precision(lab, pred, (0.75,))[0.75] == 1.0
    # a three-class model that drew the outer boundary but none between the two
    from scipy import ndimage as ndi

    inside = ndi.binary_erosion(lab > 0, iterations=2)
    cls = np.where(inside, 1, np.where(lab > 0, 2, 0))
    for cut, objects in ((False, 1), (True, 2)):
        pred = instances_from_probabilities(one_hot(cls, 3), target="three_class",
                                            cut_necks=cut)
        assert pred.max() == objects
    assert separated_pairs(lab, pred) == (1, 1)
    assert average_precision(lab, pred, (0.75,))[0.75] == 1.0


def _bumpy_disc():
    rng = np.random.default_rng(3)
    lab = discs((64, 64), [(32, 32)], 14)
    for a in rng.uniform(0, 2 * np.pi, 8):  # bumps on the rim, each a maximum of its own
        lab |= discs((64, 64), [(32 + 14 * np.sin(a), 32 + 14 * np.cos(a))], 4)
    return lab


@pytest.mark.parametrize("name", ["disc", "ellipse", "bumpy", "bud", "square"])
def test_split_at_necks_leaves_single_cells_whole(name):
    """A disc, a long ellipse, a disc with a rough rim, a disc with a bud too small to be a
    cell of its own (under 15 % of it), and a square all stay one object."""
    from napari_unet.instances import split_at_necks

    yy, xx = np.mgrid[:64, :64]
    lab = {"disc": lambda: discs((64, 64), [(32, 32)], 12),
           "ellipse": lambda: (((yy - 32) / 7.0) ** 2 + ((xx - 32) / 26.0) ** 2 <= 1
                               ).astype(np.int32),
           "bumpy": _bumpy_disc,
           "bud": lambda: np.maximum(discs((64, 64), [(32, 28)], 14),
                                     discs((64, 64), [(32, 45)], 4)),
           "square": lambda: np.pad(np.ones((30, 30), np.int32), 17)}[name]()
    assert split_at_necks(lab).max() == 1


def test_split_at_necks_cuts_a_chain_and_keeps_every_pixel():
    """Three cells in a row and a lone one: four objects, each inside one object it came
    from, the foreground unchanged."""
    from napari_unet.instances import split_at_necks
    from napari_unet.metrics import separated_pairs

    truth = discs((60, 120), [(30, 16), (30, 36), (30, 56), (30, 100)], 11)
    merged = (truth[:, :] > 0).astype(np.int32)
    merged[:, 80:] *= 2
    out = split_at_necks(merged)
    assert out.max() == 4 and len(np.unique(out)) == 5
    assert np.array_equal(out > 0, merged > 0)
    for k in np.unique(out[out > 0]):
        assert len(np.unique(merged[out == k])) == 1
    assert separated_pairs(truth, out) == (2, 2)
    assert average_precision(truth, out, (0.75,))[0.75] == 1.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), radius=st.integers(3, 12))
def test_split_at_necks_only_divides_objects(seed, n, radius):
    """On random clumps of discs (touching, overlapping, cut by the image's edge): every
    pixel keeps its foreground, every new object lies inside one old object, no part is
    smaller than the rule allows, and objects with one part come back as they were."""
    from napari_unet.instances import MIN_SIZE_FLOOR, NECK_PART_SHARE, split_at_necks

    rng = np.random.default_rng(seed)
    lab = discs((48, 64), rng.uniform(-4, 68, (n, 2)), radius)
    lab, _ = ndi.label(lab > 0)  # clumps as single objects
    out = split_at_necks(lab)
    assert np.array_equal(out > 0, lab > 0)
    sizes = np.bincount(lab.ravel())
    for k in np.unique(out[out > 0]):
        (old,) = np.unique(lab[out == k])
        part = (out == k).sum()
        if part != sizes[old]:  # a part of a cut object
            assert part >= max(MIN_SIZE_FLOOR, NECK_PART_SHARE * sizes[old])


def test_merge_split_objects_is_transitive_and_keeps_background():
    from napari_unet.instances import merge_split_objects

    lab = np.zeros((4, 9), np.int32)
    lab[:, 0:3], lab[:, 3:6], lab[:, 6:8] = 1, 2, 3
    prob = np.full(lab.shape, 0.95, np.float32)
    merged = merge_split_objects(lab, prob)
    assert set(np.unique(merged)) == {0, 1} and (merged[:, 8] == 0).all()
    prob[:, 5:7] = 0.1  # the boundary between 2 and 3 is background
    merged = merge_split_objects(lab, prob)
    assert merged[0, 0] == merged[0, 4] != merged[0, 7]


def offsets_prob(lab, foreground=None):
    """What an ideal 'offsets' model gives: the two classes, then the vectors (y, x) to
    each object's centroid in pixels."""
    cls, _ = instance_targets(lab, target="two_class")
    fg = cls if foreground is None else foreground
    ys, xs = np.mgrid[: lab.shape[0], : lab.shape[1]].astype(np.float32)
    vec = np.zeros((2, *lab.shape), np.float32)
    for k in np.unique(lab[lab > 0]):
        m = lab == k
        vec[0][m] = ys[m].mean() - ys[m]
        vec[1][m] = xs[m].mean() - xs[m]
    return np.concatenate([one_hot(fg, 2), vec])


@pytest.mark.parametrize("overlap", [2, 6, 10])
def test_offsets_split_merged_foreground_by_the_centres_pixels_point_to(overlap):
    """Overlapping discs with no separating line in the foreground at all: the vectors alone
    split them; connected components of the same foreground give one object."""
    from napari_unet.metrics import separated_pairs

    lab = discs((60, 80), [(30, 25), (30, 25 + 24 - overlap)], 12)
    prob = offsets_prob(lab, foreground=(lab > 0).astype(int))
    pred = instances_from_probabilities(prob, target="offsets")
    assert separated_pairs(lab, pred) == (1, 1)
    assert average_precision(lab, pred, (0.5,))[0.5] == 1.0
    assert instances_from_probabilities(prob, target="offsets",
                                        method="components").max() == 1


def test_noisy_offsets_still_give_one_object_per_disc():
    rng = np.random.default_rng(0)
    lab = discs((90, 120), [(30, 25), (30, 45), (60, 80), (62, 101)], 11)
    prob = offsets_prob(lab, foreground=(lab > 0).astype(int))
    prob[2:] += rng.normal(0, 1.5, prob[2:].shape).astype(np.float32) * (lab > 0)
    pred = instances_from_probabilities(prob, target="offsets")
    assert pred.max() == 4
    assert average_precision(lab, pred, (0.5,))[0.5] == 1.0


def test_offsets_never_join_separate_foreground_components():
    """Pixels of a second blob pointing into the first one stay a separate object."""
    lab = discs((40, 80), [(20, 20), (20, 60)], 8)
    prob = offsets_prob(lab, foreground=(lab > 0).astype(int))
    prob[2:][:, lab == 2] = prob[2:][:, lab == 1].mean(1, keepdims=True)  # wrong votes
    m = lab == 2
    ys, xs = np.nonzero(m)
    prob[2][m] = 20 - ys
    prob[3][m] = 20 - xs  # every pixel of disc 2 votes for disc 1's centre
    pred = instances_from_probabilities(prob, target="offsets")
    assert pred.max() == 2
    assert average_precision(lab, pred, (0.5,))[0.5] == 1.0
