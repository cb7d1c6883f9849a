"""Which channels of a file a model reads: the file's own axes decide, not its shape.

A Fiji hyperstack of two channels ``(Z, C, Y, X)`` has the shape of a time-lapse of
z-stacks; read by its shape alone, a single-channel model would segment every channel as
a plane of its own. Files name their axes (ImageJ's and OME-TIFF's ``C``, a colour TIFF's
samples ``S``, OME-Zarr's ``c``); with those, a file of several channels either has the
channel count of the model (moved last, as the engine holds channels), or gives one
channel chosen by the user (counted from 1, as Fiji counts them), or is refused in a
sentence.
"""

from __future__ import annotations

import numpy as np

from .data import grey_of_colour, image_for_model
from .errors import InputError
from .predict import looks_like_rgb


def channel_axis(image, axes: str | None) -> int | None:
    """The axis of ``image`` that holds its channels (more than one), as the file's
    ``axes`` letters say (``C`` or ``S``, either case); for a file that names none, the
    last axis of a colour image ``(H, W, 3|4)``. None if there is none."""
    if axes and len(axes) == image.ndim:
        for k, letter in enumerate(axes.upper()):
            if letter in "CS" and image.shape[k] > 1:
                return k
        return None
    if axes is None and image.ndim == 3 and looks_like_rgb(image):
        return image.ndim - 1
    return None


def _described(axes: str | None, axis: int) -> str:
    if not axes:
        return "colour"
    if axes.islower():  # OME-Zarr's, as open_zarr_axes returns them (channels moved last)
        return "its axis c"
    return "colour samples" if axes[axis] == "S" else f"axes {axes}"


def for_model(image, axes: str | None, channels: int, channel: int | None = None,
              name: str = "image", option: str = "--channel"):
    """``image`` (numpy or Dask) read from a file with ``axes``, laid out for a model of
    ``channels`` input channels: channel ``channel`` alone (counted from 1), else the
    channel axis moved last; a file without a channel axis as
    :func:`napari_unet.data.image_for_model` lays it out. Returns the image and its axes
    (channels last as ``C``; None where the file named none). ``option`` names where the
    channel is chosen (the command line's ``--channel``, a widget's *Channel*), or, in
    lower case, a phrase that says how (for files that no widget shows)."""
    how = (f"with {option}" if option.startswith("-") else
           f"under {option}" if option[:1].isupper() else option)
    axis = channel_axis(image, axes)
    letters = axes.upper() if axes and len(axes) == image.ndim else None
    if channel is not None:
        if channels != 1:
            raise InputError(f"{option} picks one channel for a model of one channel; this "
                             f"model reads {channels}: leave {option} out.")
        if axis is None:
            raise InputError(f"{name} has a single channel; leave {option} out.")
        n = int(image.shape[axis])
        if not 1 <= channel <= n:
            raise InputError(f"{option} {channel}: {name} has {n} channels (1 to {n}).")
        picked = image[(slice(None),) * axis + (channel - 1,)]
        return picked, letters and letters[:axis] + letters[axis + 1:]
    if axis is None:
        return image_for_model(image, rgb=False, channels=channels), letters
    n = int(image.shape[axis])
    moved = np.moveaxis(image, axis, -1)
    moved_axes = letters and letters[:axis] + letters[axis + 1:] + "C"
    if channels == 1 and n in (3, 4) and grey_of_colour(moved)[0] is not None:
        return moved, moved_axes  # a grey image saved in colour: the engine reads it as grey
    if channels == 1:
        raise InputError(f"{name} has {n} channels ({_described(axes, axis)}), and the model "
                         f"reads one: choose the channel that shows the cells {how} "
                         f"(1 to {n}, as Fiji counts them).")
    if n != channels and not (channels == 3 and n == 4):  # the engine drops alpha
        raise InputError(f"{name} has {n} channels ({_described(axes, axis)}), and the model "
                         f"reads {channels}.")
    return moved, moved_axes


def result_axes(axes: str | None) -> tuple[str | None, str | None]:
    """The axes of the labels and of the probabilities of an image of ``axes`` (as
    :func:`for_model` returns them): ``"ZYX"`` and ``"ZCYX"`` for ``"ZYXC"``."""
    if not axes:
        return None, None
    labels = axes[:-1] if axes.endswith("C") else axes
    return labels, labels[:-2] + "C" + labels[-2:]
