"""Dropping a model file on napari: the Predict widget opens with that model chosen.

Claims napari-unet model files (``.safetensors``) and bioimage.io packages (``.zip`` with an
``rdf.yaml``); returns no layer.
"""

from __future__ import annotations

import zipfile
from pathlib import Path


def _is_package(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return "rdf.yaml" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def get_reader(path):
    """npe2 reader hook: a function for a model file, otherwise ``None``."""
    if isinstance(path, (list, tuple)):
        return None
    p = Path(path)
    if p.suffix.lower() == ".safetensors" or (p.suffix.lower() == ".zip" and _is_package(p)):
        return open_model
    return None


def open_model(path):
    """Check the model file, then choose it in the Predict widget (docked if needed)."""
    import napari

    from ..checkpoint import load_checkpoint

    load_checkpoint(path)  # a bad file is refused here, with one sentence
    viewer = napari.current_viewer()
    if viewer is not None:
        _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Predict")
        widget.use_model_file(path)
    return [(None,)]
