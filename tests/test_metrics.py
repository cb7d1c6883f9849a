import numpy as np
import pytest
from conftest import discs

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
