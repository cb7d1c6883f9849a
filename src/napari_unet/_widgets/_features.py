"""The measurements of a segmentation's objects as its Labels layer's *features*: shown
under the cursor, in napari's *Features table widget* (which saves them as CSV), and kept
true to the labels while the user corrects them."""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer

from ..measure import measure, measured
from ._runner import EngineRun

#: Labels of at most this many pixels (4096²) are measured again after each edit, in a
#: worker thread (0.45 s on a 2-core CPU); larger ones lose their measurements when edited,
#: rather than keep figures that are no longer true.
LIVE_PIXELS = 4096 * 4096
#: How long after the last stroke the measurements are taken again.
AFTER_EDIT_MS = 300

#: The measuring of each segmentation layer shown (by its ``unique_id``: the viewer hands a
#: plugin a new proxy of a layer each time), until the layer is removed.
_LIVE: dict = {}


def pixel_size(layer) -> tuple[tuple[float, float] | None, str | None]:
    """The pixel size of ``layer``'s last two axes and its unit, where napari knows a unit
    of length for them (an image opened with its physical pixel size), else (None, None)."""
    units = getattr(layer, "units", None)
    if not units or len(units) < 2 or units[-1] != units[-2] or str(units[-1]) == "pixel":
        return None, None
    scale = np.asarray(layer.scale, float)[-2:]
    return (float(scale[0]), float(scale[1])), f"{units[-1]:~P}"


def measuring(gen, image, placed, linked: bool):
    """``gen``, a prediction of ``image`` (a layer's data, placed as ``placed``; its
    planes ``linked``), whose result's objects are then measured in the thread that runs
    it."""
    size, unit = pixel_size(placed)
    return measured(gen, image, pixel_size=size, unit=unit, linked=linked)


def show_features(viewer, layer, features: dict | None, image=None, placed=None,
                  classes: bool = False) -> bool:
    """Give the Labels ``layer`` of ``viewer`` the measurements ``features`` of its
    objects (none: not measured), taken in ``image`` (placed as ``placed``); its
    edits from now on measure them again (:data:`LIVE_PIXELS`). Returns whether it is
    measured for the first time."""
    layer.features = features or {}
    live = _LIVE.get(layer.unique_id)
    first = live is None or live.source is None
    if live is None:
        live = _LIVE[layer.unique_id] = _Live(viewer, layer)
    live.show(None if features is None else (image, placed, classes))
    return first and features is not None


class _Live:
    """Measures a segmentation layer again a moment after the user's last stroke in it, in
    a worker thread; measurements overtaken by another stroke (or by a new segmentation
    in the layer) are dropped, and taken again once the run in flight has ended."""

    def __init__(self, viewer, layer) -> None:
        self.layer = layer
        self.source = None  # (image, placed, classes) of the measurements shown
        self.changes = 0  # strokes and new segmentations in the layer so far
        self.run = None  # the measuring in flight
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(AFTER_EDIT_MS)
        self.timer.timeout.connect(self.measure)
        layer.events.paint.connect(self._painted)
        viewer.layers.events.removed.connect(self._removed)

    def show(self, source) -> None:
        """The layer's features were just measured in ``source`` (None: not measured)."""
        self.source = source
        self.changes += 1

    def _painted(self, _event) -> None:
        self.changes += 1
        self.timer.start()

    def _removed(self, event) -> None:
        if event.value.unique_id == self.layer.unique_id:  # its image let go
            self.source = None
            _LIVE.pop(self.layer.unique_id, None)

    def measure(self) -> None:
        if self.source is None or self.run is not None:  # in flight: again when it ends
            return
        layer = self.layer
        image, placed, classes = self.source
        labels = layer.data
        if not isinstance(labels, np.ndarray) or labels.size > LIVE_PIXELS:
            layer.features = {}
            self.source = None
            show_info(f"The measurements of '{layer.name}' were removed: it is too large (or "
                      "on disk) to measure again after each edit; predict again to measure "
                      "it.")
            return
        size, unit = pixel_size(placed)
        changes = self.changes

        def again():  # the labels are read as they are; a stroke meanwhile drops them
            return measure(labels, image, pixel_size=size, unit=unit, classes=classes)
            yield  # a generator, as every run is

        def done(table) -> None:
            if table is not None and self.changes == changes and self.source is not None:
                layer.features = table

        def ended() -> None:
            self.run = None
            if self.changes != changes and self.source is not None:
                self.timer.start()

        self.run = EngineRun(again(), on_event=lambda _event: None, on_done=done,
                             on_finished=ended).start()
