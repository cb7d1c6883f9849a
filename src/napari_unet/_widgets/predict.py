"""Predict dock widget: an Image layer in, a Labels layer (and probabilities) out."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..checkpoint import load_checkpoint, recent_models, recorded_diameter
from ..config import PredictConfig
from ..data import image_for_model
from ..errors import InputError, NapariUNetError
from ..pretrained import resolve_model, shipped_choices
from ._forms import FROM_FILE, LayerCombo, PathPicker, combo, device_choice, spin
from ._runner import RunControls


def output_name(image_name: str) -> str:
    """The Labels layer a prediction of ``image_name`` goes to (updated on a re-run)."""
    return f"{image_name} segmentation"


def put_layer(viewer, name: str, data, kind: str, source, **kwargs) -> None:
    """Add a layer, or update the one of that name; scale/translate follow ``source``."""
    nd = np.ndim(data)
    scale = list(source.scale)[-nd:] if len(source.scale) >= nd else None
    translate = list(source.translate)[-nd:] if len(source.translate) >= nd else None
    if nd > len(source.scale):  # a leading class axis
        extra = nd - len(source.scale)
        scale = [1.0] * extra + list(source.scale)
        translate = [0.0] * extra + list(source.translate)
    cls = Labels if kind == "labels" else Image
    if name in viewer.layers and isinstance(viewer.layers[name], cls):
        layer = viewer.layers[name]
        layer.data = data
        layer.scale, layer.translate = scale, translate
        return
    add = viewer.add_labels if kind == "labels" else viewer.add_image
    add(data, name=name, scale=scale, translate=translate, **kwargs)


def lazy_outputs(ckpt, data, name: str, probabilities: bool) -> dict:
    """zarr arrays on disk (in ~/napari-unet/predictions) for the labels and probabilities
    of a lazy layer, so that it is predicted without being loaded whole."""
    from ..checkpoint import default_model_path
    from ..predict import zarr_outputs

    stem = default_model_path(name)
    folder = stem.parent.parent / "predictions"
    base = folder / stem.name.removesuffix(".safetensors")
    labels, prob = zarr_outputs(ckpt, data, base.with_suffix(".zarr"),
                                base.with_name(base.name + "_prob.zarr") if probabilities
                                else None, name=f"layer '{name}'")
    return {"out_labels": labels, "out_probabilities": prob}


def _shown_lazily(prob):
    """Probabilities as napari shows them: a numpy array as it is, a zarr on disk as a
    Dask array (read lazily)."""
    if isinstance(prob, np.ndarray):
        return prob
    import dask.array as da

    return da.from_array(prob, chunks=prob.chunks)


def shown_probabilities(result) -> np.ndarray:
    """Foreground probability (2D per plane) for instance and two-class models; all
    classes (a leading class axis) for multi-class semantic models."""
    prob = _shown_lazily(result.probabilities)
    axis = prob.ndim - 3
    if result.mode == "semantic" and prob.shape[axis] > 2:
        return prob
    return 1.0 - prob[(slice(None),) * axis + (0,)]


def shown_distance(result):
    """The distance map of a 'distance' model (2D per plane), None for other models."""
    if result.target != "distance" or result.mode != "instances":
        return None
    prob = _shown_lazily(result.probabilities)
    return prob[(slice(None),) * (prob.ndim - 3) + (-1,)]


def shown_votes(result):
    """Where an 'offsets' model's foreground pixels point (vote counts, 2D per plane), None
    for other models and for probabilities kept on disk."""
    if (result.target != "offsets" or result.mode != "instances"
            or not isinstance(result.probabilities, np.ndarray)):
        return None
    from ..instances import vote_counts

    prob = result.probabilities
    if prob.ndim == 3:
        return vote_counts(prob)
    return np.stack([vote_counts(p) for p in prob])


class PredictWidget(QWidget):
    """Segment an image layer with a trained model."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image = LayerCombo(napari_viewer, Image)
        self.model = combo([], "a model trained before (newest first) or a model file")
        self.model_file = PathPicker(save=False, placeholder="model file (.safetensors)")
        refresh = QPushButton("↻")
        refresh.setToolTip("Look for newly trained models")
        refresh.clicked.connect(self.refresh_models)
        self.tile = spin(512, 64, 8192, step=64, tip="input tile side in pixels")
        self.batch = spin(0, 0, 256, tip="tiles per forward pass (auto: from the free memory)")
        self.batch.setSpecialValueText("auto")
        self.own_threshold = QCheckBox("use the model's calibrated threshold")
        self.own_threshold.setChecked(True)
        self.threshold = spin(0.5, 0.01, 0.99, decimals=2, step=0.05)
        self.method = combo(["auto", "components", "watershed"],
                            "how touching objects are separated (auto: the model's own "
                            "way, a seeded watershed or, for an offsets model, centre "
                            "voting; components: the paper's connected components)")
        self.min_size = spin(10, 0, 100000, tip="smaller objects are removed (pixels)")
        self.diameter = spin(0, 0, 5000, decimals=1, step=1,
                             tip="typical cell diameter in this image (pixels): the image is "
                                 "resized so that its cells have the size the model learnt, "
                                 "and the labels come back at the image's size")
        self.diameter.setSpecialValueText("as the image is")
        self.estimate = QCheckBox("estimate")
        self.estimate.setToolTip("find the cells' size in a first pass at the image's size, "
                                 "then predict at the model's (of a stack: its first plane)")
        self.estimate.toggled.connect(lambda on: self.diameter.setEnabled(not on))
        self.diameter_hint = QLabel("")
        self.probabilities = QCheckBox("also add the probability map")
        self.probabilities.setToolTip("the foreground probability; for a distance model "
                                      "also its distance map, for an offsets model where "
                                      "its pixels point (centre votes)")
        self.tta = QCheckBox("average over rotations and flips (8x slower)")
        self.device, self.device_label = device_choice()
        self.controls = RunControls("Predict", self.start)
        self.export_btn = QPushButton("Export model to bioimage.io…")
        self.export_btn.setToolTip("Write the chosen model as a BioImage Model Zoo package "
                                   "(.zip) for deepImageJ, ilastik and other tools")
        self.export_btn.clicked.connect(self._ask_export)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image)
        row = QHBoxLayout()
        row.addWidget(self.model, 1)
        row.addWidget(refresh)
        form.addRow("Model", row)
        form.addRow("", self.model_file)
        form.addRow("Tile size", self.tile)
        form.addRow("Batch size", self.batch)
        form.addRow("", self.own_threshold)
        form.addRow("Threshold", self.threshold)
        form.addRow("Separation", self.method)
        form.addRow("Min. size", self.min_size)
        row = QHBoxLayout()
        row.addWidget(self.diameter, 1)
        row.addWidget(self.estimate)
        form.addRow("Cell diameter", row)
        form.addRow("", self.diameter_hint)
        form.addRow("", self.probabilities)
        form.addRow("", self.tta)
        form.addRow("Device", self.device)
        form.addRow("", self.device_label)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.controls)
        layout.addWidget(self.export_btn)
        layout.addWidget(self.status)
        layout.addStretch()
        self.model.currentTextChanged.connect(self._describe_model)
        self.model_file.edit.textChanged.connect(self._describe_model)
        self.refresh_models()
        self._describe_model()

    def _describe_model(self, *_) -> None:
        """Say what cell size the chosen model learnt (what *Cell diameter* resizes to)."""
        try:
            path = resolve_model(self.model_path())
        except NapariUNetError:
            path = None
        if path is None or path.suffix != ".safetensors" or not path.is_file():
            self.diameter_hint.setText("")  # nothing chosen yet, or a bioimage.io package
            return
        size = recorded_diameter(path)
        self.diameter_hint.setText(f"the model learnt cells of about {size:.0f} px" if size
                                   else "the model does not record its cell size")

    def refresh_models(self) -> None:
        current = self.model.currentText()
        self.model.clear()
        self.model.addItems([*map(str, recent_models()), *shipped_choices(), FROM_FILE])
        if current:
            self.model.setCurrentText(current)

    def use_model_file(self, path) -> None:
        """Choose the model file ``path`` (a dropped model file lands here)."""
        self.model.setCurrentText(FROM_FILE)
        self.model_file.edit.setText(str(path))

    def _ask_export(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self, "Export to bioimage.io", "",
                                              "bioimage.io package (*.zip)")
        if path:
            self.export_to(path if path.endswith(".zip") else f"{path}.zip")

    def export_to(self, path) -> None:
        """Export the chosen model as a bioimage.io package, in a worker thread."""
        from ..modelzoo import exporting

        try:
            gen = exporting(self.model_path(), path)
        except NapariUNetError as err:
            show_error(str(err))
            return
        self.controls.launch(gen, desc="Exporting", total=0,
                             on_event=self.status.setText,
                             on_done=lambda out: self._exported(out),
                             on_refused=lambda m: self.status.setText(f"Not exported: {m}"))

    def _exported(self, out) -> None:
        text = f"Exported to {out}" if out else "Export cancelled."
        self.status.setText(text)
        show_info(text)

    def model_path(self) -> str:
        choice = self.model.currentText()
        path = self.model_file.text() if choice == FROM_FILE or not choice else choice
        if not path:
            raise InputError("choose a model: train one first, or pick a model file.")
        return path

    def start(self) -> None:
        from ..predict import predict

        layer = self.image.layer()
        try:
            if layer is None:
                raise InputError("choose an image layer to segment.")
            ckpt = load_checkpoint(self.model_path())
            source = layer.data[0] if layer.multiscale else layer.data  # full resolution
            data = image_for_model(source, rgb=layer.rgb, channels=ckpt.config.in_channels)
            cfg = PredictConfig(
                tile_size=int(self.tile.value()), batch_size=int(self.batch.value()),
                device=self.device.currentText(),
                threshold=None if self.own_threshold.isChecked() else self.threshold.value(),
                instance_method=self.method.currentText(), min_size=int(self.min_size.value()),
                tta=self.tta.isChecked(),
                diameter="auto" if self.estimate.isChecked() else self.diameter.value() or None)
            outputs = {}
            if not isinstance(data, np.ndarray):  # lazy (Dask, zarr, multiscale): to disk
                outputs = lazy_outputs(ckpt, data, layer.name, self.probabilities.isChecked())
            gen = predict(ckpt, data, cfg, name=f"layer '{layer.name}'", **outputs)
            next(gen)  # checks the image against the model here, before any thread starts
        except NapariUNetError as err:
            show_error(str(err))
            return
        self.status.setText(f"Predicting '{layer.name}'…")
        self.controls.launch(gen, desc=f"Predicting {layer.name}", total=0,
                             on_event=self._on_event,
                             on_done=lambda r, layer=layer: self._on_done(r, layer),
                             on_refused=lambda message: self.status.setText(
                                 f"No layer was changed: {message}"))

    def _on_event(self, event) -> None:
        self.controls.progress(event.done, event.total)
        if event.message:
            self.status.setText(event.message)

    def _on_done(self, result, layer) -> None:
        if result is None:
            self.status.setText("Cancelled; no layer was changed.")
            return
        put_layer(self.viewer, output_name(layer.name), result.labels, "labels", layer)
        if self.probabilities.isChecked():
            put_layer(self.viewer, f"{layer.name} probabilities",
                      shown_probabilities(result), "image", layer,
                      colormap="magma", blending="additive", visible=False)
            distance = shown_distance(result)
            if distance is not None:
                put_layer(self.viewer, f"{layer.name} distance", distance, "image", layer,
                          colormap="viridis", blending="additive", visible=False)
            votes = shown_votes(result)
            if votes is not None:
                put_layer(self.viewer, f"{layer.name} centre votes", votes, "image", layer,
                          colormap="inferno", blending="additive", visible=False)
        lazy = not isinstance(result.labels, np.ndarray)
        n = int(result.labels.max()) if result.mode != "semantic" and not lazy else None
        text = (f"Done in {result.seconds:.1f} s on {result.device}"
                + (f": {n} objects." if n is not None else ".")
                + "".join(f" {note[0].upper()}{note[1:]}." for note in result.notes))
        self.status.setText(text)
        show_info(text)
