import numpy as np
import pytest
from conftest import discs
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.metrics import (
    adapted_rand_error,
    average_precision,
    dice,
    iou,
    matched_counts,
    pixel_error,
    separated_pairs,
    touching_pairs,
)


def test_dice_iou_pixel_error():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:5] = True
    b[:4] = True
    assert dice(a, b) == pytest.approx(2 * 40 / 90)
    assert iou(a, b) == pytest.approx(40 / 50)
    assert pixel_error(a, b) == pytest.approx(0.1)
    assert dice(a & False, b & False) == 1.0


def test_average_precision_counts_one_to_one_matches():
    truth = discs((50, 50), [(10, 10), (10, 35), (35, 20)], 6)
    pred = truth.copy()
    pred[pred == 3] = 0  # a missed object
    pred[40:48, 40:48] = 7  # a false positive
    tp, fp, fn = matched_counts(truth, pred, 0.5)
    assert (tp, fp, fn) == (2, 1, 1)
    assert average_precision(truth, pred, (0.5,))[0.5] == pytest.approx(2 / 4)
    merged = truth.copy()
    merged[merged == 2] = 1  # two objects merged into one: at best one match
    assert matched_counts(truth, merged, 0.5)[0] == 1
    assert average_precision(truth, truth, (0.5, 0.9)) == {0.5: 1.0, 0.9: 1.0}


def test_adapted_rand_error():
    truth = discs((40, 40), [(10, 10), (28, 28)], 7)
    assert adapted_rand_error(truth, truth) == pytest.approx(0.0)
    assert adapted_rand_error(truth, (truth > 0).astype(int)) > 0.3


def test_touching_pairs_and_their_separation():
    # 1 and 2 overlap, 2 and 3 meet only diagonally, 4 is alone
    truth = discs((60, 80), [(15, 15), (15, 33), (0, 0), (45, 60)], 10)
    truth[truth == 3] = 0
    truth[16, 44] = 3  # diagonal to (15, 43), the rightmost pixel of 2
    truth[17, 45] = 3
    assert touching_pairs(truth).tolist() == [[1, 2], [2, 3]]
    assert separated_pairs(truth, truth) == (2, 2)
    merged = np.where(truth == 2, 1, truth)
    assert separated_pairs(truth, merged) == (1, 2)  # 1-2 merged, 2-3 still apart
    missed = np.where(truth == 3, 0, truth)
    assert separated_pairs(truth, missed) == (1, 2)  # a missed object separates nothing
    assert separated_pairs(np.zeros((5, 5), int), np.zeros((5, 5), int)) == (0, 0)


def _random_labels(seed, shape=(24, 28), n=6):
    rng = np.random.default_rng(seed)
    centres = [tuple(rng.integers(0, s) for s in shape) for _ in range(n)]
    return discs(shape, centres, int(rng.integers(2, 7)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), other=st.integers(0, 10_000))
def test_metric_properties(seed, other):
    t, p = _random_labels(seed), _random_labels(other)
    ious = (0.5, 0.75, 0.9)
    assert average_precision(t, t, ious) == {k: 1.0 for k in ious}
    # one-to-one matching above IoU 0.5 is symmetric, and AP falls as the IoU rises
    assert average_precision(t, p, ious) == average_precision(p, t, ious)
    ap = average_precision(t, p, ious)
    assert ap[0.5] >= ap[0.75] >= ap[0.9]
    # renumbering the objects changes nothing
    perm = np.concatenate([[0], np.random.default_rng(seed).permutation(int(p.max())) + 1])
    assert average_precision(t, perm[p], ious) == ap
    sep, total = separated_pairs(t, t)
    assert sep == total == len(touching_pairs(t))
    assert separated_pairs(t, (t > 0).astype(int))[0] == 0  # merged: nothing separated
    # ids numbered sparsely, as other tools number objects, score the same (a table
    # indexed by id would take 8 * 10**12 bytes here)
    sparse_t, sparse_p = t.astype(np.int64) * 10**6 + (t > 0), p.astype(np.int64) * 10**6
    assert average_precision(sparse_t, sparse_p, ious) == ap
    assert separated_pairs(sparse_t, sparse_p) == separated_pairs(t, p)
    assert 0 <= dice(t > 0, p > 0) <= 1 and dice(t > 0, p > 0) == dice(p > 0, t > 0)


def test_same_partition_ignores_ids_but_not_splits_merges_or_background():
    from napari_unet.metrics import same_partition

    a = np.array([[1, 1, 0, 2]])
    assert same_partition(a, np.array([[5, 5, 0, 3]]))
    assert not same_partition(a, np.array([[5, 6, 0, 3]]))  # split
    assert not same_partition(a, np.array([[5, 5, 0, 5]]))  # merged
    assert not same_partition(a, np.array([[5, 5, 5, 3]]))  # background differs
