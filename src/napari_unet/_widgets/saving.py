"""napari's *File > Save Layers* as ``.zip``: a Labels layer's objects as ImageJ ROIs for
Fiji's ROI Manager (:mod:`napari_unet.rois`)."""

from __future__ import annotations

from napari.utils.notifications import show_error

from ..errors import InputError
from ..rois import write_rois as write
from ..writers import levels_of


def write_rois(path: str, data, meta: dict) -> list[str]:
    """napari writer: the objects of a Labels layer (of its full resolution) as ImageJ
    ROIs; labels that cannot be ROIs are said in a sentence (napari, given nothing
    written, only says that the writer did not write)."""
    try:
        return [str(write(path, levels_of(data)[0]))]
    except InputError as err:
        show_error(f"'{meta.get('name', 'labels')}' was not saved as ImageJ ROIs: {err}")
        return []
