"""Models whose answer is known, for tests that check what is done with it."""

import torch

from napari_unet.checkpoint import Checkpoint
from napari_unet.config import ModelConfig
from napari_unet.model import UNet


def thresholding_model(mode: str = "instances") -> Checkpoint:
    """A U-Net whose weights pass the normalised image through its first level and say
    'foreground' where it is above 0.5 (a sigmoid of 20 x (image - 0.5))."""
    torch.manual_seed(0)
    net = UNet(ModelConfig(depth=2, base_channels=4, norm="none", dropout=0.0,
                           padding="same"))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for conv in (net.inc[0], net.inc[3], net.ups[-1].conv[0], net.ups[-1].conv[3]):
            conv.weight[0, 0, 1, 1] = 1.0  # channel 0 carries the image (skip at index 0)
        net.head.weight[1, 0] = 20.0
        net.head.bias[1] = -10.0
    task = {"mode": mode, "target": "two_class", "n_classes": 2, "threshold": 0.5}
    return Checkpoint(config=net.config, state_dict=net.state_dict(), task=task)
