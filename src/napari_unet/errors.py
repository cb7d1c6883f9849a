"""Exceptions the engine raises for problems a user can fix.

Each message is one plain sentence that names the image, layer or file and the problem, so
the CLI can print it as is (exit status 2) and the widgets can show it as a notification.
"""


class NapariUNetError(Exception):
    """Base class of every error napari-unet reports to a user."""


class InputError(NapariUNetError, ValueError):
    """The images, labels or options given cannot be used as they are."""


class ModelFileError(NapariUNetError):
    """A model file is missing, truncated, foreign or unsafe to open."""


class SetupError(NapariUNetError):
    """What napari-unet runs on is missing or broken on this computer (PyTorch)."""
