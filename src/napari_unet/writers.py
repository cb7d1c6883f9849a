"""Writing labels (or images) with their scale: OME-TIFF and OME-Zarr.

Used by napari's File > Save Layers (the plugin's writer contributions) and usable from
Python. The pixel size travels as OME metadata, so Fiji, QuPath, napari-ome-zarr and others
show the result at the image's scale.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_AXES = {2: "yx", 3: "zyx", 4: "tzyx"}


def levels_of(data) -> list:
    """The levels of a multiscale layer's data (napari passes them as a sequence, the full
    resolution first: the overview levels of a large prediction), or ``[data]``."""
    from collections.abc import Sequence

    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return list(data)
    return [data]


def _geometry(data, meta: dict) -> tuple[list[float], list[float]]:
    nd = np.ndim(data)
    scale = [float(s) for s in (meta.get("scale") or [1.0] * nd)][-nd:]
    translate = [float(t) for t in (meta.get("translate") or [0.0] * nd)][-nd:]
    return scale, translate


def write_ome_tiff(path: str | os.PathLike, data, meta: dict | None = None) -> list[str]:
    """Write ``data`` (2D to 4D) as an OME-TIFF with the physical pixel sizes of ``scale``;
    lazy data (zarr, Dask: labels predicted on disk) as a tiled TIFF (a BigTIFF from 4 GB)
    read a band at a time, never whole; of a multiscale layer, its full resolution.
    Atomically."""
    from .io import atomic_imwrite, tiled

    data = levels_of(data)[0]
    meta = meta or {}
    scale, _ = _geometry(data, meta)
    axes = _AXES[np.ndim(data)].upper()
    ome = {"axes": axes, "PhysicalSizeX": scale[-1], "PhysicalSizeY": scale[-2]}
    if np.ndim(data) >= 3:
        ome["PhysicalSizeZ"] = scale[-3]
    whole = {"data": data} if isinstance(data, np.ndarray) else tiled(data)
    return [str(atomic_imwrite(path, **whole, ome=True, metadata=ome))]


def write_ome_zarr(path: str | os.PathLike, data, meta: dict | None = None,
                   chunk: int = 1024) -> list[str]:
    """Write ``data`` (2D to 4D) as an OME-Zarr (NGFF 0.4) with the layer's scale and
    translation; copied block by block, so a lazy array stays lazy. A multiscale layer's
    levels (a list, the full resolution first) become the image's resolution levels."""
    import shutil

    import zarr

    from .blockwise import blocks

    meta = meta or {}
    path = Path(path)
    levels = levels_of(data)
    full = levels[0]
    scale, translate = _geometry(full, meta)
    nd = np.ndim(full)
    axes = [{"name": a, "type": "time" if a == "t" else "space"} for a in _AXES[nd]]
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for k, level in enumerate(levels):
        factor = [f / s for f, s in zip(full.shape, level.shape, strict=True)]
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [s * f for s, f in zip(scale, factor, strict=True)]},
            {"type": "translation", "translation": translate}]})
        lead = tuple(level.shape[:-2])
        arr = root.create_array(str(k), shape=tuple(level.shape), dtype=level.dtype,
                                chunks=(1,) * len(lead) + (chunk, chunk),
                                chunk_key_encoding={"name": "v2", "separator": "/"})
        for index in np.ndindex(*lead):
            for sl in blocks(level.shape[-2:], chunk):
                arr[(*index, *sl)] = np.asarray(level[(*index, *sl)])
    root.attrs["multiscales"] = [{
        "version": "0.4", "name": meta.get("name", path.stem), "axes": axes,
        "datasets": datasets,
    }]
    return [str(path)]


def write_layer(path: str, data, meta: dict) -> list[str]:
    """napari writer: ``.ome.zarr``/``.zarr`` as OME-Zarr, anything else as OME-TIFF."""
    if path.lower().endswith(".zarr"):
        return write_ome_zarr(path, data, meta)
    return write_ome_tiff(path, data, meta)
