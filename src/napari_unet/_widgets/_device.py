"""The device choice of the Train and Predict widgets, and what it resolves to."""

from __future__ import annotations

from napari.qt.threading import create_worker
from qtpy.QtWidgets import QComboBox, QLabel

from ._forms import combo
from ._runner import WaitedFunctionWorker


def describe(name: str) -> str:
    """The device a choice resolves to, in words, or why it cannot be used."""
    from ..device import describe_device, resolve_device
    from ..errors import NapariUNetError

    try:
        return describe_device(resolve_device(name))
    except NapariUNetError as err:
        return str(err)


def device_choice() -> tuple[QComboBox, QLabel]:
    """A device combo box, and a label saying what the choice resolves to. That is found
    in a thread: torch's first import and a GPU's start take seconds, and the widget opens
    without waiting for them."""
    box, label = combo(["auto", "cpu", "cuda", "mps"]), QLabel("")

    def show(name: str) -> None:
        def found(text: str) -> None:
            if box.currentText() == name:  # not an answer about an earlier choice
                label.setText(text)

        label.setText("")
        worker = create_worker(describe, name, _worker_class=WaitedFunctionWorker)
        worker.returned.connect(found)
        worker.start()

    box.currentTextChanged.connect(show)
    show(box.currentText())
    return box, label
