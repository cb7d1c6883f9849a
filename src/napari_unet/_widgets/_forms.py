"""Small Qt building blocks shared by the dock widgets."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..io import IMAGE_SUFFIXES

#: The file dialogs' filter of the image files napari-unet reads.
IMAGE_FILES = f"Images ({' '.join('*' + s for s in IMAGE_SUFFIXES)})"
#: The model choice that means "the file in the path field below".
FROM_FILE = "model file…"
#: The Train widget's choice of no model to start from.
NEW_MODEL = "new model"


class ModelsHub(QObject):
    """Tells the dock widgets that a training saved a model (its path), so that the
    Predict widget offers it at once."""

    saved = Signal(str)


_HUB: ModelsHub | None = None


def models_hub() -> ModelsHub:
    """The one :class:`ModelsHub` of this napari session."""
    global _HUB
    if _HUB is None:
        _HUB = ModelsHub()
    return _HUB


def full_resolution(layer):
    """A layer's data at full resolution: level 0 of a multiscale layer, as it is (lazy or
    not) otherwise."""
    return layer.data[0] if layer.multiscale else layer.data


def has_time(layers) -> bool:
    """Whether any of ``layers`` (None: no layer) is a time-lapse of z-stacks: four axes
    or more, colour aside."""
    return any(layer is not None and full_resolution(layer).ndim - layer.rgb >= 4
               for layer in layers)


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers of one kind, kept up to date; ``none`` is an
    optional first choice that stands for no layer."""

    def __init__(self, viewer, kind, parent=None, *, none: str | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.kind, self.none = viewer, kind, none
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def refresh(self, *_) -> None:
        """Fill the list again; the choice changes (and says so) only if its layer went."""
        current = self.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, self.kind)]
        names = [self.none, *names] if self.none else names
        _fill(self, [(name, name, "") for name in names], current)

    def layer(self):
        name = self.currentText()
        return (self.viewer.layers[name] if name != self.none and name in self.viewer.layers
                else None)


def spin(value: float, lo: float, hi: float, *, step: float = 1, decimals: int = 0,
         tip: str = "", special: str = "") -> QSpinBox | QDoubleSpinBox:
    """A spin box; ``special``: what it shows instead of its lowest value."""
    box = QDoubleSpinBox() if decimals else QSpinBox()
    if decimals:
        box.setDecimals(decimals)
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    box.setSpecialValueText(special)
    return box


def combo(items: list[str], tip: str = "") -> QComboBox:
    box = QComboBox()
    box.addItems(items)
    box.setToolTip(tip)
    return box


class FreshCombo(QComboBox):
    """A combo box that fills itself again (``fill()``) each time its list is opened, so
    that it offers the model files saved since (by a training, the command line, another
    napari)."""

    def __init__(self, fill, tip: str = "") -> None:
        super().__init__()
        self.fill = fill
        self.setToolTip(tip)

    def showPopup(self) -> None:
        self.fill()
        super().showPopup()


def model_entry(path) -> tuple[str, str, str]:
    """How a model file is listed: its name (the folder is the same for every trained
    model, and a long path is cut off in a dock), the path it stands for, and a tooltip
    with the path and what its training recorded."""
    from ..checkpoint import read_header
    from ..errors import ModelFileError

    path = Path(path)
    tip = [str(path)]
    try:
        training = read_header(path)[1].get("training") or {}
    except (ModelFileError, OSError):
        training = {}
    score = (training.get("validation") or {}).get("score")
    facts = [f"{training['images']} images" if training.get("images") else "",
             f"fine-tuned from {Path(str(training['fine_tuned_from'])).name}"
             if training.get("fine_tuned_from") else "",
             f"validation score {score:.3f}" if isinstance(score, (int, float)) else ""]
    if any(facts):
        tip.append(", ".join(f for f in facts if f))
    return path.stem, str(path), "\n".join(tip)


def refill(box: QComboBox, items: list) -> None:
    """Put ``items`` in ``box`` (each a text, or a ``(label, value, tooltip)`` entry of
    :func:`model_entry`; the last :data:`FROM_FILE`) and keep its choice: a model file
    chosen before that is no longer among them (older than the newest ten) stays, just
    before the last item."""
    entries = [(item, item, "") if isinstance(item, str) else item for item in items]
    current = choice(box)
    if current and current not in [value for _, value, _ in entries] and Path(
            current).is_file():
        entries.insert(len(entries) - 1, model_entry(current))
    _fill(box, entries, current)


def _fill(box: QComboBox, entries: list[tuple[str, str, str]], current: str) -> None:
    """Replace the items of ``box`` by ``(label, value, tooltip)`` entries, choose
    ``current`` again if it is among them, and say the choice changed only if it did."""
    from qtpy.QtCore import Qt

    box.blockSignals(True)
    try:
        box.clear()
        for k, (label, value, tip) in enumerate(entries):
            box.addItem(label, value)
            if tip:
                box.setItemData(k, tip, Qt.ToolTipRole)
        choose(box, current)
    finally:
        box.blockSignals(False)
    if choice(box) != current:
        box.currentTextChanged.emit(box.currentText())


def choice(box: QComboBox) -> str:
    """What the chosen item of a model list stands for (a path for a model file)."""
    value = box.currentData()
    return value if isinstance(value, str) else box.currentText()


def choose(box: QComboBox, value: str) -> bool:
    """Choose the item of a model list that stands for ``value``; False if there is none."""
    index = box.findData(value)
    if index < 0:
        index = box.findText(value)
    if index >= 0:
        box.setCurrentIndex(index)
    return index >= 0


def status_label(text: str = "") -> QLabel:
    """A widget's status line: wrapped, since its sentences can be long."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label


def row_of(first: QWidget, *rest: QWidget) -> QHBoxLayout:
    """Widgets side by side in a form's row, the first taking the room left."""
    row = QHBoxLayout()
    row.addWidget(first, 1)
    for widget in rest:
        row.addWidget(widget)
    return row


def shown_for(widget: QWidget, box: QComboBox, choice: str) -> None:
    """Show ``widget`` only while ``box`` shows ``choice`` (a path field for "model
    file…")."""
    box.currentTextChanged.connect(lambda text: widget.setVisible(text == choice))
    widget.setVisible(box.currentText() == choice)


def applies(widgets, on: bool, why: str) -> None:
    """Enable ``widgets`` where a setting applies; where it does not, grey them out and say
    ``why`` in their tooltip (kept apart from the tooltip they had)."""
    for widget in widgets:
        tip = widget.property("own_tip")
        if tip is None:
            tip = widget.toolTip()
            widget.setProperty("own_tip", tip)
        widget.setEnabled(on)
        widget.setToolTip(tip if on else f"{why}{chr(10) + tip if tip else ''}")


def check(text: str, tip: str = "", *, checked: bool = False) -> QCheckBox:
    box = QCheckBox(text)
    box.setChecked(checked)
    box.setToolTip(tip)
    return box


class PathPicker(QWidget):
    """A path field with a Browse button (open or save dialog)."""

    def __init__(self, *, save: bool, placeholder: str = "", parent=None) -> None:
        super().__init__(parent)
        self.save = save
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        button = QPushButton("Browse…")
        button.clicked.connect(self._browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit)
        row.addWidget(button)

    def _browse(self) -> None:
        pattern = "napari-unet model (*.safetensors)"
        if self.save:
            path, _ = QFileDialog.getSaveFileName(self, "Save model as", self.text(), pattern)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Open model", self.text(), pattern)
        if path:
            self.edit.setText(path)

    def text(self) -> str:
        return self.edit.text().strip()

    def path(self) -> Path | None:
        return Path(self.text()).expanduser() if self.text() else None


class Collapsible(QWidget):
    """A titled section of form rows, shown or hidden by clicking its title (settings most
    people never change stay out of the way); ``form`` takes the rows."""

    def __init__(self, title: str, *, expanded: bool = False, parent=None) -> None:
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QFormLayout, QToolButton, QVBoxLayout

        super().__init__(parent)
        self.toggle = QToolButton()
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toggle.setStyleSheet("QToolButton { border: none; }")
        self.body = QWidget()
        self.form = QFormLayout(self.body)
        self.form.setContentsMargins(0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle)
        layout.addWidget(self.body)
        self.toggle.toggled.connect(self._show)
        self.toggle.setChecked(expanded)
        self._show(expanded)

    def _show(self, on: bool) -> None:
        from qtpy.QtCore import Qt

        self.toggle.setArrowType(Qt.DownArrow if on else Qt.RightArrow)
        self.body.setVisible(on)

    @property
    def expanded(self) -> bool:
        return self.toggle.isChecked()
