"""Exceptions the engine raises for problems a user can fix.

Each message is one plain sentence that names the image, layer or file and the problem, so
the CLI can print it as is (exit status 2) and the widgets can show it as a notification.
"""

from pathlib import Path


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


def _file_in_the_way(folder) -> str | None:
    """The file standing where ``folder`` (or one of its parents) is needed, if any: the
    nearest of them that exists is a file."""
    for place in (Path(folder), *Path(folder).parents):
        if place.exists():
            return None if place.is_dir() else str(place)
    return None


def could_not_write(path, err: OSError) -> OutputError:
    """The sentence for a write that failed: where, and why in the system's words (or the
    file in the way of its folder); space is asked for only where the disk is full."""
    import errno

    blocker = _file_in_the_way(Path(path).parent)
    if blocker is not None:
        return OutputError(f"could not write {path}: {blocker} is a file, not a folder; "
                           "choose another place.")
    full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return OutputError(f"could not write {path}: {_why(err)}; "
                       f"{'free some space there or ' if full else ''}choose another place.")


def os_error_sentence(err: OSError) -> str:
    """An error of the system (a file that cannot be read or written) as one line."""
    if err.filename and isinstance(err, (FileExistsError, NotADirectoryError)):
        blocker = _file_in_the_way(err.filename)  # a folder could not be made: a file is there
        if blocker is not None:
            return f"{blocker} is a file, not a folder; choose another place."
    return f"{err.filename}: {_why(err)}." if err.filename else f"{_why(err)}."
