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
