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


class OutputError(NapariUNetError):
    """A model or result cannot be written where asked (the disk full, no permission)."""


def _why(err: OSError) -> str:
    """What the system said, as a clause: 'no space left on device'."""
    return (err.strerror or str(err)).rstrip(".").lower()


def could_not_write(path, err: OSError) -> OutputError:
    """The sentence for a write that failed: where, and why in the system's words."""
    return OutputError(f"could not write {path}: {_why(err)}; free some space there or "
                       "choose another place.")


def os_error_sentence(err: OSError) -> str:
    """An error of the system (a file that cannot be read or written) as one line."""
    return f"{err.filename}: {_why(err)}." if err.filename else f"{_why(err)}."
