"""Dropping a model file on napari: the Predict widget opens with that model chosen.

Claims napari-unet model files (``.safetensors`` with napari-unet metadata, and damaged ones,
so that the user is told what is wrong) and bioimage.io packages (``.zip`` with an
``rdf.yaml``); returns no layer. A safetensors file of another tool (weights of another
network) is left to the plugins that read it.

Also opens the ``x.napari-unet`` file the Predict widget writes beside the zarr stores of a
large image's prediction (in ``~/napari-unet/predictions``): its labels and probability map
come back as the layers they were, placed as their image was, with their overview levels
(napari's own reader would open the labels as a grey image, and read a slide's whole plane
to show it), after napari was closed.
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
    """npe2 reader hook: a function for a model file or a stored prediction, else None."""
    if isinstance(path, (list, tuple)):
        return None
    p = Path(path)
    if (p.suffix.lower() == ".safetensors" and _ours(p)) or (
            p.suffix.lower() == ".zip" and _is_package(p)):
        return open_model
    if p.suffix.lower() == ".napari-unet":  # pyramid.POINTER
        return open_prediction
    return None


def open_prediction(path):
    """The layers of a stored prediction (an ``x.napari-unet`` file), with their levels."""
    from types import SimpleNamespace

    import zarr

    from ..errors import InputError
    from ..pyramid import levels_folder
    from ._outputs import shown_probabilities
    from ._placement import PLACEMENT

    p = Path(path)
    try:
        stored = json.loads(p.read_text())
        layers = []
        for entry in stored["layers"]:
            store = p.parent / entry["store"]
            arrays = [zarr.open_array(str(store), mode="r")]
            folder = levels_folder(store, entry["layer"])
            while (folder / str(len(arrays))).is_dir():
                arrays.append(zarr.open_array(str(folder / str(len(arrays))), mode="r"))
            meta = {k: entry[k] for k in ("name", *PLACEMENT) if k in entry}
            meta["multiscale"] = len(arrays) > 1
            if entry["layer"] != "labels":  # shown as the Predict widget shows them
                result = SimpleNamespace(mode=stored["mode"], probabilities=arrays[0])
                arrays = [shown_probabilities(result, a) for a in arrays]
                meta.update(colormap="magma", blending="additive")
            elif store.with_suffix(".csv").is_file():  # its objects' measurements
                meta.update(_features(store.with_suffix(".csv")))
            layers.append((arrays if len(arrays) > 1 else arrays[0], meta,
                           "labels" if entry["layer"] == "labels" else "image"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{p.name} could not be opened: {err} (are its zarr stores still "
                         "beside it?)") from None
    return layers


def _features(path: Path) -> dict:
    """The measurements in ``path`` as a Labels layer's features, where they are one row
    per label (not of planes labelled apart); a table that cannot be read is left out,
    with a warning, and the layers open without it."""
    import pandas
    from napari.utils.notifications import show_warning

    try:
        table = pandas.read_csv(path)
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        show_warning(f"The measurements in {path.name} could not be read ({err}); the "
                     "labels open without them.")
        return {}
    return {"features": table} if "index" in table and table["index"].is_unique else {}


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
