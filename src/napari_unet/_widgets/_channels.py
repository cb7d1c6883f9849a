"""The channels of an image layer opened from a file that names them.

napari opens a Fiji hyperstack ``(Z, C, Y, X)``, or (with its own reader) an OME-Zarr
``(C, Z, Y, X)``, as one layer with a slider for its channels; by its shape alone it is a
time-lapse of z-stacks. Its file says which axis is the channel one
(:func:`napari_unet.io.tiff_metadata`, :func:`napari_unet.io.zarr_axes`), and the widgets
read that.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..channels import channel_axis, for_model
from ..data import image_for_model
from ..io import is_zarr, tiff_metadata, zarr_axes
from ._forms import full_resolution, spin
from ._placement import placement


def file_axes(layer) -> str | None:
    """The axes the file ``layer`` was opened from names (ImageJ's ``ZCYX``, an OME-Zarr's
    ``CZYX`` ...), where they fit its data; None for a layer made otherwise, a colour layer,
    or a file that names none."""
    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or layer.rgb:
        return None
    axes = zarr_axes(path) if is_zarr(path) else tiff_metadata(path).get("axes")
    return axes if axes and len(axes) == full_resolution(layer).ndim else None


def _named_channels(layer):
    """The data of ``layer``, the axes its file names, and the channel axis among them
    (None where there is none)."""
    data = full_resolution(layer)
    axes = file_axes(layer)
    return data, axes, (channel_axis(data, axes) if axes else None)


def channel_count(layer) -> int:
    """How many channels the file of ``layer`` says it holds (1 where it names none)."""
    if layer is None:
        return 1
    data, _, axis = _named_channels(layer)
    return 1 if axis is None else int(data.shape[axis])


def layer_for_model(layer, channels: int, channel: int | None):
    """The data of ``layer`` laid out for a model of ``channels`` channels, and where its
    results go: the layer itself, or, where one channel was taken out of its file's
    channel axis, the layer's name, scale and translation without that axis."""
    data, axes, axis = _named_channels(layer)
    if axis is None:
        return image_for_model(data, rgb=layer.rgb, channels=channels), layer
    laid, _ = for_model(data, axes, channels, channel, name=f"layer '{layer.name}'",
                        option="Channel")
    kept = [a for a in range(layer.ndim) if a != axis]
    return laid, SimpleNamespace(name=layer.name, **placement(layer, axes=kept))


def channel_box(layers):
    """A box for the channel of the layer chosen in ``layers`` (a ``LayerCombo``), shown
    only while that layer's file holds several; 0 stands for all of them."""
    box = spin(0, 0, 64, special="all channels", tip="the channel to use, counted from 1, "
               "of an image whose file holds several (a Fiji hyperstack: napari shows its "
               "channels as a slider)")
    box.setPrefix("channel ")
    layers.currentTextChanged.connect(
        lambda _: box.setVisible(channel_count(layers.layer()) > 1))
    if channel_count(layers.layer()) <= 1:  # shown with its form otherwise
        box.hide()
    return box


def picked(layer, channel: int | None):
    """The data of ``layer``, or its channel ``channel`` (counted from 1) where its file
    names a channel axis; a channel the file does not hold is refused in a sentence."""
    data, axes, axis = _named_channels(layer)
    if not channel or axis is None:
        return data
    return for_model(data, axes, 1, channel, name=f"layer '{layer.name}'",
                     option="Channel")[0]


def read_as_channels(data, labels, rgb: bool, name: str) -> str | None:
    """The sentence that says an image layer of planes whose labels are one plane is read
    as one image of that many channels (as a channels-first file is), or None."""
    if rgb or np.ndim(labels) != 2 or np.ndim(data) != 3 or np.shape(data)[1:] != np.shape(labels):
        return None
    n = np.shape(data)[0]
    return (f"'{name}' has {n} planes and its labels one, so it is read as one image of {n} "
            "channels. If its planes are a z-stack or a time-lapse, label them in a labels "
            "layer of as many planes (napari's New labels layer makes one).")
