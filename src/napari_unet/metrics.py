"""Segmentation metrics: Dice, IoU, pixel error, adapted Rand error, average precision, and
the scores of a set of images (:func:`instance_scores`, :func:`semantic_scores`) that the
benchmarks and ``napari-unet evaluate`` report."""

from __future__ import annotations

import numpy as np

#: IoU thresholds of the mean average precision (0.5, 0.55, ..., 0.95; DSB 2018, StarDist).
IOUS = tuple(float(t) for t in np.round(np.arange(0.5, 0.96, 0.05), 2))


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
    """Pixel counts of every (truth label, predicted label) pair, background included:
    ``(table, truth ids, predicted ids)``, rows and columns in the order of the ids (the
    values present, sorted). Indexed by position, not by id, so that labels numbered
    sparsely (ids up to 2**32 from another tool) do not make the table larger."""
    t_ids, t = np.unique(np.asarray(truth).ravel(), return_inverse=True)
    p_ids, p = np.unique(np.asarray(pred).ravel(), return_inverse=True)
    nt, np_ = len(t_ids), len(p_ids)
    table = np.bincount(t.ravel() * np_ + p.ravel(), minlength=nt * np_).reshape(nt, np_)
    return table, t_ids, p_ids


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every ground-truth object (rows) with every predicted object (columns)."""
    overlap, t_ids, p_ids = _overlaps(truth, pred)
    area_t = overlap.sum(1, keepdims=True)
    area_p = overlap.sum(0, keepdims=True)
    union = area_t + area_p - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(union > 0, overlap / union, 0.0)
    return m[np.ix_(t_ids > 0, p_ids > 0)]


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
    table, t_ids, p_ids = _overlaps(truth, pred)
    dominant = p_ids[table.argmax(axis=1)]
    rows = np.searchsorted(t_ids, pairs)
    a, b = dominant[rows[:, 0]], dominant[rows[:, 1]]
    return int(((a != 0) & (b != 0) & (a != b)).sum()), len(pairs)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label images hold the same objects and background (ids may differ)."""
    a, b = np.asarray(a).astype(np.uint64), np.asarray(b).astype(np.uint64)
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique((a << np.uint64(32)) | b)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def instance_scores(truths, preds, names=None) -> dict:
    """Instance segmentations of several images scored against their truth.

    ``ap50``: TP / (TP + FP + FN) at IoU 0.5 after one-to-one matching, per image, averaged
    over the images (``ap50_pooled``: the counts summed over the images first); ``map``:
    the same averaged over the IoU thresholds :data:`IOUS`; ``touching_separated``: the
    share of the truth's touching pairs that came out as two objects
    (:func:`separated_pairs`). With ``names``, ``images`` lists each image's own scores.
    """
    counts = np.zeros((len(IOUS), 3), np.int64)
    per_image, rows, sep, pairs = [], [], 0, 0
    for k, (t, p) in enumerate(zip(truths, preds)):
        ious = iou_matrix(t, p)
        c = np.array([matched_counts(t, p, th, ious) for th in IOUS])
        counts += c
        ap = c[:, 0] / np.maximum(c.sum(axis=1), 1)
        per_image.append(ap)
        s, n = separated_pairs(t, p)
        sep, pairs = sep + s, pairs + n
        if names is not None:
            rows.append({"name": names[k], "objects": int(ious.shape[0]),
                         "predicted": int(ious.shape[1]), "ap50": round(float(ap[0]), 4),
                         "map": round(float(ap.mean()), 4), "touching_pairs": n,
                         "touching_separated": s})
    ap = counts[:, 0] / np.maximum(counts.sum(axis=1), 1)
    per_image = np.array(per_image).reshape(-1, len(IOUS))
    out = {"ap50": round(float(per_image[:, 0].mean()), 4) if len(per_image) else 0.0,
           "map": round(float(per_image.mean()), 4) if len(per_image) else 0.0,
           "ap50_pooled": round(float(ap[0]), 4), "map_pooled": round(float(ap.mean()), 4),
           "touching_separated": round(sep / max(pairs, 1), 4), "touching_pairs": pairs,
           "tp_fp_fn_at_0.5": counts[0].tolist()}
    if names is not None:
        out["images"] = rows
    return out


def semantic_scores(truths, preds, names=None) -> dict:
    """Class maps of several images scored against their truth: the pixel error averaged
    over the images, and each class's IoU and Dice over all pixels of all images (classes
    that appear in neither are left out). With ``names``, ``images`` lists each image's
    pixel error."""
    n = 1 + max(max(int(np.max(t)), int(np.max(p))) for t, p in zip(truths, preds))
    inter, t_sum, p_sum = np.zeros(n), np.zeros(n), np.zeros(n)
    errors = []
    for t, p in zip(truths, preds):
        t, p = np.asarray(t).ravel(), np.asarray(p).ravel()
        inter += np.bincount(t[t == p], minlength=n)
        t_sum += np.bincount(t, minlength=n)
        p_sum += np.bincount(p, minlength=n)
        errors.append(float(np.mean(t != p)))
    present = (t_sum + p_sum) > 0
    iou_c = {c: round(float(inter[c] / (t_sum[c] + p_sum[c] - inter[c])), 4)
             for c in range(n) if present[c]}
    dice_c = {c: round(float(2 * inter[c] / (t_sum[c] + p_sum[c])), 4)
              for c in range(n) if present[c]}
    out = {"pixel_error": round(float(np.mean(errors)), 4), "iou": iou_c, "dice": dice_c,
           "mean_iou_foreground": round(float(np.mean([v for c, v in iou_c.items() if c])), 4)
           if any(c for c in iou_c) else None}
    if names is not None:
        out["images"] = [{"name": nm, "pixel_error": round(e, 4)}
                         for nm, e in zip(names, errors)]
    return out
