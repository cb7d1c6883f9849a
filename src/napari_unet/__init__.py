"""napari-unet: train, fine-tune and run a U-Net on the images open in napari.

Importing the package imports neither torch nor Qt; the engine lives in the sub-modules.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-unet")  # set from the git tag when installed
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
