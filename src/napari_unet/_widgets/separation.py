"""Touching-cell separation view: the weight map before training, the splits after.

Both are computed in a thread, one of each at a time: a slider moved while the weight map is
being computed asks for one more computation with its latest value, so a large labels layer
(seconds per map) never freezes napari and a drag never queues a map per step. Only the
plane in view is read (a lazy layer's plane in the thread).
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError
from ..instances import separated_objects
from ..targets import (
    compact_ids,
    counted_unlabelled,
    instance_targets,
    joined_objects,
    unlabelled_regions,
)
from ._forms import LayerCombo, full_resolution, status_label
from ._in_view import part_in_view
from ._outputs import put_layer
from ._runner import WaitedFunctionWorker


def _slider(lo: int, hi: int, value: int) -> QSlider:
    s = QSlider(Qt.Horizontal)
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class _OneAtATime:
    """Runs ``fn()`` in a thread and hands its result to ``done`` on the GUI thread, one
    computation at a time; what is asked for meanwhile replaces what was waiting."""

    def __init__(self) -> None:
        self.worker = None
        self._waiting = None

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def submit(self, fn, done) -> None:
        if self.busy:
            self._waiting = (fn, done)
            return
        self.worker = create_worker(fn, _start_thread=False, _worker_class=WaitedFunctionWorker)
        self.worker.returned.connect(done)
        self.worker.finished.connect(self._finished)
        self.worker.start()

    def _finished(self) -> None:
        self.worker, waiting, self._waiting = None, self._waiting, None
        if waiting is not None:
            self.submit(*waiting)


def _reader(data):
    """A function that returns ``data``: a copy made now of an in-memory array (which the
    user may paint on meanwhile), a lazy one read when called (in the thread)."""
    if isinstance(data, np.ndarray):
        copy = data.copy()
        return lambda: copy
    return lambda: np.asarray(data)


def _weight_view(read, name: str, w0: float, sigma: float, read_image=None):
    """``(weights, separating borders, cells that touch, objects that look like touching
    cells painted with one label, regions of the image that look like cells but carry no
    label)`` of one labels plane (the last two None where there are none), or the sentence
    that says why there are none."""
    lab, joined = joined_objects(compact_ids(read()))
    if not lab.any():
        return f"labels layer '{name}' has no labelled cell."
    cls, weights = instance_targets(lab, w0=w0, sigma=sigma)
    lines = ((lab != 0) & (cls == 0)).astype(np.uint8)
    suspects = np.where(np.isin(lab, joined), lab, 0) if joined else None
    unlabelled = None
    if read_image is not None:
        found = unlabelled_regions(read_image(), lab)
        if counted_unlabelled(found, lab):  # as many as the training warns of
            unlabelled = found
    return weights, lines, len(np.unique(lab[lines > 0])), suspects, unlabelled


def _split_view(read):
    """``(separated cells, split lines, how many touch, how many objects)`` of a plane."""
    pred = np.asarray(read())
    lines, ids = separated_objects(pred)
    split = np.where(np.isin(pred, ids), pred, 0)
    total = len(np.unique(pred)) - (1 if (pred == 0).any() else 0)
    return split, lines.astype(np.uint8), len(ids), total


class SeparationWidget(QWidget):
    """Show the paper's weight map and the separating lines between touching cells."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.labels = LayerCombo(napari_viewer, Labels)
        self.image = LayerCombo(napari_viewer, Image, none="(none)")
        self.image.setToolTip("The labels' image: regions of it that look like the labelled "
                              "cells but carry no label are shown (they would be learnt as "
                              "background)")
        self.w0 = _slider(0, 50, 10)
        self.sigma = _slider(1, 30, 5)
        self.w0_label, self.sigma_label = QLabel(), QLabel()
        show = QPushButton("Show weight map")
        show.clicked.connect(self.show_weights)
        self.live = False
        self.weight_jobs, self.split_jobs = _OneAtATime(), _OneAtATime()
        self.w0.valueChanged.connect(self._changed)
        self.sigma.valueChanged.connect(self._changed)
        self.prediction = LayerCombo(napari_viewer, Labels)
        splits = QPushButton("Show separated cells")
        splits.clicked.connect(self.show_splits)
        self.status = status_label()

        before = QGroupBox("Before training: what the loss emphasises")
        f1 = QFormLayout(before)
        f1.addRow("Labels", self.labels)
        f1.addRow("Image", self.image)
        f1.addRow(self.w0_label, self.w0)
        f1.addRow(self.sigma_label, self.sigma)
        f1.addRow(show)
        after = QGroupBox("After prediction: which touching cells were split")
        f2 = QFormLayout(after)
        f2.addRow("Prediction", self.prediction)
        f2.addRow(splits)
        layout = QVBoxLayout(self)
        layout.addWidget(before)
        layout.addWidget(after)
        layout.addWidget(self.status)
        layout.addStretch()
        self._update_labels()

    def _update_labels(self) -> None:
        self.w0_label.setText(f"w0 = {self.w0.value()}")
        self.sigma_label.setText(f"sigma = {self.sigma.value()} px")

    def _changed(self) -> None:
        self._update_labels()
        if self.live:
            self.show_weights()

    def _plane(self, layer):
        """``(reader, box, where results go)``: a function that reads the 2D labels plane
        in view (the whole layer if it is 2D; of a slide, the part in view,
        :func:`part_in_view`): a copy made now of an in-memory layer, which the user may
        paint on; a lazy layer's plane is read when called, in the thread."""
        data = full_resolution(layer)
        if data.ndim > 2:
            data = data[self._in_view(data.shape[:-2])]
        data, box, placed = part_in_view(self.viewer, layer, data)
        return _reader(data), box, placed

    def _in_view(self, outer: tuple[int, ...]) -> tuple[int, ...]:
        """The index of the plane in view among planes ``outer`` (``(N,)`` for a stack,
        ``(T, Z)`` for a time-lapse of z-stacks)."""
        steps = self.viewer.dims.current_step[-2 - len(outer) : -2]
        return tuple(int(np.clip(s, 0, n - 1)) for s, n in zip(steps, outer, strict=True))

    def _image_plane(self, image, labels, box):
        """A function that reads the plane of ``image`` under the labels plane in view
        (the labels' ``box`` of it, if any), channels last (a copy made now of an in-memory
        layer; a lazy layer's plane is read when called, in the thread)."""
        data, lab = full_resolution(image), full_resolution(labels)
        outer = lab.shape[:-2]
        if outer and data.shape[: len(outer)] == outer and data.ndim > 2:
            data = data[self._in_view(outer)]
        plane = lab.shape[-2:]
        if data.ndim == 3 and not image.rgb and tuple(data.shape[1:]) == tuple(plane):
            data = np.moveaxis(data, 0, -1)  # channels first
        if tuple(data.shape[:2]) != tuple(plane) or data.ndim not in (2, 3):
            raise InputError(f"image '{image.name}' {tuple(data.shape)} does not match the "
                             f"labels '{labels.name}' {tuple(lab.shape)}.")
        return _reader(data if box is None else data[box])

    def show_weights(self) -> None:
        layer = self.labels.layer()
        try:
            if layer is None:
                raise InputError("choose a labels layer with cells.")
            read, box, placed = self._plane(layer)
            image = self.image.layer()
            read_image = None if image is None else self._image_plane(image, layer, box)
        except InputError as err:
            self.status.setText("")  # not the last view's, which is not this one
            show_error(str(err))
            return
        w0, sigma = float(self.w0.value()), float(self.sigma.value())
        self.status.setText("Computing the weight map…")
        self.weight_jobs.submit(lambda: _weight_view(read, layer.name, w0, sigma, read_image),
                         lambda view: self._show_weights(placed, view))

    def _show_weights(self, layer, view) -> None:
        if isinstance(view, str):
            self.status.setText("")
            show_error(view)
            return
        weights, lines, n, suspects, unlabelled = view
        put_layer(self.viewer, f"{layer.name} weight map", weights, "image", layer,
                  colormap="magma")
        put_layer(self.viewer, f"{layer.name} separating borders", lines, "labels", layer)
        self.live = True
        text = (f"{n} cells touch a neighbour; {int(lines.sum())} border pixels become "
                f"background. Weights {weights.min():.1f}–{weights.max():.1f}.")
        if suspects is not None:
            shown = put_layer(self.viewer, f"{layer.name} joined cells?", suspects, "labels",
                              layer)
            text += (f" {len(np.unique(suspects)) - 1} objects look like touching cells "
                     f"painted with one label (layer '{shown}'): no border separates them; "
                     "give each cell its own label (press M for a new one).")
        if unlabelled is not None:
            shown = put_layer(self.viewer, f"{layer.name} unlabelled cells?", unlabelled,
                              "labels", layer)
            text += (f" {int(unlabelled.max())} regions of the image look like the labelled "
                     f"cells but carry no label (layer '{shown}'): they would be learnt as "
                     "background; label them, or mark where the labels are complete "
                     "(Train: Labelled in).")
        self.status.setText(text)

    def show_splits(self) -> None:
        layer = self.prediction.layer()
        try:
            if layer is None:
                raise InputError("choose the labels layer of a prediction.")
            read, _, placed = self._plane(layer)
        except InputError as err:
            self.status.setText("")  # not the last view's, which is not this one
            show_error(str(err))
            return
        self.status.setText("Finding the separated cells…")
        self.split_jobs.submit(lambda: _split_view(read),
                         lambda view: self._show_splits(placed, view))

    def _show_splits(self, layer, view) -> None:
        split, lines, n, total = view
        put_layer(self.viewer, f"{layer.name} separated cells", split, "labels", layer)
        put_layer(self.viewer, f"{layer.name} split lines", lines, "labels", layer)
        text = (f"{n} of {total} objects touch another one and were separated along "
                f"{int(lines.sum())} pixels.")
        self.status.setText(text)
        show_info(text)

    @property
    def busy(self) -> bool:
        """Whether a weight map or split view is being computed."""
        return self.weight_jobs.busy or self.split_jobs.busy
