"""The dock widgets: the only part of napari-unet that imports Qt and napari."""

from .predict import PredictWidget
from .separation import SeparationWidget
from .train import TrainWidget

__all__ = ["PredictWidget", "SeparationWidget", "TrainWidget"]
