"""Reading image and label files, pairing them by name, writing results atomically."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from .errors import InputError, could_not_write

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
#: Microscopes' own file formats, which napari-unet does not read: said by name, with what
#: to do, instead of a decoder's error or a folder said to hold no image.
MICROSCOPE_FORMATS = {
    ".czi": "Zeiss CZI", ".zvi": "Zeiss ZVI", ".nd2": "Nikon ND2",
    ".lif": "Leica LIF", ".lof": "Leica LOF", ".oib": "Olympus OIB", ".oif": "Olympus OIF",
    ".oir": "Olympus OIR", ".vsi": "Olympus VSI", ".ims": "Imaris", ".dv": "DeltaVision",
    ".ics": "ICS", ".svs": "Aperio slide", ".ndpi": "Hamamatsu slide",
    ".mrxs": "3DHISTECH slide", ".scn": "Leica slide"}


def _convert(them: bool = False) -> str:
    """What to do with a microscope's file (or files)."""
    return (f"save {'them' if them else 'it'} as TIFF (in Fiji, opened with Bio-Formats: "
            "File > Save As > Tiff...) or, for a slide, as OME-Zarr (bioformats2raw), and "
            f"give {'those files' if them else 'that file'}")


def stem_of(path: Path) -> str:
    """A file's name without its extension (``.ome.tif`` and ``.ome.tiff`` as one)."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_image(f: Path) -> bool:
    return f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")


def _an_image_in(folder: Path) -> Path | None:
    """An image file directly in ``folder``, or None (also where it cannot be read: a
    drive's lost+found, System Volume Information)."""
    try:
        return next((f for f in folder.iterdir() if _is_image(f)), None)
    except OSError:
        return None


def collect(spec: str | os.PathLike, besides=()) -> list[Path]:
    """Image files named by a folder, a glob pattern (``**`` for any depth of folders) or a
    single file, sorted. A folder's hidden files are left out, as a glob leaves them out:
    macOS writes ``._img01.tif`` beside every file it copies to a USB drive, and those are
    no images. The folders inside a folder are not read; where they hold images, that is
    said (a refusal where the folder itself holds none, else a warning), with the glob
    that reads them; ``besides``: the other paths of the command, which are read anyway
    (``data`` and ``data/labels``; results written into the folder of their images)."""
    p = Path(spec)
    if p.is_dir():
        files = [f for f in p.iterdir() if _is_image(f)]
        given = {Path(b).resolve() for b in besides}
        inner = {d: _an_image_in(d) for d in sorted(p.iterdir())
                 if d.is_dir() and not d.name.startswith(".") and d.resolve() not in given}
        inner = {d: f for d, f in inner.items() if f is not None}  # folder: an image in it
        if inner:
            names = [d.name for d in inner]
            suffix = next(iter(inner.values())).suffix
            unread = (f"its folder{'s' if len(names) > 1 else ''} "
                      f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                      f" hold{'' if len(names) > 1 else 's'} images, and folders inside a "
                      f"folder are not read: give '{p / '**' / ('*' + suffix)}' to read them "
                      "all")
            if not files:
                raise InputError(f"{spec} holds no image files; {unread}.")
            import warnings

            warnings.warn(f"only the images directly in {spec} are read; {unread}.",
                          stacklevel=2)
    elif p.is_file():
        files = [p]
    else:
        files = [Path(f) for f in glob.glob(str(spec), recursive=True) if Path(f).is_file()]
        if not files:
            raise InputError(f"{spec}: no such file, folder or matching files.")
    files = sorted(files)
    if not files:
        theirs = sorted({f.suffix.lower() for f in p.iterdir()} & set(MICROSCOPE_FORMATS))
        if theirs:
            raise InputError(
                f"{spec} holds no image files napari-unet reads, but microscope files "
                f"({', '.join(MICROSCOPE_FORMATS[t] for t in theirs)}): "
                f"{_convert(them=True)}.")
        raise InputError(f"{spec}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return files


#: Endings that name a label file after its image (``img01_masks.tif`` for ``img01.tif``):
#: Cellpose's ``_masks`` and ``_seg``, and the names people give such files by hand.
LABEL_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_seg",
                  "_segmentation", "_annotations", "_annotation", "_gt", "_ground_truth")


def _label_of(stem: str) -> str | None:
    """The image stem that a label file's stem names (``img01_masks`` -> ``img01``), or
    None."""
    low = stem.lower()
    for suffix in LABEL_SUFFIXES:
        for sep in ("_", "-"):
            end = sep + suffix[1:]
            if low.endswith(end) and len(stem) > len(end):
                return stem[: -len(end)]
    return None


def _partners(images: list[Path], others: list[Path], what: str) -> list[Path | None]:
    """For each image, the file of ``others`` that belongs to it: the one of the same name
    without extension (never the image itself), else the one named after it with a label
    ending (:data:`LABEL_SUFFIXES`); None where there is none. Two candidates of the same
    kind are refused with a sentence naming them."""
    exact: dict[str, list[Path]] = {}
    suffixed: dict[str, list[Path]] = {}
    for f in others:
        exact.setdefault(stem_of(f), []).append(f)
        named = _label_of(stem_of(f))
        if named is not None:
            suffixed.setdefault(named, []).append(f)
    found = []
    for f in images:
        for table in (exact, suffixed):
            candidates = [c for c in table.get(stem_of(f), []) if not _same_file(c, f)]
            if len(candidates) > 1:
                names = " and ".join(c.name for c in candidates[:2])
                raise InputError(f"{f.name}: two {what} files could belong to it ({names}); "
                                 "keep one.")
            if candidates:
                found.append(candidates[0])
                break
        else:
            found.append(None)
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def pair_by_stem(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path]]:
    """Match image and label files: by file name without extension (``img01.tif`` in an
    images folder with ``img01.png`` in a labels folder), or a label file named after its
    image with a label ending (``img01_masks.tif``, :data:`LABEL_SUFFIXES`), so that one
    folder can hold both, as Cellpose keeps them. A single image file and a single label
    file are a pair whatever their names. A file is never its own labels."""
    label_set = {f.resolve() for f in labels}
    image_stems = {stem_of(f) for f in images}
    # where one folder holds both, a file named after another image with a label ending
    # is that image's labels, not an image
    images = [f for f in images if not (f.resolve() in label_set
                                        and _label_of(stem_of(f)) in image_stems)]
    if len(images) == 1 and len(labels) == 1 and not _same_file(images[0], labels[0]):
        return [(images[0], labels[0])]
    found = _partners(images, labels, "label")
    missing = [f for f, lab in zip(images, found) if lab is None]
    if missing:
        shown = ", ".join(f.name for f in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise InputError(f"no label file for image(s) {shown}: name each label file as its "
                         "image (in another folder), or as its image with an ending such "
                         f"as _masks ({stem_of(missing[0])}_masks.tif).")
    return list(zip(images, found))


def refuse_lossy_labels(path: Path) -> None:
    """Labels saved as JPEG are refused: its compression changes them (values between the
    labels, along their edges), and each value's pieces would be taken for cells."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        raise InputError(f"{path.name}: labels saved as JPEG are changed by its compression "
                         "(new values appear along the edges of the labels); save labels as "
                         "PNG or TIFF, which keep them exactly.")


def read_pairs(images: str | os.PathLike, labels: str | os.PathLike):
    """Image and label files (folders, globs or single files) paired by
    :func:`pair_by_stem`, read: ``(image paths, images, labels)``. A label file saved as a
    colour image or as JPEG is refused with a sentence."""
    pairs = pair_by_stem(collect(images, besides=[labels]), collect(labels, besides=[images]))
    for _, b in pairs:
        refuse_lossy_labels(b)
    imgs, labs = [], []
    for a, b in pairs:
        imgs.append(read_image(a))
        labs.append(read_image(b))
        if labs[-1].ndim == 3 and labs[-1].shape[-1] in (3, 4):  # a label PNG saved as RGB(A)
            raise InputError(f"{a.name}: the label file is a colour image; save labels as a "
                             "single-channel image.")
    return [a for a, _ in pairs], imgs, labs


def without_label_files(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """The files that are not label files beside their images (``img01_masks.tif`` in the
    folder of ``img01.tif``), and those that are."""
    stems = {(f.parent, stem_of(f)) for f in files}
    skipped = [f for f in files if (f.parent, _label_of(stem_of(f))) in stems]
    return [f for f in files if f not in skipped], skipped


def pairs_among(files: list[Path], labels_folder: str | os.PathLike | None = None
                ) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Image files chosen together with their label files (``img01.tif`` with
    ``img01_masks.tif``, as Cellpose keeps them in one folder), or alone, their label files
    then found beside them (a label ending, :data:`LABEL_SUFFIXES`) or in ``labels_folder``
    (of the same name, or with a label ending): ``(pairs, images without a label file)``.
    Labels saved as JPEG, or two label files for one image, are refused with a
    sentence."""
    images, labels = without_label_files([Path(f).absolute() for f in files])
    beside = []
    for folder in dict.fromkeys(f.parent for f in images):
        try:
            beside += sorted(f for f in folder.iterdir()
                             if _is_image(f) and _label_of(stem_of(f)) is not None)
        except OSError:  # a folder that cannot be listed: the files chosen only
            pass
    candidates = list(dict.fromkeys([*labels, *beside]))
    found = _partners(images, candidates, "label")
    if labels_folder is not None:
        elsewhere = collect(Path(labels_folder).absolute())
        found = [f if f is not None else again for f, again in
                 zip(found, _partners(images, elsewhere, "label"))]
    pairs = [(image, label) for image, label in zip(images, found) if label is not None]
    for _, label in pairs:
        refuse_lossy_labels(label)
    return pairs, [image for image, label in zip(images, found) if label is None]


def match_by_stem(images: list[Path], others: list[Path]) -> list[Path | None]:
    """For each image, the file of ``others`` that belongs to it (the same name without
    extension, or the name with a label ending), or None."""
    found = _partners(images, others, "matching")
    plain = {stem_of(f): f for f in others}  # a truth file img01_masks for a prediction img01
    return [f if f is not None else plain.get(_label_of(stem_of(i)) or "")
            for i, f in zip(images, found)]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF or PNG/JPEG/BMP file into a numpy array, with a clear error if it fails.

    A trailing axis of length one (a grey image saved as ``(H, W, 1)``, a stack as
    ``(N, H, W, 1)``) is dropped: read as it is, it would be a stack of planes one pixel
    wide."""
    import logging

    path = Path(path)
    if path.suffix.lower() in MICROSCOPE_FORMATS:
        raise InputError(f"{path.name} is a {MICROSCOPE_FORMATS[path.suffix.lower()]} file, "
                         f"which napari-unet does not read: {_convert()}.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            quiet = logging.getLogger("tifffile")  # it logs a damaged file, then reads nothing
            level = quiet.level
            quiet.setLevel(logging.ERROR + 1)
            try:
                image = tifffile.imread(path)
            finally:
                quiet.setLevel(level)
        else:
            import imageio.v3 as iio

            image = np.asarray(iio.imread(path))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found.") from None
    except Exception as err:  # any decoder failure is the file's problem, said in one line
        if path.is_file() and path.stat().st_size == 0:
            raise InputError(f"{path.name} is empty (0 bytes): it was not saved completely; "
                             "save or copy it again.") from None
        raise InputError(f"{path.name} could not be read as an image ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'unreadable'}).") from None
    if image.size == 0:
        raise InputError(f"{path.name} holds no image data; the file may be damaged or cut "
                         "short.")
    if image.ndim >= 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return image


def tiff_metadata(path: str | os.PathLike) -> dict:
    """What a TIFF says about the image :func:`read_image` reads from it: ``axes`` (letters
    as tifffile names them, one per axis of that array: ImageJ's ``"ZCYX"``, ``"YXS"`` for
    colour samples, ``"QYX"`` where the file does not say), the pixel size as
    ``resolution`` (pixels per unit, x and y) with its ``resolutionunit`` tag, and ImageJ's
    ``unit``, ``spacing`` (between z planes) and ``finterval`` (between time points) where
    the file has them. Empty for other files and for a TIFF whose metadata cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return {}
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
            page = tif.pages.first
            meta = {"axes": axes[:-1] if len(shape) >= 3 and shape[-1] == 1 else axes}
            tags = page.tags
            if "XResolution" in tags and "YResolution" in tags:
                meta["resolution"] = tuple(float(r) for r in page.resolution)
                meta["resolutionunit"] = int(page.resolutionunit)
            ij = tif.imagej_metadata or {}
            for key in ("unit", "spacing", "finterval"):
                if ij.get(key) not in (None, ""):
                    meta[key] = ij[key]
            if tif.is_ome:  # its pixel size is in the OME-XML (the tags say 1 px per unit)
                meta.update(_ome_pixel_size(tif.ome_metadata))
            return meta
    except Exception:  # noqa: BLE001 - unreadable metadata says nothing about axes
        return {}


def _ome_pixel_size(xml: str) -> dict:
    """The pixel size of an OME-TIFF's first image as :func:`tiff_metadata` gives it, or
    nothing where the OME-XML gives none."""
    import tifffile

    image = tifffile.xml2dict(xml)["OME"]["Image"]
    pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
    x, y = pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeY")
    if not x or not y:
        return {}
    unit = str(pixels.get("PhysicalSizeXUnit", "µm"))
    found = {"resolution": (1.0 / float(x), 1.0 / float(y)), "resolutionunit": 1,
             "unit": "micron" if unit in ("µm", "um") else unit}
    if pixels.get("PhysicalSizeZ"):
        found["spacing"] = float(pixels["PhysicalSizeZ"])
    return found


def channels_first(path: str | os.PathLike) -> bool:
    """Whether a TIFF file says that its first axis is channels (ImageJ's ``CYX``, or
    colour samples stored plane by plane), not planes of a stack."""
    return tiff_metadata(path).get("axes", "")[:1] in ("C", "S")


#: The axes an ImageJ hyperstack may have, in the order it must hold them.
_IMAGEJ_ORDER = "TZCYXS"


def _imagej_axes(axes: str | None, ndim: int) -> bool:
    if not axes or len(axes) != ndim or any(a not in _IMAGEJ_ORDER for a in axes):
        return False
    positions = [_IMAGEJ_ORDER.index(a) for a in axes]
    return positions == sorted(set(positions)) and axes.endswith(("YX", "YXS"))


def _imagej_dtype(array):
    """The type ImageJ holds ``array`` (numpy, or zarr/Dask read a band at a time) in
    without changing a value (uint8, uint16, float32), or None."""
    if array.dtype in (np.uint8, np.uint16, np.float32):
        return array.dtype
    if array.dtype.kind in "iu" and array.size:
        lo, hi = _range(array)
        if lo >= 0 and hi < 2**16:
            return np.uint8 if hi < 2**8 else np.uint16
    return None


def _range(array) -> tuple[int, int]:
    """The smallest and largest value of ``array``; one on disk is read a band at a time."""
    if isinstance(array, np.ndarray):
        return int(array.min()), int(array.max())
    lo, hi = None, None
    for band in _bands(array, 512):
        lo = int(band.min()) if lo is None else min(lo, int(band.min()))
        hi = int(band.max()) if hi is None else max(hi, int(band.max()))
    return lo, hi


def _bands(array, rows: int):
    """``array`` (2D planes last) a band of ``rows`` rows of one plane at a time."""
    for index in np.ndindex(*array.shape[:-2]):
        for y in range(0, array.shape[-2], rows):
            yield np.asarray(array[(*index, slice(y, y + rows))])


def _imagej(array, meta: dict) -> tuple[np.dtype | None, dict]:
    """The type ``array`` is written in and ``tifffile.imwrite``'s ImageJ keywords, where
    the axes of ``meta`` are ones an ImageJ hyperstack holds and the values fit it (so
    that Fiji opens a time-lapse of z-stacks as one, at the image's calibration); None
    and nothing otherwise."""
    if not _imagej_axes(meta.get("axes"), array.ndim):
        return None, {}
    narrow = _imagej_dtype(array)
    if narrow is None:
        return None, {}
    return narrow, {"imagej": True, "metadata": {"axes": meta["axes"], **{
        k: meta[k] for k in ("unit", "spacing", "finterval") if k in meta}}}


def write_tiff(path: str | os.PathLike, array: np.ndarray, meta: dict | None = None) -> Path:
    """Write a TIFF atomically (temporary file, then rename).

    ``meta`` (as :func:`tiff_metadata` gives it, with ``axes`` naming the axes of
    ``array``) carries an image's pixel size to its results: the resolution tags are
    copied, and an array whose axes ImageJ can hold (``ZYX``, ``TZYX``, ``ZCYX`` ...)
    and whose values fit 8 or 16 bits or are float32 is written as an ImageJ hyperstack
    with those axes, ``unit``, ``spacing`` and ``finterval``, so that Fiji opens a
    time-lapse of z-stacks as one, at the image's calibration."""
    meta = meta or {}
    narrow, imagej = _imagej(array, meta)
    if narrow is not None:
        array = array.astype(narrow, copy=False)
    return atomic_imwrite(path, array, photometric="minisblack",  # three planes are no colour
                          **_resolution(meta), **imagej)


def _resolution(meta: dict) -> dict:
    """The resolution tags of ``meta`` (:func:`tiff_metadata`) as tifffile takes them."""
    if not meta.get("resolution"):
        return {}
    return {"resolution": tuple(meta["resolution"]),
            "resolutionunit": meta.get("resolutionunit")}


def atomic_imwrite(path: str | os.PathLike, data, **kwargs) -> Path:
    """``tifffile.imwrite`` (zlib-compressed) to a temporary file, then renamed, so that
    no half-written result is ever left under ``path``."""
    import tifffile

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp, data, compression="zlib", **kwargs)
        os.replace(tmp, path)
    except OSError as err:  # the disk full, no permission: a sentence naming the file
        raise could_not_write(path, err) from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_tiff_tiled(path: str | os.PathLike, array, meta: dict | None = None,
                     tile: int = 512) -> Path:
    """Write ``array`` (``(H, W)``, or planes ``(..., H, W)``, numpy or zarr) as a tiled TIFF,
    a band of ``tile`` rows at a time, so that a result larger than memory is never read
    whole; with the resolution tags of ``meta`` (:func:`tiff_metadata`), and as an ImageJ
    hyperstack with its axes as :func:`write_tiff` writes one, unless it needs a BigTIFF
    (4 GB or more), which ImageJ cannot read. Atomically."""
    meta = meta or {}
    narrow, imagej = _imagej(array, meta)
    data = tiled(array, tile, narrow)
    return atomic_imwrite(path, **data, photometric="minisblack", **_resolution(meta),
                          **({} if data["bigtiff"] else imagej))


#: Bytes of data beyond which a TIFF is written as a BigTIFF (a classic TIFF's offsets end
#: at 4 GiB; room is left for the tags and tiles that do not compress).
_CLASSIC_TIFF_LIMIT = 2**32 - 2**28


def tiled(array, tile: int = 512, dtype=None) -> dict:
    """What ``tifffile.imwrite`` takes to write ``array`` (numpy, zarr or Dask; 2D planes
    last) as a tiled TIFF read a band of ``tile`` rows at a time: never whole; in ``dtype``
    where one is given (a type that holds every value), a BigTIFF where it is large."""
    w = array.shape[-1]
    dtype = np.dtype(dtype or array.dtype)

    def tiles():
        for band in _bands(array, tile):
            for x in range(0, w, tile):
                part = band[:, x: x + tile]
                full = np.zeros((tile, tile), dtype)
                full[: part.shape[0], : part.shape[1]] = part
                yield full

    big = int(np.prod(array.shape)) * dtype.itemsize >= _CLASSIC_TIFF_LIMIT
    return {"data": tiles(), "shape": tuple(array.shape), "dtype": dtype,
            "tile": (tile, tile), "bigtiff": big}


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
    return open_zarr_axes(path)[0]


def open_zarr_axes(path: str | os.PathLike):
    """:func:`open_zarr` and the axes of what it returns, as letters (``"zyxc"`` for an
    OME-Zarr z-stack of channels), or None for a zarr array that does not name them."""
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
        multiscales = _multiscales(node)
        if not multiscales:
            raise InputError(f"{path.name} is a zarr group without OME-Zarr 'multiscales' "
                             "metadata; give the path of the image array inside it.")
        node = node[multiscales[0]["datasets"][0]["path"]]
        axes = _axis_names(multiscales) or None
    array = da.from_zarr(node)
    if not (axes and len(axes) == array.ndim):
        return array, None
    axes = [str(a).lower() for a in axes]
    for k in range(array.ndim - 1, -1, -1):
        if axes[k] in ("t", "z") and array.shape[k] == 1:
            array = array[(slice(None),) * k + (0,)]
            axes.pop(k)
    if "c" in axes:
        c = axes.index("c")
        if array.shape[c] == 1:
            array = array[(slice(None),) * c + (0,)]
            axes.pop(c)
        else:
            array = da.moveaxis(array, c, -1)
            axes.append(axes.pop(c))
    return array, "".join(axes)


def _multiscales(group) -> list:
    """An OME-Zarr group's ``multiscales`` metadata (NGFF 0.4 or 0.5), or []."""
    attrs = dict(group.attrs)
    return attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales") or []


def _axis_names(multiscales: list) -> list[str]:
    return [str(a["name"] if isinstance(a, dict) else a)
            for a in multiscales[0].get("axes", [])]


def zarr_placement(path: str | os.PathLike, ndim: int) -> tuple[list[float], list[float]]:
    """The pixel size and origin an OME-Zarr image gives its full resolution, for the
    ``ndim`` axes of its labels (its channel axis left out, the last ``ndim`` of the
    others); 1 and 0 where it names none (a zarr array), or they do not fit."""
    import zarr

    placed = {"scale": [1.0] * ndim, "translation": [0.0] * ndim}
    try:
        node = zarr.open(str(path), mode="r")
        multiscales = _multiscales(node) if isinstance(node, zarr.Group) else []
        names = [name.lower() for name in _axis_names(multiscales)] if multiscales else []
        for step in (multiscales[0]["datasets"][0].get("coordinateTransformations", [])
                     if names else []):
            values = step.get(step.get("type"), [])
            kept = [float(v) for n, v in zip(names, values, strict=False) if n != "c"][-ndim:]
            if step.get("type") in placed and len(values) == len(names) and len(kept) == ndim:
                placed[step["type"]] = kept
    except Exception:  # noqa: BLE001 - unreadable metadata places nothing
        pass
    return placed["scale"], placed["translation"]


def zarr_axes(path: str | os.PathLike) -> str | None:
    """The axes an OME-Zarr image names, in the order of its arrays' axes, as capital
    letters (``"CZYX"``): what napari's own reader leaves out when it opens one as a single
    layer. None for a zarr array, a store that names none or not in single letters, or
    one that cannot be read."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
        names = _axis_names(_multiscales(node)) if isinstance(node, zarr.Group) else []
    except Exception:  # noqa: BLE001 - unreadable metadata says nothing about axes
        return None
    if not names or any(len(name) != 1 for name in names):
        return None
    return "".join(names).upper()


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
