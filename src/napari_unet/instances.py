"""Class probabilities in, instance labels out.

* ``components`` (the paper): connected components of the foreground, whose separating
  background lines keep touching objects apart; each object is then grown back by the width
  of that line (1 px) into the background.
* ``watershed`` (seeded): for a two-class model, seeds are the components above the
  (calibrated, high) threshold, flooded down the foreground probability to 0.5,
  neighbours whose shared boundary is still clearly foreground are merged again, and objects
  that narrow to a neck, as two touching round cells do, are split there; for a
  three-class model (background / interior / boundary), seeds are the connected interiors,
  flooded over the boundary probability within the object mask, and objects are cut at
  necks likewise; for a 'distance' model,
  seeds are the cores of objects where the regressed normalised distance (smoothed)
  exceeds 0.5, flooded down the distance over the foreground (Naylor et al. 2019, "Segmentation of
  nuclei in histopathology images by deep regression of the distance map"); for an
  'offsets' model, every foreground pixel votes for the centre its regressed vector points
  to, the peaks of the votes are the objects' centres, and each pixel joins the centre
  nearest to its vote (centre voting, as Panoptic-DeepLab groups pixels by predicted
  centre offsets; Cellpose groups them by following predicted flows).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

_CROSS = ndi.generate_binary_structure(2, 1)
#: The 'auto' minimum object size: at least this many pixels, and
MIN_SIZE_FLOOR = 10
#: this share of the model's typical cell or of the image's median object, the smaller.
MIN_SIZE_SHARE = 0.2


def min_size_for(diameter: float | None, share: float = MIN_SIZE_SHARE) -> int:
    """``share`` of the area of a disc ``diameter`` px across, at least
    :data:`MIN_SIZE_FLOOR` (also without a diameter)."""
    if not diameter:
        return MIN_SIZE_FLOOR
    return max(MIN_SIZE_FLOOR, round(share * np.pi / 4 * diameter**2))


def auto_min_size(sizes, diameter: float | None, share: float = MIN_SIZE_SHARE) -> int:
    """The 'auto' minimum object size for one image, whose objects have ``sizes`` pixels
    and whose cells the model learnt ``diameter`` px across at this image's scale.

    ``share`` of the area of the model's typical cell (:func:`min_size_for`), or of this
    image's median object if that is smaller, so that an image of cells smaller than the
    model learnt keeps them; at least :data:`MIN_SIZE_FLOOR`, and only that for a model
    that records no cell size. Chosen on a development set of DSB 2018 nuclei
    (benchmarks/RESULTS.md)."""
    if not diameter:
        return MIN_SIZE_FLOOR
    sizes = np.asarray(sizes)
    sizes = sizes[sizes >= MIN_SIZE_FLOOR]
    limit = min_size_for(diameter, share)
    if sizes.size:
        limit = min(limit, share * float(np.median(sizes)))
    return max(MIN_SIZE_FLOOR, round(limit))


def remove_small_objects(labels: np.ndarray, min_size) -> np.ndarray:
    """``labels`` without the objects smaller than ``min_size`` pixels, numbered 1..n;
    ``min_size`` may also be a function of the objects' sizes (e.g. :func:`auto_min_size`
    with its diameter given)."""
    return _finish(np.asarray(labels), min_size)


def _finish(labels: np.ndarray, min_size) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    if labels.max() > 0 and (callable(min_size) or min_size > 1):
        sizes = np.bincount(labels.ravel())
        if callable(min_size):
            min_size = min_size(sizes[1:])
        small = sizes < min_size
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    out, _, _ = relabel_sequential(labels)
    dtype = np.uint16 if out.max() < 2**16 else np.uint32
    return out.astype(dtype)


def grow_labels(labels: np.ndarray, grow: int) -> np.ndarray:
    """Grow objects into the background by ``grow`` px (4-neighbour steps).

    For ``grow`` <= 2 this reaches the same pixels as a Euclidean growth by ``grow``. A
    background pixel next to several objects takes the first of its neighbours above, below,
    left and right, a rule that does not depend on the ids, so labelling block by block gives
    the same objects as labelling the whole image.
    """
    out = np.asarray(labels).copy()
    for _ in range(grow):
        padded = np.pad(out, 1)
        h, w = out.shape
        take = np.zeros_like(out)
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            nb = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            take = np.where(take == 0, nb, take)
        out = np.where(out == 0, take, out)
    return out


def components(foreground: np.ndarray, *, grow: int = 1, min_size: int = 10) -> np.ndarray:
    """Connected components (4-connected) of a boolean foreground, grown by ``grow`` px."""
    labels, _ = ndi.label(foreground, structure=_CROSS)
    return _finish(grow_labels(labels, grow), min_size)


def _keep_unseeded(labels: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """A watershed's ``labels`` (``n`` seeds) plus the parts of ``mask`` no seed reached,
    each as an object of its own."""
    rest, _ = ndi.label(mask & (labels == 0), structure=_CROSS)
    return np.where(rest > 0, rest + n, labels)


#: Two neighbouring objects of a two-class watershed whose shared boundary has a mean
#: foreground probability above this are one object that the high seed threshold split
#: (a model trained with the paper's weight map puts background between touching cells).
#: Chosen on a development set of DSB 2018 images outside the benchmark's training and test
#: images (benchmarks/RESULTS.md), together with the split at necks that follows it: it
#: removes more split single nuclei than it re-merges touching pairs.
MERGE_LEVEL = 0.6
#: An object is cut where it narrows to a neck whose half-width is below this share of the
#: radius of the smaller of the two parts it joins (:func:`split_at_necks`) ...
NECK_RATIO = 0.75
#: ... if each part keeps at least this share of the object. Both chosen on the DSB 2018
#: development set with the merge level above (benchmarks/RESULTS.md).
NECK_PART_SHARE = 0.15


def _boundary_pairs(labels: np.ndarray, values: np.ndarray):
    """Every pair of 4-neighbouring pixels of two different objects of ``labels`` (ids
    ``0..n``): the pair of objects as one key, ``lower id * (n + 1) + higher id``, and the
    lower of the two pixels' ``values``."""
    n = int(labels.max())
    keys, lows = [], []
    for a, b, va, vb in ((labels[:, :-1], labels[:, 1:], values[:, :-1], values[:, 1:]),
                         (labels[:-1], labels[1:], values[:-1], values[1:])):
        m = (a != b) & (a > 0) & (b > 0)
        keys.append(np.minimum(a[m], b[m]).astype(np.int64) * (n + 1) + np.maximum(a[m], b[m]))
        lows.append(np.minimum(va[m], vb[m]))
    return np.concatenate(keys), np.concatenate(lows)


def merge_split_objects(labels: np.ndarray, foreground_prob: np.ndarray,
                        level: float = MERGE_LEVEL) -> np.ndarray:
    """Merge neighbouring objects whose shared boundary is foreground.

    For every pair of 4-neighbouring pixels of two different objects, the lower of their
    two probabilities is the boundary's value there; pairs of objects whose boundary
    averages above ``level`` become one object (transitively).
    """
    labels = np.asarray(labels)
    n = int(labels.max())
    if n < 2:
        return labels
    keys, values = _boundary_pairs(labels, np.asarray(foreground_prob, np.float32))
    if not keys.size:
        return labels
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs, inverse = np.unique(keys, return_inverse=True)
    merged = pairs[np.bincount(inverse, values) / np.bincount(inverse) > level]
    graph = coo_matrix((np.ones(merged.size), (merged // (n + 1), merged % (n + 1))),
                       shape=(n + 1, n + 1))
    _, group = connected_components(graph, directed=False)
    return np.where(labels > 0, group[labels], 0)


def _neck_parts(mask: np.ndarray, ratio: float) -> np.ndarray | None:
    """One object's ``mask`` divided at its necks (:func:`split_at_necks`): 0 outside,
    1..k for the parts; None where it has only one maximum of its distance map."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    peaks = peak_local_max(dist, min_distance=1, labels=mask.astype(np.int32),
                           exclude_border=False)
    n = len(peaks)
    if n < 2:
        return None
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, n + 1)
    basins = watershed(-dist, markers, mask=mask)
    top = np.zeros(n + 1)
    top[1:] = dist[tuple(peaks.T)]
    # the pass between two neighbouring basins: the highest of the lower distances of the
    # pixel pairs across their boundary
    keys, values = _boundary_pairs(basins, dist)
    pairs, inverse = np.unique(keys, return_inverse=True)
    passes = np.full(len(pairs), -1.0)
    np.maximum.at(passes, inverse, values)
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k in np.argsort(-passes, kind="stable"):  # highest passes first
        a, b = root(int(pairs[k] // (n + 1))), root(int(pairs[k] % (n + 1)))
        if a != b and passes[k] >= ratio * min(top[a], top[b]):
            parent[b] = a
            top[a] = max(top[a], top[b])
    roots = np.array([root(i) for i in range(n + 1)])
    return roots[basins]


def split_at_necks(labels: np.ndarray, ratio: float = NECK_RATIO,
                   part_share: float = NECK_PART_SHARE,
                   min_part: int = MIN_SIZE_FLOOR) -> np.ndarray:
    """Cut objects where they narrow to a neck, as two round cells that touch do.

    The shape decides, not the probability: each object's distance to its border has a
    maximum in every round part; two parts stay apart where the highest pass between them
    (the neck's half-width) is below ``ratio`` times the smaller part's radius, and are one
    part otherwise (merged from the highest pass down, so a chain of small bumps along one
    cell never splits it). An object is cut only if each part keeps at least
    ``part_share`` of it and ``min_part`` pixels. The cuts follow the watershed of the
    distance map, the line a human would draw through the neck.
    """
    labels = np.asarray(labels)
    out = labels.astype(np.int64)
    new_id = int(labels.max()) + 1
    for i, sl in enumerate(ndi.find_objects(labels), 1):
        if sl is None:
            continue
        mask = labels[sl] == i
        area = int(mask.sum())
        smallest = max(min_part, part_share * area)
        if area < 2 * smallest:
            continue
        parts = _neck_parts(mask, ratio)
        if parts is None:
            continue
        ids, sizes = np.unique(parts[mask], return_counts=True)
        if len(ids) < 2 or sizes.min() < smallest:
            continue
        view = out[sl]
        for k in ids[1:]:
            view[parts == k] = new_id
            new_id += 1
    return out


def watershed_two_class(foreground_prob: np.ndarray, *, threshold: float = 0.5,
                        min_size: int = 10, merge: float | None = MERGE_LEVEL,
                        necks: float | None = NECK_RATIO) -> np.ndarray:
    """Seeded watershed on a two-class model's foreground probability.

    Seeds are the connected components above ``threshold`` (the calibrated one, high enough
    that touching objects fall apart); each is flooded down the probability into the
    foreground above 0.5 (or above ``threshold`` if that is lower), which gives objects
    back the extent the high threshold took from them and splits merged foreground where
    the probability dips between seeds. Foreground without a seed is kept as its own
    objects. Neighbours whose shared boundary averages a probability above ``merge`` are
    merged again (:func:`merge_split_objects`; None: no merging), and objects are then cut
    at necks narrower than ``necks`` times the radius of their parts
    (:func:`split_at_necks`; None: no cutting): touching cells the network drew no line
    between.
    """
    from skimage.segmentation import watershed

    mask = foreground_prob > min(threshold, 0.5)
    seeds, n = ndi.label(foreground_prob > threshold, structure=_CROSS)
    labels = _keep_unseeded(watershed(-foreground_prob, seeds, mask=mask), mask, n)
    if merge is not None:
        labels = merge_split_objects(labels, foreground_prob, merge)
    if necks is not None:
        labels = split_at_necks(labels, necks)
    return _finish(labels, min_size)


#: Seeds of a 'distance' model: where the normalised distance exceeds this, an object's
#: inner part, which touching objects do not share.
SEED_DISTANCE = 0.5


def watershed_distance(prob: np.ndarray, *, threshold: float = 0.5,
                       min_size: int = 10) -> np.ndarray:
    """Seeded watershed of a 'distance' model.

    The distance channel is smoothed (Gaussian, 1 px: single noisy pixels above the seed
    level would each seed an object); its cores above :data:`SEED_DISTANCE` are the seeds,
    flooded down the distance over the foreground (probability above ``threshold``).
    Foreground without a seed is kept as its own objects.
    """
    from skimage.segmentation import watershed

    mask = prob[1] > threshold
    dist = ndi.gaussian_filter(np.asarray(prob[-1], np.float32), 1.0)
    seeds, n = ndi.label(mask & (dist > SEED_DISTANCE), structure=_CROSS)
    labels = watershed(-dist, seeds, mask=mask)
    return _finish(_keep_unseeded(labels, mask, n), min_size)


#: Votes are smoothed by a Gaussian of this width (px) before their peaks are found, and
#: peaks closer than :data:`VOTE_MIN_DISTANCE` px are one centre. Chosen on the DSB 2018
#: development set (benchmarks/dsb_dev_postprocessing.py; of widths 1, 1.5, 2 and distances
#: 2, 3, 5: AP@0.5 0.781 at 1.5 / 3, 0.795 at 2 / 5), away from the test images.
VOTE_SIGMA = 2.0
VOTE_MIN_DISTANCE = 5


def _votes(prob: np.ndarray, fg: np.ndarray):
    """The foreground pixels (ys, xs), where their vectors point (vy, vx; clipped to the
    image), and how many point at each pixel."""
    h, w = fg.shape
    ys, xs = np.nonzero(fg)
    vy = np.clip(ys + prob[-2][ys, xs], 0, h - 1)
    vx = np.clip(xs + prob[-1][ys, xs], 0, w - 1)
    flat = np.rint(vy).astype(np.intp) * w + np.rint(vx).astype(np.intp)
    votes = np.bincount(flat, minlength=h * w).reshape(h, w).astype(np.float32)
    return ys, xs, vy, vx, votes


def vote_counts(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """How many foreground pixels (probability above ``threshold``) of an 'offsets' model's
    ``(C, H, W)`` output point at each pixel: bright spots are the centres objects are
    grouped around (:func:`vote_instances`)."""
    return _votes(prob, prob[1] > threshold)[-1]


def vote_instances(prob: np.ndarray, *, threshold: float = 0.5, min_size: int = 10,
                   sigma: float = VOTE_SIGMA, min_distance: int = VOTE_MIN_DISTANCE
                   ) -> np.ndarray:
    """Objects of an 'offsets' model: foreground pixels grouped by the centre they point to.

    Every pixel whose foreground probability exceeds ``threshold`` casts a vote where its
    vector (the last two channels, y and x, in pixels) points. The votes are counted per
    pixel and smoothed (Gaussian, ``sigma`` px); their local maxima at least
    ``min_distance`` px apart are the centres, and a centre that gathers fewer than
    ``min_size / 2`` votes is dropped. Each pixel joins the centre nearest to its vote.
    Pixels of separate foreground components are never joined: an object is one centre
    within one component. Objects are then grown by 1 px, as connected components are.
    """
    from skimage.feature import peak_local_max

    fg = prob[1] > threshold
    comp, n_comp = ndi.label(fg, structure=_CROSS)
    if n_comp == 0:
        return _finish(comp, min_size)
    h, w = fg.shape
    ys, xs, vy, vx, votes = _votes(prob, fg)
    smooth = ndi.gaussian_filter(votes, sigma) * (2 * np.pi * sigma**2)
    peaks = peak_local_max(smooth, min_distance=min_distance, threshold_abs=1.0,
                           exclude_border=False)
    vote = np.stack([vy, vx], 1)
    owner = np.zeros(len(ys), np.int64)
    if len(peaks):
        from scipy.spatial import cKDTree

        owner = cKDTree(peaks).query(vote)[1]
        keep = np.bincount(owner, minlength=len(peaks)) >= max(min_size / 2, 1)
        if keep.any() and not keep.all():  # drop the weak centres, assign again
            peaks = peaks[keep]
            owner = cKDTree(peaks).query(vote)[1]
    # one object per (foreground component, centre)
    key = comp[ys, xs].astype(np.int64) * (len(peaks) + 1) + owner
    _, ids = np.unique(key, return_inverse=True)
    labels = np.zeros((h, w), np.int64)
    labels[ys, xs] = ids.ravel() + 1
    return _finish(grow_labels(labels, 1), min_size)


def watershed_three_class(prob: np.ndarray, *, min_size: int = 10,
                          necks: float | None = NECK_RATIO) -> np.ndarray:
    """Interior components as seeds, flooded over the boundary probability; objects then
    cut at necks as in :func:`watershed_two_class` (None: not cut)."""
    from skimage.segmentation import watershed

    cls = np.argmax(prob, axis=0)
    seeds, _ = ndi.label(cls == 1, structure=_CROSS)
    mask = cls != 0
    labels = watershed(prob[2], seeds, mask=mask)
    if necks is not None:
        labels = split_at_necks(labels, necks)
    return _finish(labels, min_size)


def instances_from_probabilities(prob: np.ndarray, *, target: str = "two_class",
                                 method: str = "auto", threshold: float = 0.5,
                                 min_size: int = 10, pixel_size: float = 1.0,
                                 cut_necks: bool = True) -> np.ndarray:
    """Instance labels from ``(C, H, W)`` class probabilities of an instances model.

    ``method`` 'auto' is the seeded watershed of each target (for two-class models it was
    better than or equal to the paper's connected components on a development set of DSB
    2018 nuclei, see benchmarks/RESULTS.md); 'components' gives connected components.
    ``pixel_size``: how many pixels of ``prob`` one pixel the network saw spans (its output
    resized back to the image, :mod:`napari_unet.scale`); centre voting's distances scale
    with it. ``cut_necks``: the two- and three-class watersheds also cut objects at necks
    (:func:`split_at_necks`); off for cells that are not round. (A 'distance' model's
    cores already follow the shape: cutting its objects at necks scored lower on the
    development set.)"""
    if target == "three_class":
        if method == "components":
            return components(np.argmax(prob, axis=0) == 1, grow=2, min_size=min_size)
        return watershed_three_class(prob, min_size=min_size,
                                     necks=NECK_RATIO if cut_necks else None)
    if target == "offsets" and method != "components":
        return vote_instances(prob, threshold=threshold, min_size=min_size,
                              sigma=VOTE_SIGMA * pixel_size,
                              min_distance=max(1, round(VOTE_MIN_DISTANCE * pixel_size)))
    if target == "distance" and method != "components":
        return watershed_distance(prob, threshold=threshold, min_size=min_size)
    if method == "components":
        return components(prob[1] > threshold, min_size=min_size)
    return watershed_two_class(prob[1], threshold=threshold, min_size=min_size,
                               necks=NECK_RATIO if cut_necks else None)


def labels_from_probabilities(prob: np.ndarray, *, mode: str, target: str = "two_class",
                              threshold: float = 0.5, method: str = "auto",
                              min_size: int = 10, pixel_size: float = 1.0,
                              cut_necks: bool = True) -> np.ndarray:
    """Labels of a model's ``(C, H, W)`` probabilities: class indices for a semantic model
    (foreground above ``threshold`` for two classes), instances for an instances model
    (``pixel_size``, ``cut_necks``: see :func:`instances_from_probabilities`)."""
    if mode == "semantic":
        if prob.shape[0] == 2:
            return (prob[1] > threshold).astype(np.int32)
        return np.argmax(prob, axis=0).astype(np.int32)
    return instances_from_probabilities(prob, target=target, method=method,
                                        threshold=threshold, min_size=min_size,
                                        pixel_size=pixel_size, cut_necks=cut_necks)


def separated_objects(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where objects of a segmentation touch: ``(lines, ids)``.

    ``lines`` marks the pixels at which an object meets another one (where touching cells
    were split); ``ids`` are the objects that touch at least one other.
    """
    from .targets import touching_border

    lines = touching_border(labels)
    ids = np.unique(np.asarray(labels)[lines])
    return lines, ids[ids != 0]
