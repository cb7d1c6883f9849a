"""napari-unet: train, fine-tune and run a U-Net on the images open in napari.

Importing the package imports neither torch nor Qt; the engine lives in the sub-modules.
"""

__version__ = "0.1.0"
