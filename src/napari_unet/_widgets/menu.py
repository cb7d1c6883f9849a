"""The layer context menu entry *Segment > Segment with a U-Net…*: docks the Predict widget
with the selected image layer chosen."""

from __future__ import annotations

from napari.layers import Image
from napari.viewer import Viewer


def segment_selected(viewer: Viewer) -> None:
    """Open the Predict widget for the selected image layer."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Predict")
    layer = viewer.layers.selection.active
    if isinstance(layer, Image):
        widget.image.setCurrentText(layer.name)
