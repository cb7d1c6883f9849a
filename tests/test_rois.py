"""Each object as an ImageJ ROI (``napari_unet.rois``): the polygons give back the objects'
pixels as ImageJ fills them, and the ``.zip`` holds what Fiji's ROI Manager reads."""

import numpy as np
import pytest
import roifile
from skimage.draw import polygon2mask

import napari_unet.rois as rois_module
from napari_unet.errors import InputError
from napari_unet.rois import imagej_rois, outlines, write_rois
from napari_unet.synthetic import touching_cells


def _filled(shape, polygon):
    """The pixels whose centres lie inside ``polygon`` (ImageJ's x, y), as ImageJ fills."""
    return polygon2mask(shape, np.stack([polygon[:, 1] - 0.5, polygon[:, 0] - 0.5], axis=1))


def test_each_outline_gives_back_its_objects_pixels():
    """Touching cells (numbered far apart), cells cut by the image's edges and a single
    pixel: each polygon, filled as ImageJ fills it, is its object."""
    labels = touching_cells((120, 100), n_cells=14, radius=12, seed=3)[1].astype(np.int64)
    labels *= 10**9
    labels[0, 99] = 7  # a single pixel in a corner
    found = outlines(labels)
    assert [label for label, _ in found] == sorted(set(np.unique(labels)) - {0})
    touching = 0
    for label, polygon in found:
        assert np.array_equal(_filled(labels.shape, polygon), labels == label), label
        near = np.isin(labels[1:] * (labels[:-1] == label), [0, label], invert=True).any()
        touching += bool(near)
    assert touching >= 2  # the case that matters: cells touching cells


def test_an_object_in_pieces_is_its_largest_piece():
    labels = np.zeros((30, 30), np.uint16)
    labels[2:6, 2:6] = 5
    labels[10:20, 10:20] = 5
    (label, polygon), = outlines(labels)
    assert label == 5 and _filled(labels.shape, polygon).sum() == 100


def test_the_zip_holds_one_roi_per_object_placed_in_its_plane(tmp_path):
    plane = touching_cells((64, 64), n_cells=5, radius=8, seed=1)[1]
    path = write_rois(tmp_path / "cells_rois.zip", plane)
    read = roifile.roiread(path)
    assert sorted(r.name for r in read) == sorted(str(v) for v in np.unique(plane)[1:])
    assert not list(tmp_path.glob(".*.part"))  # written whole, then renamed
    stack = np.stack([plane, np.where(plane == 1, 0, plane)])  # each plane its own objects
    read = roifile.roiread(write_rois(tmp_path / "stack.zip", stack))
    assert len(read) == 2 * plane.max() - 1
    assert {r.position for r in read} == {1, 2} and read[-1].name.startswith("0002-")
    timelapse = np.stack([stack, stack])  # (T, Z, Y, X): its z and t
    last = imagej_rois(timelapse)[-1]
    assert (last.t_position, last.z_position) == (2, 2)


def test_labels_that_cannot_be_rois_are_refused_in_a_sentence(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no object"):
        write_rois(tmp_path / "none.zip", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="cannot be ImageJ ROIs"):
        write_rois(tmp_path / "5d.zip", np.ones((2, 2, 2, 8, 8), np.uint8))
    monkeypatch.setattr(rois_module, "MAX_ROIS", 3)
    with pytest.raises(InputError, match="too many ROIs"):
        write_rois(tmp_path / "many.zip", touching_cells((64, 64), n_cells=8, seed=1)[1])
    assert not list(tmp_path.iterdir())  # nothing written
