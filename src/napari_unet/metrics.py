"""Segmentation metrics: Dice, IoU, pixel error, adapted Rand error, average precision."""

from __future__ import annotations

import numpy as np


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    t, p = np.asarray(truth, bool), np.asarray(pred, bool)
    total = t.sum() + p.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(t, p).sum() / total)


def iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    t, p = np.asarray(truth, bool), np.asarray(pred, bool)
    union = np.logical_or(t, p).sum()
    return 1.0 if union == 0 else float(np.logical_and(t, p).sum() / union)


def pixel_error(truth: np.ndarray, pred: np.ndarray) -> float:
    """Share of pixels whose class differs (the ISBI 2012 challenge's pixel error)."""
    return float(np.mean(np.asarray(truth) != np.asarray(pred)))


def adapted_rand_error(truth_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """The ISBI 2012 adapted Rand error (1 - Rand F-score) of two segmentations.

    Pixels labelled 0 in ``truth_labels`` are ignored, as in the challenge.
    """
    from skimage.metrics import adapted_rand_error as are

    return float(are(np.asarray(truth_labels), np.asarray(pred_labels))[0])


def _overlaps(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray]:
    """Pixel counts of every (truth label, predicted label) pair, background included,
    and the raveled labels."""
    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    nt, np_ = int(t.max(initial=0)) + 1, int(p.max(initial=0)) + 1
    return np.bincount(t * np_ + p, minlength=nt * np_).reshape(nt, np_), t, p


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every ground-truth object (rows) with every predicted object (columns)."""
    overlap, t, p = _overlaps(truth, pred)
    area_t = overlap.sum(1, keepdims=True)
    area_p = overlap.sum(0, keepdims=True)
    union = area_t + area_p - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(union > 0, overlap / union, 0.0)
    t_ids, p_ids = np.unique(t), np.unique(p)
    return m[np.ix_(t_ids[t_ids > 0], p_ids[p_ids > 0])]


def matched_counts(truth: np.ndarray, pred: np.ndarray, threshold: float,
                   ious: np.ndarray | None = None) -> tuple[int, int, int]:
    """(TP, FP, FN) after one-to-one matching of objects with IoU above ``threshold``.

    For thresholds of 0.5 and above a match is unique; below, the matching maximises the
    summed IoU (Hungarian algorithm). ``ious`` may pass :func:`iou_matrix` when it is known.
    """
    m = iou_matrix(truth, pred) if ious is None else ious
    n_true, n_pred = m.shape
    if n_true == 0 or n_pred == 0:
        return 0, n_pred, n_true
    if threshold >= 0.5:
        tp = int((m > threshold).sum())
    else:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-m)
        tp = int((m[rows, cols] > threshold).sum())
    return tp, n_pred - tp, n_true - tp


def average_precision(truth: np.ndarray, pred: np.ndarray,
                      thresholds=(0.5,)) -> dict[float, float]:
    """``TP / (TP + FP + FN)`` at each IoU threshold (the DSB 2018 / StarDist definition)."""
    out = {}
    ious = iou_matrix(truth, pred)
    for th in thresholds:
        tp, fp, fn = matched_counts(truth, pred, th, ious)
        denom = tp + fp + fn
        out[float(th)] = 1.0 if denom == 0 else tp / denom
    return out


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """The pairs ``(a, b)``, ``a < b``, of objects that touch (8-connected neighbours)."""
    lab = np.asarray(labels).astype(np.int64)
    found = []
    for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1, :], lab[1:, :]),
                 (lab[:-1, :-1], lab[1:, 1:]), (lab[:-1, 1:], lab[1:, :-1])):
        meet = (a != 0) & (b != 0) & (a != b)
        if meet.any():
            found.append(np.stack([np.minimum(a[meet], b[meet]),
                                   np.maximum(a[meet], b[meet])], axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


def separated_pairs(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """(separated, total) touching ground-truth pairs.

    Each ground-truth object is assigned the predicted label covering most of its pixels
    (background counts as a label); a touching pair is separated when both objects were
    assigned an object, and two different ones.
    """
    pairs = touching_pairs(truth)
    if len(pairs) == 0:
        return 0, 0
    dominant = _overlaps(truth, pred)[0].argmax(axis=1)
    a, b = dominant[pairs[:, 0]], dominant[pairs[:, 1]]
    return int(((a != 0) & (b != 0) & (a != b)).sum()), len(pairs)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label images hold the same objects and background (ids may differ)."""
    a, b = np.asarray(a).astype(np.uint64), np.asarray(b).astype(np.uint64)
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique((a << np.uint64(32)) | b)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))
