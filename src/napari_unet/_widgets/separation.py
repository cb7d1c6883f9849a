"""Touching-cell separation view: the weight map before training, the splits after."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
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
from ..targets import instance_targets, relabel_if_binary
from ._forms import LayerCombo
from ._outputs import put_layer


def _slider(lo: int, hi: int, value: int) -> QSlider:
    s = QSlider(Qt.Horizontal)
    s.setRange(lo, hi)
    s.setValue(value)
    return s


class SeparationWidget(QWidget):
    """Show the paper's weight map and the separating lines between touching cells."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.labels = LayerCombo(napari_viewer, Labels)
        self.w0 = _slider(0, 50, 10)
        self.sigma = _slider(1, 30, 5)
        self.w0_label, self.sigma_label = QLabel(), QLabel()
        show = QPushButton("Show weight map")
        show.clicked.connect(self.show_weights)
        self.live = False
        self.w0.valueChanged.connect(self._changed)
        self.sigma.valueChanged.connect(self._changed)
        self.prediction = LayerCombo(napari_viewer, Labels)
        splits = QPushButton("Show separated cells")
        splits.clicked.connect(self.show_splits)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        before = QGroupBox("Before training: what the loss emphasises")
        f1 = QFormLayout(before)
        f1.addRow("Labels", self.labels)
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

    def _plane(self, layer) -> np.ndarray:
        """The 2D labels plane in view (the whole layer if it is 2D)."""
        data = np.asarray(layer.data)
        if data.ndim == 2:
            return data
        if data.ndim == 3:
            step = self.viewer.dims.current_step[-3]
            return data[int(np.clip(step, 0, data.shape[0] - 1))]
        raise InputError(f"labels layer '{layer.name}' must be 2D or a stack of 2D planes.")

    def show_weights(self) -> None:
        layer = self.labels.layer()
        try:
            if layer is None:
                raise InputError("choose a labels layer with cells.")
            lab = relabel_if_binary(self._plane(layer))
            if not lab.any():
                raise InputError(f"labels layer '{layer.name}' has no labelled cell.")
        except InputError as err:
            show_error(str(err))
            return
        w0, sigma = float(self.w0.value()), float(self.sigma.value())
        cls, weights = instance_targets(lab, w0=w0, sigma=sigma)
        lines = ((lab != 0) & (cls == 0)).astype(np.uint8)
        put_layer(self.viewer, f"{layer.name} weight map", weights, "image", layer,
                  colormap="magma")
        put_layer(self.viewer, f"{layer.name} separating borders", lines, "labels", layer)
        self.live = True
        n = len(np.unique(lab[lines > 0]))
        self.status.setText(f"{n} cells touch a neighbour; {int(lines.sum())} border pixels "
                            f"become background. Weights {weights.min():.1f}–"
                            f"{weights.max():.1f}.")

    def show_splits(self) -> None:
        layer = self.prediction.layer()
        if layer is None:
            show_error("choose the labels layer of a prediction.")
            return
        try:
            pred = self._plane(layer)
        except InputError as err:
            show_error(str(err))
            return
        lines, ids = separated_objects(pred)
        split = np.where(np.isin(pred, ids), pred, 0)
        put_layer(self.viewer, f"{layer.name} separated cells", split, "labels", layer)
        put_layer(self.viewer, f"{layer.name} split lines", lines.astype(np.uint8), "labels",
                  layer)
        total = len(np.unique(pred)) - (1 if (pred == 0).any() else 0)
        text = (f"{len(ids)} of {total} objects touch another one and were separated along "
                f"{int(lines.sum())} pixels.")
        self.status.setText(text)
        show_info(text)
