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


def read_pairs(images: str | os.PathLike, labels: str | os.PathLike):
    """Image and label files (folders, globs or single files) paired by file name without
    extension, read: ``(image paths, images, labels)``. A label file saved as a colour
    image is refused with a sentence."""
    pairs = pair_by_stem(collect(images), collect(labels))
    imgs, labs = [], []
    for a, b in pairs:
        imgs.append(read_image(a))
        labs.append(read_image(b))
        if labs[-1].ndim == 3 and labs[-1].shape[-1] in (3, 4):  # a label PNG saved as RGB(A)
            raise InputError(f"{a.name}: the label file is a colour image; save labels as a "
                             "single-channel image.")
    return [a for a, _ in pairs], imgs, labs


def match_by_stem(images: list[Path], others: list[Path]) -> list[Path | None]:
    """For each image, the file of ``others`` with the same name without extension, or
    None."""
    by_stem = {_stem(f): f for f in others}
    return [by_stem.get(_stem(f)) for f in images]


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


def is_zarr(path: str | os.PathLike) -> bool:
    """A zarr (or OME-Zarr) directory: named ``*.zarr`` or holding zarr metadata."""
    p = Path(path)
    return p.is_dir() and (p.suffix.lower() == ".zarr" or any(
        (p / f).exists() for f in ("zarr.json", ".zarray", ".zgroup")))


def open_zarr(path: str | os.PathLike):
    """A zarr array or OME-Zarr image as a lazy channels-last Dask array.

    An OME-Zarr group gives its full-resolution level; leading axes of length one (time,
    z) are dropped and a channel axis is moved last, so the result is ``(H, W)`` or
    ``(H, W, C)`` (or a stack ``(N, H, W[, C])``). Nothing is read but the metadata.
    """
    import dask.array as da
    import zarr

    path = Path(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # a broken store is the file's problem, said in one line
        raise InputError(f"{path.name} could not be opened as zarr ({type(err).__name__}).") \
            from None
    axes = None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if not multiscales:
            raise InputError(f"{path.name} is a zarr group without OME-Zarr 'multiscales' "
                             "metadata; give the path of the image array inside it.")
        node = node[multiscales[0]["datasets"][0]["path"]]
        axes = [a["name"] if isinstance(a, dict) else a
                for a in multiscales[0].get("axes", [])] or None
    array = da.from_zarr(node)
    if axes and len(axes) == array.ndim:
        for k in range(array.ndim - 1, -1, -1):
            if axes[k] in ("t", "z") and array.shape[k] == 1:
                array = array[(slice(None),) * k + (0,)]
                axes.pop(k)
        if "c" in axes:
            if array.shape[axes.index("c")] == 1:
                array = array[(slice(None),) * axes.index("c") + (0,)]
            else:
                array = da.moveaxis(array, axes.index("c"), -1)
    return array


def create_zarr(path: str | os.PathLike, shape, dtype, chunks):
    """A new zarr array at ``path`` (replacing one left there)."""
    import shutil

    import zarr

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return zarr.create_array(store=str(path), shape=tuple(shape), dtype=dtype,
                             chunks=tuple(chunks))
