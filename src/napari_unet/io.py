"""Reading image and label files, pairing them by name, writing results atomically."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def collect(spec: str | os.PathLike) -> list[Path]:
    """Image files named by a folder, a glob pattern or a single file, sorted."""
    p = Path(spec)
    if p.is_dir():
        files = [f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
    elif p.is_file():
        files = [p]
    else:
        files = [Path(f) for f in glob.glob(str(spec)) if Path(f).is_file()]
        if not files:
            raise InputError(f"{spec}: no such file, folder or matching files.")
    files = sorted(files)
    if not files:
        raise InputError(f"{spec}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def pair_by_stem(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    """Match image and label files by file name without extension."""
    by_stem = {_stem(f): f for f in labels}
    pairs, missing = [], []
    for f in images:
        lab = by_stem.get(_stem(f))
        (pairs.append((f, lab)) if lab is not None else missing.append(f.name))
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise InputError(f"no label file with the same name for image(s) {shown}.")
    return pairs


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF or PNG/JPEG/BMP file into a numpy array, with a clear error if it fails."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found.") from None
    except Exception as err:  # any decoder failure is the file's problem, said in one line
        raise InputError(f"{path.name} could not be read as an image ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'unreadable'}).") from None


def write_tiff(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a TIFF atomically (temporary file, then rename)."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tifffile.imwrite(tmp, array, compression="zlib")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
