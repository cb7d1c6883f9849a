"""The Predict widget's *Export model to bioimage.io…* button."""

from __future__ import annotations

from napari.utils.notifications import show_info
from qtpy.QtWidgets import QFileDialog, QPushButton

from ..checkpoint import named_with
from ..errors import NapariUNetError
from ._runner import refuse


class ExportButton(QPushButton):
    """Writes the model chosen in ``widget`` (which has ``model_path()``, ``controls`` and
    ``status``) as a BioImage Model Zoo package, in the widget's worker thread."""

    def __init__(self, widget) -> None:
        super().__init__("Export model to bioimage.io…")
        self.widget = widget
        self.setToolTip("Write the chosen model as a BioImage Model Zoo package (.zip) for "
                        "deepImageJ, ilastik and other tools")
        self.clicked.connect(self._ask)

    def _ask(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export to bioimage.io", "",
                                              "bioimage.io package (*.zip)")
        if path:
            self.export_to(str(named_with(path, ".zip")))

    def export_to(self, path) -> None:
        from ..modelzoo import exporting

        widget = self.widget
        try:
            gen = exporting(widget.model_path(), path)
        except NapariUNetError as err:
            refuse(widget.status, "Not exported", err)
            return
        widget.controls.launch(gen, desc="Exporting", total=0,
                               on_event=widget.status.setText,
                               on_done=self._exported,
                               on_refused=lambda m: widget.status.setText(f"Not exported: {m}"))

    def _exported(self, out) -> None:
        text = f"Exported to {out}" if out else "Export cancelled."
        self.widget.status.setText(text)
        show_info(text)
