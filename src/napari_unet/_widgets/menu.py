"""The entries of napari's *Layers* menu: *Segment > Segment with a U-Net…* docks the
Predict widget with the selected image layer chosen; *Measure > Measure objects
(napari-unet)* measures each object of the selected Labels layer (painted by hand, opened
from a file) into its features, as the Predict widget does its segmentations."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_info
from napari.viewer import Viewer

from ._outputs import MODEL
from ._pairs import named_after


def segment_selected(viewer: Viewer) -> None:
    """Open the Predict widget for the selected image layer."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Predict")
    layer = viewer.layers.selection.active
    if isinstance(layer, Image):
        widget.image.setCurrentText(layer.name)


def measure_selected(viewer: Viewer):
    """Measure the objects of the selected Labels layer (in the image layer it is named
    after, or the only one of its size) in a worker thread; they become its features, shown
    in napari's Features table widget. Returns the run (None: refused, and said)."""
    from ..measure import measure
    from ._features import pixel_size, show_features
    from ._runner import EngineRun

    layer = viewer.layers.selection.active
    if not isinstance(layer, Labels):
        show_info("Select a Labels layer to measure its objects.")
        return None
    if layer.multiscale or not isinstance(layer.data, np.ndarray):
        show_info(f"'{layer.name}' is read from disk, not held in memory: measure its files "
                  "with 'napari-unet measure' (or 'napari-unet predict --measure').")
        return None
    if layer.ndim >= 3 and layer.metadata.get(MODEL) and layer.features.shape[0] == 0:
        show_info(f"'{layer.name}' holds planes (or time points) labelled apart, each "
                  "numbered from 1, which napari's one row per label cannot tell apart: "
                  "predict again with Link planes, or measure its file plane by plane with "
                  "'napari-unet measure'.")
        return None
    image = _image_of(viewer, layer)  # the pixel size: of the labels, else of the image
    source = layer if image is None or pixel_size(layer)[0] is not None else image
    size, unit = pixel_size(source)
    labels, pixels = layer.data, None if image is None else image.data

    def measuring():
        return measure(labels, pixels, pixel_size=size, unit=unit)
        yield  # a generator, as every run is

    def done(table) -> None:
        show_features(viewer, layer, table, pixels, source)
        viewer.window.add_plugin_dock_widget("napari", "Features table widget")
        where = f" in '{image.name}'" if image is not None else " (no image of its size)"
        show_info(f"Measured {len(table['index']):,} objects of '{layer.name}'{where}: "
                  "they are its features, listed in the Features table widget.")

    return EngineRun(measuring(), on_event=lambda _event: None, on_done=done).start()


def _image_of(viewer: Viewer, labels: Labels):
    """The image layer whose objects ``labels`` holds: the one it is named after ('cells'
    for 'cells labels'; the longest such name), else the only one of its size; or None."""
    def fits(layer) -> bool:
        shape = np.shape(layer.data)
        return not layer.multiscale and isinstance(layer.data, np.ndarray) and (
            shape == labels.data.shape or (layer.rgb and shape[:-1] == labels.data.shape))

    images = [layer for layer in viewer.layers if isinstance(layer, Image) and fits(layer)]
    named = sorted((i for i in images if named_after(labels.name, i.name)),
                   key=lambda i: len(i.name))
    if named:
        return named[-1]
    return images[0] if len(images) == 1 else None
