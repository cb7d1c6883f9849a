"""Dropping a model file on napari: the Predict widget opens with that model chosen.

Claims napari-unet model files (``.safetensors`` with napari-unet metadata, and damaged ones,
so that the user is told what is wrong) and bioimage.io packages (``.zip`` with an
``rdf.yaml``); returns no layer. A safetensors file of another tool (weights of another
network) is left to the plugins that read it.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path


def _is_package(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return "rdf.yaml" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _ours(path: Path) -> bool:
    """Whether a ``.safetensors`` file is napari-unet's to open: it holds napari-unet
    metadata, or its header cannot be read (then opening it says why)."""
    from ..checkpoint import MAX_HEADER_BYTES

    try:
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            if n > MAX_HEADER_BYTES:
                return True
            header = json.loads(fh.read(n))
        return "napari_unet" in (header.get("__metadata__") or {})
    except (OSError, struct.error, ValueError, AttributeError):
        return True


def get_reader(path):
    """npe2 reader hook: a function for a model file, otherwise ``None``."""
    if isinstance(path, (list, tuple)):
        return None
    p = Path(path)
    if (p.suffix.lower() == ".safetensors" and _ours(p)) or (
            p.suffix.lower() == ".zip" and _is_package(p)):
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
