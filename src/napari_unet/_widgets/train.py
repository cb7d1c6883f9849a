"""Train / fine-tune dock widget: pairs of open layers in, a saved model out."""

from __future__ import annotations

from pathlib import Path

from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFormLayout, QVBoxLayout, QWidget

from ..checkpoint import default_model_path, named_with, recent_models
from ..config import MODEL_PRESETS, TARGETS, ModelConfig, TrainConfig
from ..data import plane_name, training_planes
from ..errors import InputError, NapariUNetError
from ..pretrained import shipped_choices
from ._channels import channel_box, picked, read_as_channels
from ._device import device_choice
from ._forms import (
    FROM_FILE,
    NEW_MODEL,
    Collapsible,
    FreshCombo,
    LayerCombo,
    PathPicker,
    applies,
    check,
    choice,
    choose,
    combo,
    full_resolution,
    model_entry,
    models_hub,
    refill,
    row_of,
    shown_for,
    spin,
    status_label,
)
from ._model_hints import follow_model_kind
from ._outputs import MODEL, is_uncorrected
from ._pairs import PairList
from ._plot import LossPlot
from ._regions import region_mask
from ._runner import RunControls, refuse

#: The region choice that means every pixel of the labels layer is labelled.
WHOLE_IMAGE = "the whole image"


class TrainWidget(QWidget):
    """Train a U-Net on (image, labels) layer pairs, or fine-tune an existing model."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.last_model: str | None = None

        self.image = LayerCombo(napari_viewer, Image)
        self.channel = channel_box(self.image)  # of a Fiji hyperstack, e.g. its nuclei
        self.labels = LayerCombo(napari_viewer, Labels)
        self.region = LayerCombo(napari_viewer, Shapes, none=WHOLE_IMAGE)
        self.region.setToolTip("Labelled only part of the image? Draw rectangles or polygons "
                               "around the parts whose cells are all labelled in a Shapes "
                               "layer and choose it: only those parts are learnt from.")
        self.pair_list = PairList(self._add_pair, self.add_all_pairs, self.add_files)
        self.pairs = self.pair_list.list

        self.mode = combo(["instances", "semantic"], "instances: objects 1..N, touching ones "
                          "are separated; semantic: class per pixel")
        self.target = combo(list(TARGETS),
                            "two_class: the paper's border weight map; three_class: "
                            "background / interior / boundary; distance: the paper's map "
                            "plus each cell's distance to its border, which seeds a "
                            "watershed that splits touching cells; offsets: the paper's "
                            "map plus each pixel's vector to its cell's centre, and pixels "
                            "are grouped by the centre they point to")
        self.size = combo(list(MODEL_PRESETS), "network size (base channels, depth)")
        self.size.setCurrentText("small")
        self.padding = combo(["valid", "same"], "valid: the paper's unpadded convolutions")
        self.unit = combo(["minutes", "epochs"])
        self.amount = spin(2, 0.1, 100000, decimals=1, step=1)
        self.w0 = spin(10, 0, 100, decimals=1, tip="border weight amplitude w0")
        self.sigma = spin(5, 0.5, 50, decimals=1, tip="border weight width sigma (px)")
        self.augment = check("elastic deformation, flips, rotations", checked=True)
        self.val = spin(0.2, 0, 0.9, decimals=2, step=0.05,
                        tip="share of images held out to keep the best epoch and calibrate "
                            "the threshold (of one to five images: a strip of each)")
        self.lr = spin(0.001, 0.00001, 0.1, decimals=5, step=0.0005, tip="learning rate")
        self.start_from = FreshCombo(lambda: self.refresh_models(), "Fine-tune: start "
                                     "from a shipped model or one trained before")
        self.init_file = PathPicker(save=False, placeholder="model to fine-tune")
        self.freeze = check("freeze the encoder")
        self.match = check("at the model's cell size", "resize the images so that their cells "
                           "have the size the model learnt (then predict with their cell "
                           "diameter, or 'estimate')")
        self.device, self.device_label = device_choice()
        self.out = PathPicker(save=True, placeholder="automatic, in ~/napari-unet/models")
        self.controls = RunControls("Start", self.start)
        self.status = status_label("Choose an image and a labels layer, then Start.")
        self.warned = status_label()  # this run's warnings, kept in view after the notice
        self.warned.setStyleSheet("color: #e8a33d")
        self.plot = LossPlot()

        form = QFormLayout()
        form.addRow("Image", row_of(self.image, self.channel))
        form.addRow("Labels", self.labels)
        form.addRow("Labelled in", self.region)
        form.addRow(self.pair_list.buttons, self.pairs)
        form.addRow("Label mode", self.mode)
        form.addRow("Model size", self.size)
        form.addRow("Train for", row_of(self.amount, self.unit))
        form.addRow("Start from", self.start_from)
        form.addRow("", self.init_file)
        form.addRow("", self.freeze)
        form.addRow("", self.match)
        form.addRow("Device", self.device)
        form.addRow("", self.device_label)
        form.addRow("Save model to", self.out)
        self.advanced = Collapsible("Advanced settings")
        more = self.advanced.form
        more.addRow("Instance target", self.target)
        more.addRow("Padding", self.padding)
        more.addRow("w0", self.w0)
        more.addRow("sigma", self.sigma)
        more.addRow("Augment", self.augment)
        more.addRow("Validation", self.val)
        more.addRow("Learning rate", self.lr)
        form.addRow(self.advanced)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for part in (self.controls, self.status, self.warned, self.plot):
            layout.addWidget(part)
        layout.addStretch()
        self.refresh_models()
        shown_for(self.init_file, self.start_from, FROM_FILE)
        self.labels.currentTextChanged.connect(self._suggest_start)
        for signal in (self.start_from.currentIndexChanged, self.init_file.edit.textChanged):
            signal.connect(lambda *_: follow_model_kind(self))
        self._suggest_start()
        self.mode.currentTextChanged.connect(lambda mode: applies(
            (self.target, self.w0, self.sigma), mode == "instances",
            "for the instances mode: a semantic model learns classes, not touching objects"))

    # ---- choices ------------------------------------------------------------------------
    def refresh_models(self) -> None:
        refill(self.start_from, [NEW_MODEL, *shipped_choices(),
                                 *map(model_entry, recent_models()), FROM_FILE])

    def _suggest_start(self, *_) -> None:
        """Labels that napari-unet predicted (and you corrected): offer to fine-tune the
        model that made them, if no other starting model has been chosen."""
        layer = self.labels.layer()
        model = layer.metadata.get(MODEL) if layer is not None else None
        if not model or choice(self.start_from) != NEW_MODEL:
            return
        if not choose(self.start_from, model):
            if not Path(model).is_file():
                return
            self.start_from.setCurrentText(FROM_FILE)
            self.init_file.edit.setText(model)
        self.status.setText(f"Starting from the model that made '{layer.name}', to "
                            "fine-tune it on your corrections (or choose a new model).")

    def _add_pair(self) -> None:
        if self.image.currentText() and self.labels.currentText():
            region = self.region.layer()
            self.pair_list.add(self.image.currentText(), self.labels.currentText(),
                               region.name if region is not None else None)

    def add_all_pairs(self) -> None:
        """*Add all*: every image layer with the labels layer named after it."""
        self.status.setText(self.pair_list.add_all(self.viewer))

    def add_files(self, files=None) -> None:
        """*Add files…*: image files and their label files opened as layers and paired."""
        self.status.setText(self.pair_list.add_files(self.viewer, files))

    def _pair_names(self) -> list[tuple[str, str, str | None]]:
        """(image, labels, shapes or None) layer names of every pair to train on: those
        listed, or else the one chosen above."""
        region = self.region.layer()
        return self.pair_list.names() or [(self.image.currentText(), self.labels.currentText(),
                                           region.name if region is not None else None)]

    def snapshot(self) -> tuple[list, list, list, list[str]]:
        """Copy the chosen layers' data on the GUI thread; raise InputError if unusable."""
        images, labels, regions, names = [], [], [], []
        for img_name, lab_name, region_name in self._pair_names():
            if img_name not in self.viewer.layers or lab_name not in self.viewer.layers:
                raise InputError("choose an image layer and a labels layer to train on.")
            if region_name is not None and region_name not in self.viewer.layers:
                raise InputError(f"the shapes layer '{region_name}' is gone; choose where "
                                 "the image is labelled again.")
            img, lab = self.viewer.layers[img_name], self.viewer.layers[lab_name]
            name = f"{img_name} / {lab_name}"
            region = (region_mask(self.viewer.layers[region_name], lab)
                      if region_name is not None else None)
            lab_data = full_resolution(lab)  # copied (or read from disk) where labelled
            data = picked(img, self.channel.value())
            ims, labs, regs, kept = training_planes(  # of a lazy image, only the labelled
                data, lab_data, rgb=img.rgb, name=name, region=region)  # planes
            if not ims:
                raise InputError(f"labels layer '{lab_name}' has no labelled pixel: paint "
                                 "some objects first.")
            if (note := read_as_channels(data, lab_data, img.rgb, img_name)) is not None:
                show_info(note)  # only for a pair that is trained on
            images += ims
            labels += labs
            regions += regs
            names += [f"{name}, {plane_name(k, lab_data.shape)}" if lab_data.ndim > 2
                      else name for k in kept]
        return images, labels, regions, names

    def configs(self) -> tuple[TrainConfig, ModelConfig, object]:
        minutes = self.unit.currentText() == "minutes"
        cfg = TrainConfig(
            mode=self.mode.currentText(), target=self.target.currentText(),
            epochs=None if minutes else max(int(self.amount.value()), 1),
            time_budget=self.amount.value() * 60 if minutes else None,
            w0=self.w0.value(), sigma=self.sigma.value(), augment=self.augment.isChecked(),
            val_fraction=self.val.value(), learning_rate=self.lr.value(),
            freeze_encoder=self.freeze.isChecked(), match_size=self.match.isChecked(),
            device=self.device.currentText())
        mc = ModelConfig(**MODEL_PRESETS[self.size.currentText()],
                         padding=self.padding.currentText(), norm="batch", dropout=0.0)
        chosen = choice(self.start_from)
        init = None if chosen == NEW_MODEL else (
            self.init_file.path() if chosen == FROM_FILE else chosen)
        if chosen == FROM_FILE and init is None:
            raise InputError("choose the model file to fine-tune.")
        return cfg, mc, init

    # ---- running ------------------------------------------------------------------------
    def start(self) -> None:
        from ..train import train

        try:
            images, labels, regions, names = self.snapshot()
            cfg, mc, init = self.configs()
        except NapariUNetError as err:
            refuse(self.status, "Not trained", err)
            return
        pairs = self._pair_names()
        chosen = self.out.path()  # a folder: a new file in it
        out = (named_with(chosen, ".safetensors") if chosen and not chosen.is_dir()
               else default_model_path(pairs[0][0], chosen))
        self.plot.clear()
        self.warned.setText("")
        self.status.setText(f"Training… the best model is saved to {out}")
        unchanged = [lab for _, lab, _ in pairs
                     if lab in self.viewer.layers and is_uncorrected(self.viewer.layers[lab])]
        if unchanged:  # napari paints no layer of overview levels (a slide's result)
            show_info(f"'{unchanged[0]}' is a prediction you have not corrected: a model "
                      "trained on it learns what it already predicts. " + (
                          "Predict 'only the part in view', correct that and train on it."
                          if self.viewer.layers[unchanged[0]].multiscale else
                          "Paint your corrections into it first for a better model."))
        self.controls.launch(
            train(images, labels, cfg, model_config=mc, init_from=init, out=out, names=names,
                  regions=regions),
            desc="Training U-Net", total=1000, on_event=self._on_event,
            on_done=lambda r, out=out: self._on_done(r, out), on_finished=self.refresh_models,
            on_refused=lambda message: self.status.setText(f"Not trained: {message}"))

    def _on_event(self, event) -> None:
        self.controls.progress(int(1000 * event.progress))
        if event.kind in ("start", "info"):
            self.status.setText(event.message)
        elif event.kind == "warning":
            show_warning(event.message)
            self.warned.setText("\n".join(filter(None, [self.warned.text(), event.message])))
        elif event.kind == "epoch":
            score = event.val.get("score") if event.val else None
            self.plot.add(event.loss, score)
            self.status.setText(f"epoch {event.epoch}: loss {event.loss:.3f}" + (
                f", validation score {score:.3f}" if score is not None else ""))
        elif event.kind == "saved":
            self.last_model = event.path

    def _on_done(self, result, out) -> None:
        self.last_model = str(out)
        if Path(out).is_file():  # finished, or cancelled after a model was saved
            models_hub().saved.emit(str(out))
        if result is None:
            text = f"Cancelled. The best model so far is saved in {out}"
        else:
            from ..train import SCORE_MEANING, STARTING_MODEL_KEPT

            quality = (f"best validation score {result.best_score:.3f} ("
                       f"{SCORE_MEANING[result.checkpoint.mode]}; 1 is perfect)"
                       if result.best_score is not None
                       else "no validation image (label a second image, or a larger "
                             "one, to get one)")
            text = f"Finished ({result.stopped}) on {result.device}: {quality}; saved in {out}"
            if result.best_epoch == 0:
                text += ". " + STARTING_MODEL_KEPT
            if result.report is not None:
                text += f" (report: {result.report.name})"
        self.status.setText(text)
        show_info(text)
