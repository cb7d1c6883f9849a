import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_unet.synthetic import touching_cells


@pytest.fixture(autouse=True)
def models_home(tmp_path, monkeypatch):
    """Models saved by the widgets go to a temporary folder, not the user's home."""
    monkeypatch.setenv("NAPARI_UNET_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


@pytest.fixture
def notes():
    """Messages of the napari notifications shown during a test."""
    seen = []

    def record(notification):
        seen.append(str(getattr(notification, "message", notification)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def cells_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    image, labels = touching_cells((96, 96), n_cells=10, radius=8, seed=0)
    viewer.add_image(image, name="cells", scale=(2.0, 0.5), translate=(10, 20))
    viewer.add_labels(labels.astype(np.int32), name="cells labels", scale=(2.0, 0.5))
    return viewer


def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    return widget


@pytest.fixture
def model_file(tmp_path):
    """A tiny model trained for two steps ('same' padding)."""
    from napari_unet.config import ModelConfig, TrainConfig
    from napari_unet.progress import run
    from napari_unet.train import train

    image, labels = touching_cells((96, 96), n_cells=10, radius=8, seed=1)
    path = tmp_path / "m.safetensors"
    run(train([image], [labels], TrainConfig(epochs=1, steps_per_epoch=2, patch_size=64,
                                              val_fraction=0),
              model_config=ModelConfig(base_channels=4, depth=2, dropout=0,
                                       padding="same"), out=path))
    return path


def set_quick(widget, amount=1, unit="epochs", size="tiny"):
    """A Train widget set to train a tiny 'same' network for ``amount`` ``unit``."""
    widget.size.setCurrentText(size)
    widget.padding.setCurrentText("same")
    widget.unit.setCurrentText(unit)
    widget.amount.setValue(amount)


def start_and_wait_for_a_step(qtbot, widget):
    """Start the widget's run and wait until its progress bar has moved."""
    widget.controls.start_btn.click()
    qtbot.waitUntil(lambda: widget.controls.pbar is not None and widget.controls.pbar.n > 0,
                    timeout=60_000)


def wait_done(qtbot, widget, timeout=120_000):
    """Wait until the widget's run (training, prediction) has ended."""
    qtbot.waitUntil(lambda: widget.controls.run is None, timeout=timeout)
