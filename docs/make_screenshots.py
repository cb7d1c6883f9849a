"""Screenshots of the napari-unet widgets docked in a real napari window, with real data.

Re-run under a virtual screen from the repository root (needs ../shared/data):

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py

It opens a DSB 2018 nuclei image of ``val/`` (CC0) and its labels, trains a small model for
30 seconds through the Train widget, predicts with the Predict widget and the shipped
``nuclei`` model (which never saw ``val/``; 30 seconds of training separate few touching
nuclei), shows its measurements in napari's Features table widget, opens the separation
view, and writes docs/images/*.png.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

# napari's settings in a scratch file, so that quieting its pop-ups changes nothing of yours
os.environ.setdefault("NAPARI_CONFIG", os.path.join(tempfile.mkdtemp(), "settings.yaml"))

import napari  # noqa: E402
import numpy as np  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "dsb2018_fluo" / "val"
OUT = ROOT / "docs" / "images"
IMAGE_ID = "1c681dfa5cf7e413305d2e90ee47553a46e29cce4f6ed034c8297e511714f867"


def wait(widget, seconds: float = 600) -> None:
    """Until the widget's run (or, for the separation view, its computation) has ended."""
    end = time.time() + seconds
    running = ((lambda: widget.busy) if hasattr(widget, "busy")
               else (lambda: widget.controls.run is not None))
    while running() and time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        QApplication.processEvents()


def shot(viewer, name: str) -> None:
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
    viewer.screenshot(str(OUT / name), canvas_only=False)
    print("wrote", OUT / name)


def main() -> None:
    from napari_unet.io import read_image
    from napari_unet.pretrained import shipped_choices

    os.environ.setdefault("NAPARI_UNET_HOME", tempfile.mkdtemp())
    OUT.mkdir(parents=True, exist_ok=True)
    image = read_image(DATA / "images" / f"{IMAGE_ID}.png")
    if image.ndim == 3:
        image = image[..., 0]
    labels = read_image(DATA / "labels" / f"{IMAGE_ID}.tif").astype(np.int32)
    from napari.settings import get_settings

    # only errors pop up: a warning about the machine's Qt binding is not part of the plugin
    get_settings().application.gui_notification_level = "error"
    viewer = napari.Viewer(title="napari-unet", show=True)
    viewer.window.resize(1400, 900)
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(labels, name="nuclei labels", opacity=0.4)

    _, train = viewer.window.add_plugin_dock_widget("napari-unet", "Train")
    train.size.setCurrentText("small")
    train.padding.setCurrentText("same")
    train.amount.setValue(0.5)
    train.controls.start_btn.click()
    time.sleep(8)
    for _ in range(50):
        QApplication.processEvents()
    wait(train)
    shot(viewer, "train_widget.png")
    viewer.window.remove_dock_widget(train)

    _, pred = viewer.window.add_plugin_dock_widget("napari-unet", "Predict")
    pred.refresh_models()
    pred.model.setCurrentText(shipped_choices()[0])
    pred.probabilities.setChecked(True)
    pred.controls.start_btn.click()
    wait(pred)
    viewer.layers["nuclei labels"].visible = False
    shot(viewer, "predict_widget.png")
    viewer.window.remove_dock_widget(pred)

    viewer.layers.selection.active = viewer.layers["nuclei segmentation"]
    _, table = viewer.window.add_plugin_dock_widget("napari", "Features table widget")
    shot(viewer, "measurements.png")
    viewer.window.remove_dock_widget(table)

    _, sep = viewer.window.add_plugin_dock_widget("napari-unet", "Touching-cell separation")
    sep.labels.setCurrentText("nuclei labels")
    sep.show_weights()
    wait(sep)
    for name in ("nuclei segmentation", "nuclei probabilities"):
        viewer.layers[name].visible = False
    shot(viewer, "separation_weights.png")
    sep.prediction.setCurrentText("nuclei segmentation")
    sep.show_splits()
    wait(sep)
    for name in ("nuclei labels weight map", "nuclei labels separating borders"):
        viewer.layers[name].visible = False
    shot(viewer, "separation_splits.png")
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
