"""Predict dock widget: an Image layer in, a Labels layer (and probabilities) out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QFormLayout, QLabel, QVBoxLayout, QWidget

from ..checkpoint import load_checkpoint, recent_models
from ..config import PredictConfig
from ..errors import InputError, NapariUNetError
from ..found import object_count, what_was_found
from ..memory import beyond_memory
from ..pretrained import shipped_choices
from ._channels import channel_box, layer_for_model
from ._device import device_choice
from ._features import measuring
from ._file_buttons import ExportButton, FilesButton
from ._forms import (
    FROM_FILE,
    Collapsible,
    FreshCombo,
    LayerCombo,
    PathPicker,
    check,
    choice,
    choose,
    combo,
    has_time,
    model_entry,
    models_hub,
    refill,
    row_of,
    shown_for,
    spin,
    status_label,
)
from ._in_view import crop_in_view
from ._model_hints import OWN_THRESHOLD, describe_model, follow_threshold
from ._outputs import inputs, predict_to_disk, sentences, show_result
from ._reuse import LastPrediction
from ._runner import LayerDone, RunControls, each_layer, refuse, refused


class PredictWidget(QWidget):
    """Segment an image layer with a trained model."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image = LayerCombo(napari_viewer, Image)
        self.every = check("every one", "segment every image layer in turn (not the "
                           "probability maps napari-unet added); each result appears when it "
                           "is done")
        self.in_view = check("only the part in view", "a quick look at a slide: what napari "
                             "shows, at full resolution, to '<image> in view segmentation'")
        for part in (self.image, self.in_view):
            self.every.toggled.connect(part.setDisabled)
        self.channel = channel_box(self.image)
        self.model = FreshCombo(lambda: self.refresh_models(), "a model trained before "
                                "(newest first), a shipped model, or a model file")
        self.model_file = PathPicker(save=False, placeholder="model file (.safetensors)")
        self.tile = spin(0, 0, 8192, step=64, special="auto",
                         tip="input tile side in pixels (auto: 1024 on a CPU, on a CUDA GPU "
                         "the largest that half of its free memory holds)")
        self.batch = spin(0, 0, 256, tip="tiles per forward pass (auto: from the free memory)",
                          special="auto")
        self.own_threshold = check(OWN_THRESHOLD, checked=True)
        self.threshold = spin(0.5, 0.01, 0.99, decimals=2, step=0.05,
                              tip="foreground threshold of the probability")
        self.threshold.setEnabled(False)
        self.own_threshold.toggled.connect(lambda _: follow_threshold(self))
        self.method = combo(["auto", "components", "watershed"],
                            "how touching objects are separated (auto: the model's own "
                            "way, a seeded watershed or, for an offsets model, centre "
                            "voting; components: the paper's connected components)")
        self.necks = check("cut at necks", "cut objects where they narrow, as between two "
                           "touching round cells the network drew no line between; turn off "
                           "for cells that are not round", checked=True)
        self.min_size = spin(-1, -1, 100000, special="auto",
                             tip="smaller objects are removed (pixels); auto: a fifth of the "
                                 "area of the model's typical cell or of the image's median "
                                 "object, the smaller, at least 10 px")
        self.diameter = spin(0, 0, 5000, decimals=1, step=1,
                             tip="typical cell diameter in this image (pixels): the image is "
                                 "resized so that its cells have the size the model learnt, "
                                 "and the labels come back at the image's size",
                             special="as the image is")
        self.estimate = check("estimate", "find the cells' size in a first pass at the "
                              "image's size, then predict at the model's (of a stack: its "
                              "first plane)")
        self.estimate.toggled.connect(lambda on: self.diameter.setEnabled(not on))
        self.diameter_hint = QLabel("")
        self.link = spin(0, 0, 1, decimals=2, step=0.05,
                         tip="of a stack (z-stack, or a time-lapse whose cells move less "
                             "than their size): objects of consecutive planes that overlap "
                             "by at least this IoU get one label (e.g. 0.25); a time-lapse "
                             "of z-stacks is linked along Z within each time point",
                         special="planes apart")
        self.follow = check("and through time", "of a time-lapse of z-stacks (T, Z, Y, X): "
                            "follow the objects linked along Z through the time points too, "
                            "each taking the label of the one it overlaps most at the time "
                            "point before, by at least the IoU above")
        self.link.valueChanged.connect(lambda v: self.follow.setEnabled(v > 0))
        self.follow.setEnabled(False)
        for changed in (self.image.currentTextChanged, self.every.toggled,  # layers added
                        napari_viewer.layers.events.inserted,  # or gone with 'every one'
                        napari_viewer.layers.events.removed):
            changed.connect(self._show_follow)
        self.probabilities = check("also add the probability map", "the foreground "
                                   "probability; for a distance model also its distance map, "
                                   "for an offsets model where its pixels point (centre "
                                   "votes)")
        self.tta = check("average over rotations and flips (8x slower)")
        self.device, self.device_label = device_choice()
        self.controls = RunControls("Predict", self.start)
        self.files_btn, self.export_btn = FilesButton(self), ExportButton(self)
        self.controls.lock_while_running(self.files_btn, self.export_btn)
        self.status = status_label()
        self.last = LastPrediction()  # labelled again when only labelling settings change
        self._relabelling = self._linked = self._followed = False
        self._images: dict = {}  # of each layer predicted, the data its objects are measured in

        form = QFormLayout()
        form.addRow("Image", row_of(self.image, self.channel, self.every))
        form.addRow("", self.in_view)
        form.addRow("Model", self.model)
        form.addRow("", self.model_file)
        form.addRow("Cell diameter", row_of(self.diameter, self.estimate))
        form.addRow("", self.diameter_hint)
        form.addRow("Link planes", self.link)
        form.addRow("", self.follow)
        self._follow_row = [w for w in (self.follow, form.labelForField(self.follow)) if w]
        form.addRow("", self.probabilities)
        form.addRow("Device", self.device)
        form.addRow("", self.device_label)
        self.advanced = Collapsible("Advanced settings")
        more = self.advanced.form
        more.addRow("", self.own_threshold)
        more.addRow("Threshold", self.threshold)
        more.addRow("Separation", row_of(self.method, self.necks))
        more.addRow("Min. size", self.min_size)
        more.addRow("", self.tta)
        more.addRow("Tile size", self.tile)
        more.addRow("Batch size", self.batch)
        form.addRow(self.advanced)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for part in (self.controls, self.files_btn, self.export_btn, self.status):
            layout.addWidget(part)
        layout.addStretch()
        for changed in (self.model.currentTextChanged, self.model_file.edit.textChanged):
            changed.connect(lambda *_: describe_model(self))
        self.refresh_models()
        shown_for(self.model_file, self.model, FROM_FILE)
        describe_model(self)
        self._show_follow()
        models_hub().saved.connect(self.use_trained_model)

    def refresh_models(self) -> None:
        refill(self.model, [*map(model_entry, recent_models()), *shipped_choices(),
                            FROM_FILE])

    def use_trained_model(self, path: str) -> None:
        """Choose the model a training just saved (the Train widget announces it)."""
        self.refresh_models()
        if not choose(self.model, path):  # saved outside the models folder
            self.use_model_file(path)
        self.status.setText(f"Model: the one just trained, {Path(path).name}.")

    def use_model_file(self, path) -> None:  # a dropped model file lands here
        self.model.setCurrentText(FROM_FILE)
        self.model_file.edit.setText(str(path))

    def model_path(self) -> str:
        chosen = choice(self.model)
        path = self.model_file.text() if chosen == FROM_FILE or not chosen else chosen
        if not path:
            raise InputError("choose a model: train one first, or pick a model file.")
        return path

    def _show_follow(self, *_) -> None:  # *and through time* only where there is time
        layers = inputs(self.viewer) if self.every.isChecked() else [self.image.layer()]
        for part in self._follow_row:  # the row, not an empty line, where there is none
            part.setVisible(has_time(layers))

    def config(self) -> PredictConfig:
        return PredictConfig(
            tile_size=int(self.tile.value()), batch_size=int(self.batch.value()),
            device=self.device.currentText(),
            threshold=None if self.own_threshold.isChecked() else self.threshold.value(),
            instance_method=self.method.currentText(), cut_necks=self.necks.isChecked(),
            min_size=int(self.min_size.value()) if self.min_size.value() >= 0 else "auto",
            tta=self.tta.isChecked(),
            diameter="auto" if self.estimate.isChecked() else self.diameter.value() or None,
            link_planes=self.link.value(),
            follow_time=(self.follow.isChecked() and not self.follow.isHidden()
                         and self.link.value() > 0))

    def _job(self, ckpt, cfg, layer, previous=None):
        """Where the results of one layer (or its part in view) go, and its prediction; with
        ``previous``, that one's probabilities labelled again (only labelling changed)."""
        from ..predict import predict, relabel

        cropped = self.in_view.isChecked() and not self.every.isChecked()
        try:
            data, placed = layer_for_model(layer, ckpt.config.in_channels,
                                           self.channel.value() or None)
            if cropped:
                data, placed = crop_in_view(self.viewer, layer, data, placed)
        except NapariUNetError as err:  # one layer of several: skipped and named
            return layer, refused(err)
        self._images[placed.name], linked = data, cfg.link_planes > 0
        if previous is not None:
            return placed, measuring(relabel(ckpt, previous, cfg), data, placed, linked)
        lazy = not isinstance(data, np.ndarray) and not cropped  # Dask, zarr: to disk
        try:  # a numpy layer whose prediction would not fit in memory: to disk too
            why = "" if lazy else beyond_memory(data, ckpt, cfg)
        except NapariUNetError as err:
            return layer, refused(err)
        if lazy or why:
            return placed, predict_to_disk(ckpt, data, cfg, layer.name,
                                           self.probabilities.isChecked(), why, placed)
        gen = predict(ckpt, data, cfg, name=f"layer '{layer.name}'")
        return placed, measuring(gen, data, placed, linked)

    def start(self) -> None:
        layers = inputs(self.viewer) if self.every.isChecked() else [self.image.layer()]
        try:
            if not layers or layers[0] is None:
                raise InputError("choose an image layer to segment.")
            self._running = self.model_path()  # recorded with the segmentations
            ckpt = load_checkpoint(self._running)
            cfg = self.config()
            self._linked, self._followed = cfg.link_planes > 0, cfg.follow_time
            previous = (self.last.skip() if len(layers) > 1 or self.in_view.isChecked() else
                        self.last.reusable(layers[0], self._running, cfg, self.channel.value()))
            self._relabelling = previous is not None
            self._images.clear()
            jobs = [self._job(ckpt, cfg, layer, previous) for layer in layers]
            if previous is None:
                next(jobs[0][1])  # checks the image against the model, before the thread
        except NapariUNetError as err:
            refuse(self.status, "No layer was changed", err)
            return
        if len(jobs) == 1:
            layer, gen = jobs[0]
            self.status.setText(f"Labelling '{layer.name}' again…" if self._relabelling
                                else f"Predicting '{layer.name}'…")
            self.controls.launch(gen, desc=f"Predicting {layer.name}", total=0,
                                 on_event=self._on_event,
                                 on_done=lambda r, layer=layer: self._on_done(r, layer),
                                 on_refused=lambda message: self.status.setText(
                                     f"No layer was changed: {message}"))
            return
        self.status.setText(f"Predicting {len(jobs)} image layers…")
        self._said, self._done = [], []  # what to say of the results; objects found
        self.controls.launch(each_layer(jobs), desc=f"Predicting {len(jobs)} layers", total=0,
                             on_event=self._on_event, on_done=self._on_all_done)

    def _on_event(self, event) -> None:
        if isinstance(event, LayerDone):  # one layer of several: shown at once
            self._said += self._show(event.result, event.layer)
            self._done.append(object_count(event.result, self._linked,
                                           followed=self._followed))
            return
        self.controls.progress(event.done, event.total)
        if event.message:
            self.status.setText(event.message)

    def _show(self, result, layer) -> list[str]:  # see show_result
        return show_result(self.viewer, result, layer, self.probabilities.isChecked(),
                           self._running, self._images.pop(layer.name, None))

    def _on_all_done(self, skipped) -> None:
        counted = [n for n in self._done if n is not None]
        objects = f", {sum(counted):,} objects" if counted else ""
        text = ("Cancelled; the layers finished before are kept." if skipped is None else
                f"Done: {len(self._done)} layer(s){objects}"
                + "".join(f"; skipped {name}: {why}" for name, why in skipped) + ".")
        text += sentences(self._said)
        self.status.setText(text)
        show_info(text)

    def _on_done(self, result, layer) -> None:
        if result is None:
            self.status.setText("Cancelled; no layer was changed.")
            return
        self.last.keep(result)
        said = self._show(result, layer)
        found = what_was_found(result, self._linked, followed=self._followed)
        text = ((f"Labelled again from the last prediction's probabilities in "
                 f"{result.seconds:.1f} s (the network was not run)") if self._relabelling
                else f"Done in {result.seconds:.1f} s on {result.device}")
        text += (f": {found}." if found else ".") + sentences([*result.notes, *said])
        self.status.setText(text)
        show_info(text)
