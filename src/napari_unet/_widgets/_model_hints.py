"""What the Predict widget says about the chosen model, and which of its settings apply;
the Train widget's label mode and target follow the model chosen to fine-tune."""

from __future__ import annotations

from ..checkpoint import (
    recorded_classes,
    recorded_diameter,
    recorded_task,
    recorded_threshold,
)
from ..errors import NapariUNetError
from ..pretrained import resolve_model
from ._forms import FROM_FILE, NEW_MODEL, applies, choice

OWN_THRESHOLD = "use the model's calibrated threshold"
UNCALIBRATED = "use 0.5 (the model was trained without validation images to calibrate one)"
INSTANCES_ONLY = "for instance models; this model segments classes"
ONE_FOREGROUND = ("for models of background and one class; this model labels each pixel "
                  "with the likeliest of its {k} classes")


def chosen_model_file(widget):
    """The chosen napari-unet model file, or None (nothing chosen yet, a file that does
    not exist, or a bioimage.io package)."""
    try:
        path = resolve_model(widget.model_path())
    except NapariUNetError:
        return None
    return path if path.suffix == ".safetensors" and path.is_file() else None


def describe_model(widget) -> None:
    """Say what cell size the chosen model learnt (what *Cell diameter* resizes to) and its
    calibrated threshold, and grey out what does not apply to it: separating, sizing and
    linking objects for a model of classes, the threshold for one of three or more."""
    path = chosen_model_file(widget)
    classes = recorded_classes(path) if path is not None else None
    applies((widget.method, widget.necks, widget.min_size, widget.link), classes is None,
            INSTANCES_ONLY)
    applies((widget.own_threshold,), classes in (None, 2), ONE_FOREGROUND.format(k=classes))
    follow_threshold(widget)
    if path is None:
        widget.diameter_hint.setText("")
        widget.own_threshold.setText(OWN_THRESHOLD)
        return
    size = recorded_diameter(path)
    learnt = f"learnt cells of about {size:.0f} px" if size else "does not record its cell size"
    widget.diameter_hint.setText(f"the model {learnt}" if classes is None
                                 else f"a model of {classes} classes; it {learnt}")
    threshold = recorded_threshold(path)
    widget.own_threshold.setText(f"{OWN_THRESHOLD} ({threshold:.2f})" if threshold
                                 else UNCALIBRATED)
    if threshold and widget.own_threshold.isChecked():  # unticked, it starts from there
        widget.threshold.setValue(threshold)


def follow_threshold(widget, *_) -> None:
    """The threshold is typed where the model's own is not used and a threshold applies."""
    own = widget.own_threshold
    widget.threshold.setEnabled(own.isEnabled() and not own.isChecked())


def follow_model_kind(widget) -> None:
    """The Train widget's label mode and instance target follow the model chosen to
    fine-tune, which is fine-tuned for what it was made for."""
    chosen = choice(widget.start_from)
    path = widget.init_file.path() if chosen == FROM_FILE else chosen
    if chosen == NEW_MODEL or not path:
        return
    try:
        task = recorded_task(resolve_model(path))
    except NapariUNetError:
        return
    if task.get("mode") in ("instances", "semantic"):
        widget.mode.setCurrentText(task["mode"])
    if task.get("mode") == "instances" and task.get("target"):
        widget.target.setCurrentText(task["target"])
