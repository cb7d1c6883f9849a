"""Models shipped with the package: ``napari-unet train --from nuclei``, or pick
"nuclei (shipped)" in the widgets.

Each is a safe ``.safetensors`` model file in ``napari_unet/models/`` whose metadata names the
data it was trained on, its licence, the recipe (``benchmarks/train_nuclei_model.py``) and
its scores.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelFileError

_FOLDER = Path(__file__).parent / "models"
_SUFFIX = " (shipped)"


def pretrained_names() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.stem for p in _FOLDER.glob("*.safetensors"))


def shipped_choices() -> list[str]:
    """How the widgets list the shipped models: 'nuclei (shipped)'."""
    return [f"{name}{_SUFFIX}" for name in pretrained_names()]


def pretrained_path(name: str) -> Path:
    """The file of the shipped model ``name`` ('nuclei' or 'nuclei (shipped)')."""
    name = name.removesuffix(_SUFFIX)
    path = _FOLDER / f"{name}.safetensors"
    if not path.is_file():
        names = ", ".join(pretrained_names()) or "none"
        raise ModelFileError(f"there is no model file {name!r} and no shipped model of that "
                             f"name (shipped: {names}).")
    return path


def resolve_model(spec: str | os.PathLike) -> Path:
    """A model file's path from a path, or from the name of a shipped model."""
    path = Path(spec)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    return pretrained_path(str(spec))
