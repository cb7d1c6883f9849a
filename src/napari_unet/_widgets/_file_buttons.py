"""The Predict widget's buttons that work on files: *Segment image files…* (files on disk
segmented into a folder of label files, without opening them in napari) and *Export model
to bioimage.io…*."""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_info
from qtpy.QtWidgets import QFileDialog, QPushButton

from ..checkpoint import load_checkpoint, named_with
from ..errors import InputError, NapariUNetError
from ..io import without_label_files
from ._forms import IMAGE_FILES
from ._runner import refuse

#: how a sentence about a file of several channels says to choose one
_OPEN_IT = ("in napari: open the file and choose its channel beside Image (a colour image: "
            "right-click its layer, Split RGB)")


class FilesButton(QPushButton):
    """Segments image files with the model and settings of ``widget`` (the Predict
    widget) into a folder, one file at a time in its worker thread: ``<name>.tif`` for
    each, the measurements of its objects as ``<name>.csv`` with a row per image in
    ``objects_per_image.csv``, its objects as ImageJ ROIs for Fiji (``<name>_rois.zip``;
    of a model of objects) and, with *also add the probability map*,
    ``<name>_prob.tif``, as the command line's ``predict --measure --rois`` writes them.
    A file the model cannot read is skipped and named."""

    def __init__(self, widget) -> None:
        super().__init__("Segment image files…")
        self.widget = widget
        self.setToolTip("Segment image files on disk with the model and settings above, "
                        "without opening them: each one's labels are written as "
                        "<name>.tif, its objects' measurements as <name>.csv and its "
                        "objects as ImageJ ROIs for Fiji as <name>_rois.zip, to a folder "
                        "you choose")
        self.clicked.connect(self._ask)
        self._written = 0

    def _ask(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Image files to segment", "",
            f"{IMAGE_FILES};;All files (*)")
        if not files:
            return
        out = QFileDialog.getExistingDirectory(self, "Folder for their segmentations",
                                               str(Path(files[0]).parent))
        if out:
            self.segment(files, out)

    def segment(self, files, out) -> None:
        """Segment ``files`` into the folder ``out``."""
        from ..batch import predict_files

        widget = self.widget
        files = [Path(f) for f in files]
        kept, self._labels = without_label_files(files) if len(files) > 1 else (files, [])
        try:
            if not kept:
                raise InputError("the files chosen are all label files (named as an image "
                                 "with _masks, _labels ...); choose the images.")
            model = load_checkpoint(widget.model_path())
            gen = predict_files(model, kept, out, widget.config(),
                                probabilities=widget.probabilities.isChecked(),
                                skip_bad=True, folder="folder for the results",
                                channel_option=_OPEN_IT, measure=True,
                                rois=model.mode == "instances")
        except NapariUNetError as err:
            refuse(widget.status, "No file was written", err)
            return
        self._out, self._written, self._rois = Path(out), 0, model.mode == "instances"
        widget.status.setText(f"Segmenting {len(kept)} image file(s) into {out}…")
        widget.controls.launch(gen, desc=f"Segmenting {len(kept)} files", total=0,
                               on_event=self._on_event, on_done=self._done,
                               on_refused=lambda m: widget.status.setText(
                                   f"Stopped: {m} Files written before are kept."))

    def _on_event(self, event) -> None:
        steps = 1000 * event.total
        if event.tiles is not None:
            tiles = event.tiles
            share = tiles.done / tiles.total if tiles.total else 0.0
            self.widget.controls.progress(int(1000 * (event.index + share)), steps)
            self.widget.status.setText(f"{event.name} ({event.index + 1} of {event.total}): "
                                       f"{tiles.message or 'predicting'}")
            return
        self._written += event.found is not None
        self.widget.controls.progress(1000 * (event.index + 1), steps)

    def _done(self, result) -> None:
        if result is None:
            text = (f"Cancelled; the {self._written} segmentation(s) written before are "
                    f"kept in {self._out}.")
        else:
            objects = f", {result.objects:,} objects" if result.objects else ""
            table = f", {result.summary.name}" if result.summary else ""
            rois = " and ImageJ ROIs (<name>_rois.zip)" if self._rois else ""
            text = (f"Wrote {len(result.written)} segmentation(s), their objects' "
                    f"measurements (<name>.csv{table}){rois} to {self._out} in "
                    f"{result.seconds:.1f} s{objects}"
                    + "".join(f"; skipped {name}: {why}" for name, why in result.skipped)
                    + (f"; left out {len(self._labels)} label file(s) beside their images"
                       if self._labels else "") + ".")
        self.widget.status.setText(text)
        show_info(text)


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
