"""Labels in, training targets out: class maps and the paper's weight map.

Instance labels (0 = background, 1..N = objects) become

* ``two_class`` (the paper): background 0 / foreground 1, where the pixels at which two
  objects touch are set to background, so every object is ringed by a background line;
* ``three_class``: background 0 / interior 1 / boundary 2;
* ``distance``: the two-class map plus, for every object pixel, its distance to the
  object's border divided by the largest such distance in the object (0 outside objects,
  1 at each object's centre), which the network regresses. The two are packed into one
  integer map, ``class + 2 * round(distance * DISTANCE_LEVELS)``, so that patches of it are
  cut, deformed (nearest neighbour) and batched like any class map; the loss unpacks it.
* ``offsets``: the two-class map plus, for every object pixel, the vector to its object's
  centre, which the network regresses (in units of :data:`OFFSET_SCALE` px). A vector
  field does not survive rotations and elastic deformation as values do, so what is packed
  is the object ids, ``class + 2 * id``; the loss computes the centres of the (deformed)
  objects in each patch and the vectors to them.

The weight map is the paper's equation (2),
``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))``, with ``w_c`` balancing
class frequencies and ``d1``, ``d2`` the distances to the nearest and second-nearest object.
The border term is applied to the pixels that are not object interior (background and
separating lines), the pixels Fig. 3d of the paper highlights. It is computed in a window
around each object: beyond ``d1 + d2 = sigma * sqrt(2 ln 1e6)`` the term is below
``1e-6 * w0`` and is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError

_CUTOFF = math.sqrt(2 * math.log(1e6))  # in units of sigma
_MAX_CLASS_WEIGHT = 10.0
#: Quantisation of the packed distance target (steps of 0.001).
DISTANCE_LEVELS = 1000
#: Offset channels hold the vector to the object's centre divided by this (pixels).
OFFSET_SCALE = 10.0


def compact_ids(labels: np.ndarray) -> np.ndarray:
    """Instance labels numbered sparsely, their largest id beyond their pixel count (ids
    up to 2**63 from another tool), renumbered 1..n in the order of their ids, 0 kept;
    other labels as they are. Counting objects by id then takes memory of the image's
    size, not of its largest id."""
    lab = np.asarray(labels)
    if lab.size == 0 or int(lab.max()) < lab.size:
        return lab
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(lab)[0]


#: Instance labels that cover a tenth of their image or more with objects of a median area
#: under this many pixels are an image given as labels (every grey level's connected pieces
#: taken for cells: a median of 1-2 px on DSB 2018 and ISBI 2012 images; a real labelling's
#: cells, even bacteria 5 px across, are ten times larger, 49 px and more on DSB 2018's
#: labels; spots marked a pixel each cover far less of the image).
IMAGE_AS_LABELS_AREA = 4


def looks_like_an_image(labels: np.ndarray) -> str | None:
    """What makes instance ``labels`` look like an image rather than labels (the image and
    its labels given the other way round, an image opened as labels), as a clause, or None:
    every grey level's connected pieces would be taken for cells, thousands of them a
    pixel or two large."""
    lab = np.asarray(labels)
    covered = np.count_nonzero(lab)
    if covered < lab.size / 10:
        return None
    left, right = lab[..., :-1], lab[..., 1:]
    if np.count_nonzero((left != right) & (left > 0) & (right > 0)) < covered / 10:
        return None  # objects that meet their own value: labels (3.7 % at most on DSB 2018)
    areas = np.bincount(relabel_objects(compact_ids(lab)).ravel())[1:]
    areas = areas[areas > 0]
    median = float(np.median(areas)) if areas.size else 0.0
    if areas.size >= 100 and median < IMAGE_AS_LABELS_AREA:
        return (f"they hold {areas.size:,} objects of {median:g} px (the median) over "
                f"{covered / lab.size:.0%} of it")
    return None


def relabel_objects(labels: np.ndarray) -> np.ndarray:
    """Instance labels with one id per object: every connected region (8-neighbourhood) of
    one value becomes its own object.

    A mask with a single object value (0/1, 0/255, bool) becomes its connected components,
    and so do labels that reuse a value for separate cells (touching cells painted in two
    alternating values, say): otherwise all cells of one value would be one object, whose
    weight map and separating lines are those of a single cell. Labels whose every value is
    one connected object come back as they are.
    """
    from skimage.measure import label

    lab = np.asarray(labels)
    regions, n = label(lab, background=0, connectivity=2, return_num=True)
    values = np.unique(lab)
    if n == np.count_nonzero(values) and lab.dtype != bool:
        return lab
    return regions.astype(np.int32)


def touching_border(labels: np.ndarray) -> np.ndarray:
    """Pixels of an object that have a pixel of another object among their 8 neighbours."""
    lab = np.asarray(labels)
    padded = np.pad(lab, 1, mode="constant")
    h, w = lab.shape
    border = np.zeros(lab.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            nb = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            border |= (nb != 0) & (nb != lab)
    return border & (lab != 0)


def nearest_two_distances(labels: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances of every pixel to the nearest and second-nearest object.

    Exact wherever the distance is at most ``cutoff``; ``inf`` where no object lies within
    ``cutoff`` (the window around each object extends that far).
    """
    lab = np.asarray(labels)
    d1 = np.full(lab.shape, np.inf, np.float32)
    d2 = np.full(lab.shape, np.inf, np.float32)
    margin = int(math.ceil(cutoff))
    for idx, box in enumerate(ndi.find_objects(lab), start=1):
        if box is None:
            continue
        win = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, n))
            for s, n in zip(box, lab.shape)
        )
        d = ndi.distance_transform_edt(lab[win] != idx).astype(np.float32)
        a, b = d1[win], d2[win]
        closer = d < a
        b[...] = np.where(closer, a, np.minimum(b, d))
        a[...] = np.where(closer, d, a)
    return d1, d2


def normalized_distance(labels: np.ndarray) -> np.ndarray:
    """Each object pixel's Euclidean distance to the nearest pixel outside its object
    (background or another object), divided by the object's largest one; 0 elsewhere.

    The image's edge is not an object border (prediction mirrors the image there).
    """
    lab = np.asarray(labels)
    out = np.zeros(lab.shape, np.float32)
    for idx, box in enumerate(ndi.find_objects(lab), start=1):
        if box is None:
            continue
        win = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n))
                    for s, n in zip(box, lab.shape))
        inside = lab[win] == idx
        # the image's edge is no border: prediction mirrors the image there, and the
        # distance to the nearest outside pixel is the same in the mirrored image
        d = (ndi.distance_transform_edt(inside) if not inside.all()
             else ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1])
        top = d.max()
        if top > 0:
            out[win] = np.where(inside, d / top, out[win])
    return out


def pack_distance(cls: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """One integer map holding a two-class map and a 0..1 distance map."""
    q = np.rint(np.clip(distance, 0, 1) * DISTANCE_LEVELS).astype(np.int64)
    return cls.astype(np.int64) + 2 * q


def unpack_distance(packed):
    """``(classes, distance)`` of :func:`pack_distance`'s map (numpy or torch)."""
    return packed % 2, (packed // 2) / DISTANCE_LEVELS


def pack_ids(cls: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One integer map holding a two-class map and the object ids (made sequential)."""
    from skimage.segmentation import relabel_sequential

    ids = relabel_sequential(np.asarray(labels).astype(np.int64))[0]
    return cls.astype(np.int64) + 2 * ids


def unpack_ids(packed):
    """``(classes, ids)`` of :func:`pack_ids`'s map (numpy or torch)."""
    return packed % 2, packed // 2


def border_weights(labels: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """The border term ``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` for every pixel."""
    if w0 == 0:
        return np.zeros(labels.shape, np.float32)
    d1, d2 = nearest_two_distances(labels, _CUTOFF * sigma)
    total = d1 + d2
    with np.errstate(over="ignore", invalid="ignore"):
        term = w0 * np.exp(-(total**2) / (2.0 * sigma**2))
    term[~np.isfinite(total)] = 0.0
    return term.astype(np.float32)


def class_weights(target: np.ndarray, n_classes: int, balance: bool = True,
                  region: np.ndarray | None = None) -> np.ndarray:
    """``w_c`` per pixel: the most frequent class weighs 1, rarer ones more (at most 10).

    With ``balance=False`` every class weighs 1. With a boolean ``region`` (where the labels
    are complete) the classes are counted there only, and pixels outside weigh 0.
    """
    per_class = np.ones(n_classes)
    if balance:
        counted = target if region is None else target[region]
        counts = np.bincount(counted.ravel(), minlength=n_classes).astype(np.float64)
        present = counts > 0
        per_class[present] = np.minimum(counts.max() / counts[present], _MAX_CLASS_WEIGHT)
    weights = per_class[target].astype(np.float32)
    return weights if region is None else weights * region


def instance_targets(labels: np.ndarray, *, target: str = "two_class", w0: float = 10.0,
                     sigma: float = 5.0, balance: bool = True,
                     region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class map and weight map for instance labels (see the module docstring); with a
    boolean ``region``, only the pixels in it carry weight (:func:`class_weights`)."""
    lab = relabel_objects(np.asarray(labels))
    objects = lab != 0
    if target in ("two_class", "distance", "offsets"):
        cls = (objects & ~touching_border(lab)).astype(np.int64)
        n_classes = 2
    elif target == "three_class":
        from skimage.segmentation import find_boundaries

        boundary = find_boundaries(lab, mode="inner") & objects
        cls = np.where(boundary, 2, objects.astype(np.int64)).astype(np.int64)
        n_classes = 3
    else:
        raise InputError(f"unknown instance target {target!r}.")
    weights = class_weights(cls, n_classes, balance, region)
    border = np.where(cls != 1, border_weights(lab, w0, sigma), 0.0).astype(np.float32)
    weights += border if region is None else border * region
    if target == "distance":
        cls = pack_distance(cls, normalized_distance(lab))
    elif target == "offsets":
        cls = pack_ids(cls, lab)
    return cls, weights


def semantic_classes(labels: np.ndarray) -> np.ndarray:
    """Class indices of a semantic mask; a 0/255 mask becomes 0/1."""
    lab = np.asarray(labels)
    values = np.unique(lab)
    if set(values.tolist()) <= {0, 255} and 255 in values:
        return (lab == 255).astype(np.int64)
    return lab.astype(np.int64)


#: More classes than this, each a single object, read as objects numbered 1..N.
OBJECT_LIKE_CLASSES = 8


def numbered_objects(classes: Sequence[np.ndarray], present: np.ndarray) -> bool:
    """Whether semantic class maps look like instance labels: more than
    :data:`OBJECT_LIKE_CLASSES` classes (``present``: the values found in them, background
    included), each of them one connected region in every image (planes of a stack apart)
    that holds it."""
    if len(present) - 1 <= OBJECT_LIKE_CLASSES:
        return False
    for cls in classes:
        cls = np.asarray(cls)
        for plane in cls.reshape(-1, *cls.shape[-2:]):
            for k, box in enumerate(ndi.find_objects(plane), start=1):
                if box is not None and ndi.label(plane[box] == k)[1] > 1:
                    return False
    return True


#: An image is said to hold unlabelled cells when it has at least this many regions that
#: look like its labelled ones but carry no label (and at least
#: :data:`UNLABELLED_SHARE` of the labelled count).
UNLABELLED_AT_LEAST = 3
UNLABELLED_SHARE = 0.2


def unlabelled_regions(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The regions of ``image`` (channels last) that look like the labelled objects of
    ``truth`` (instance labels) but lie apart from every one of them, numbered 1..K: the
    connected regions on the objects' side of the midpoint between the objects' and the
    rest's median intensity, at least half an object's mean area, and more than 2 px from
    any label. Where the labels are complete there are (nearly) none: none that count
    (:func:`left_unlabelled`) on all 415 labelled images of DSB 2018's ``train/`` and
    ``val/``, against 98–99 % of them with half or three quarters of their nuclei left
    unlabelled (benchmarks/RESULTS.md, "Mistakes in the labels")."""
    none = np.zeros(np.shape(truth), np.int32)
    grey = np.asarray(image, np.float32)
    grey = grey.mean(axis=-1) if grey.ndim == 3 else grey
    inside = truth > 0
    n = len(np.unique(truth[inside]))
    if n == 0 or inside.all():
        return none
    cell, rest = float(np.median(grey[inside])), float(np.median(grey[~inside]))
    if cell == rest:
        return none
    like = grey > (cell + rest) / 2 if cell > rest else grey < (cell + rest) / 2
    regions, k = ndi.label(like)
    if k == 0:
        return none
    near = np.zeros(k + 1, bool)
    near[np.unique(regions[ndi.binary_dilation(inside, iterations=2)])] = True
    keep = np.bincount(regions.ravel(), minlength=k + 1) >= 0.5 * inside.sum() / n
    keep &= ~near
    keep[0] = False
    ids = np.zeros(k + 1, np.int32)
    ids[keep] = np.arange(1, int(keep.sum()) + 1)
    return ids[regions]


#: An object of labels that reuse a value (a mask) looks like touching cells joined when it
#: is larger than this many times the median object and less convex than this solidity.
JOINED_SIZE = 1.5
JOINED_SOLIDITY = 0.9
#: The training warns of joined cells from this many such objects on (over all images).
JOINED_AT_LEAST = 2


def joined_cells(labels: np.ndarray, objects: np.ndarray | None = None) -> int:
    """How many objects of ``labels`` look like touching cells painted with one value
    (:func:`joined_objects`)."""
    return len(joined_objects(labels, objects)[1])


def joined_objects(labels: np.ndarray, objects: np.ndarray | None = None
                   ) -> tuple[np.ndarray, list[int]]:
    """The objects of ``labels`` (:func:`relabel_objects`, or ``objects`` where the caller
    found them already) and the ids of those that look like touching cells painted with one
    value, where
    the labels reuse values (a 0/1 mask: every connected region is taken as one object):
    objects over :data:`JOINED_SIZE` times the median object's area whose solidity (area
    over convex hull) is below :data:`JOINED_SOLIDITY`. 0 for labels that give every cell
    its own value, and for fewer than 3 objects. On DSB 2018's 415 labelled images saved as
    masks, 94 % of such objects are joined nuclei, and 30 images warn (at least
    :data:`JOINED_AT_LEAST`) every time (benchmarks/RESULTS.md, "Mistakes in the labels")."""
    from skimage.measure import regionprops

    lab = np.asarray(labels)
    objects = relabel_objects(lab) if objects is None else objects
    if objects is lab:  # every value one object: nothing was joined by reuse
        return objects, []
    props = regionprops(objects)
    if len(props) < 3:
        return objects, []
    median = float(np.median([p.area for p in props]))
    return objects, [p.label for p in props
                     if p.area > JOINED_SIZE * median and p.solidity < JOINED_SOLIDITY]


def left_unlabelled(image: np.ndarray, truth: np.ndarray,
                    region: np.ndarray | None = None) -> int:
    """:func:`unlabelled_regions` counted by :func:`counted_unlabelled`."""
    return counted_unlabelled(unlabelled_regions(image, truth), truth, region)


def counted_unlabelled(found: np.ndarray, truth: np.ndarray,
                       region: np.ndarray | None = None) -> int:
    """How many of the regions ``found`` (:func:`unlabelled_regions`) there are, where they
    are at least :data:`UNLABELLED_AT_LEAST` and :data:`UNLABELLED_SHARE` of the labelled
    objects of ``truth`` (what the training warns of), else 0. With ``region`` (where the
    labels are said to be complete), only the regions and objects that lie mostly in it
    count."""
    objects = np.asarray(truth)
    if region is not None:
        region = np.asarray(region, bool)
        found = _mostly_in(found, region)
        objects = _mostly_in(objects, region)
    count = np.count_nonzero(np.bincount(found.ravel())[1:])
    n = np.count_nonzero(np.bincount(objects.ravel())[1:])
    return int(count) if count >= max(UNLABELLED_AT_LEAST, UNLABELLED_SHARE * n) else 0


def _mostly_in(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``labels`` with only the objects that have at least half their pixels in
    ``region``."""
    size = np.bincount(labels.ravel())
    inside = np.bincount(labels[region].ravel(), minlength=size.size)
    keep = inside * 2 >= size
    keep[0] = False
    return np.where(keep[labels], labels, 0)


def semantic_targets(labels: np.ndarray, n_classes: int, balance: bool = True,
                     region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class map and class-balancing weights for semantic labels 0..K (weight only in
    ``region`` if given)."""
    cls = semantic_classes(labels)
    return cls, class_weights(cls, n_classes, balance, region)
