"""Segment image files into result files, one file at a time: the loop of the command
line's ``predict`` and of the Predict widget's *Segment image files…*.

Each image's labels are written to ``OUT/<stem>.tif`` (and its probabilities, if asked, to
``OUT/<stem>_prob.tif``, its objects' measurements to ``OUT/<stem>.csv``), atomically and
with the image's axes and pixel size; an image whose prediction would not fit in memory is
predicted block by block through a scratch folder beside the results. Nothing that is
cancelled or refused is left half-written.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, NapariUNetError


@dataclass(frozen=True)
class FileEvent:
    """Progress over files: ``tiles``, the prediction of file ``index`` (of ``total``)
    going on; or, once that file is written, ``found`` (what was found in it, in words,
    or ``""``) with its prediction's ``notes``; or ``problem``, why it was skipped."""

    index: int
    total: int
    name: str
    tiles: object = None  # napari_unet.predict.PredictEvent
    found: str | None = None
    notes: tuple[str, ...] = ()
    problem: str = ""

    @property
    def finished(self) -> bool:
        """Whether this file is done with (written, or skipped)."""
        return self.found is not None or bool(self.problem)


@dataclass
class FilesResult:
    """The label files written, the files skipped with the reason, and how long it took."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    objects: int = 0
    seconds: float = 0.0
    summary: Path | None = None  # measured: the row per image (napari_unet.measure.SUMMARY)
    rows: list[dict] = field(default_factory=list)  # its rows


def tiff_outputs(f: Path, out: Path) -> tuple[Path, Path]:
    """Where the labels and probabilities of image file ``f`` are written in ``out``."""
    from .io import stem_of

    stem = stem_of(f)
    return out / f"{stem}.tif", out / f"{stem}_prob.tif"


def csv_output(f: Path, out: Path) -> Path:
    """Where the measurements of the objects of image file ``f`` are written in ``out``."""
    return tiff_outputs(f, out)[0].with_suffix(".csv")


def rois_output(f: Path, out: Path) -> Path:
    """Where the ImageJ ROIs of the objects of image file ``f`` are written in ``out``."""
    labels = tiff_outputs(f, out)[0]
    return labels.with_name(labels.stem + "_rois.zip")


def result_folders(files: list[Path], out: Path) -> dict[Path, Path]:
    """The folder of each image file's results: ``out``; or, where images of one name come
    from different folders (a plate's wells read by ``'plate/**/*.tif'``), ``out`` with
    the folders below the one they all share, as they are (``out/A01/img0.tif``)."""
    from .io import stem_of

    folders: dict[str, set[Path]] = {}
    for f in files:
        folders.setdefault(stem_of(f), set()).add(f.parent.resolve())
    if all(len(found) == 1 for found in folders.values()):
        return {f: out for f in files}
    common = Path(os.path.commonpath([f.parent.resolve() for f in files]))
    return {f: out / f.parent.resolve().relative_to(common) for f in files}


def refuse_overwriting_inputs(written: list[tuple[Path, tuple[Path, Path]]],
                              inputs: list[Path], probabilities: bool,
                              folder: str = "--out folder") -> None:
    """Before anything is predicted: no result may replace an input, nor two inputs write
    the same result (``img.tif`` and ``img.png`` in one folder). ``written``: each input
    with its (labels, probabilities) outputs; ``folder``: how the sentence names the place
    of the results."""
    sources = {p.resolve(): p for p in inputs}
    seen: dict[Path, Path] = {}
    for source, outputs in written:
        for target in outputs[: 2 if probabilities else 1]:
            key = target.resolve()
            if key in sources:
                raise NapariUNetError(
                    f"{source.name}: its result {target.name} would replace the input "
                    f"{sources[key]}; choose another {folder}.")
            if key in seen:
                raise NapariUNetError(
                    f"{seen[key]} and {source}: both results would be written to "
                    f"{target}; predict them into different {folder}s.")
            seen[key] = source


def refuse_the_summary(tables: list[Path], out: Path, folder: str = "--out folder") -> None:
    """Before anything is done: no image's table of measurements may be the summary of
    all of them (:data:`napari_unet.measure.SUMMARY`), an image named after it."""
    from .measure import SUMMARY

    summary = (out / SUMMARY).resolve()
    for table in tables:
        if table.resolve() == summary:
            raise NapariUNetError(
                f"an image named {table.stem} would have its measurements written over the "
                f"summary of all images, {SUMMARY}: rename it, or choose another {folder}.")


def predict_files(model, files: list[Path], out, config, *, probabilities: bool = False,
                  channel: int | None = None, chunk: int | None = None,
                  skip_bad: bool = False, folder: str = "--out folder",
                  channel_option: str = "--channel", measure: bool = False,
                  rois: bool = False) -> Generator[FileEvent, None, FilesResult]:
    """Predict image ``files`` with ``model`` (a :class:`~napari_unet.checkpoint.Checkpoint`)
    and ``config`` (:class:`~napari_unet.config.PredictConfig`) into the folder ``out``.

    ``channel``: of files of several channels, the one a single-channel model reads
    (counted from 1); ``chunk``: the block side of an image predicted on disk. A file the
    engine refuses (not an image the model can read) ends the run with its sentence, or,
    with ``skip_bad``, is skipped and named in the result. ``folder`` and
    ``channel_option`` name, in sentences, the place of the results and how a channel is
    chosen. ``measure``: also write each file's measurements of its objects (of its
    classes, for a semantic model) as ``<stem>.csv`` (:mod:`napari_unet.measure`);
    ``rois``: its objects as ImageJ ROIs, ``<stem>_rois.zip`` (:mod:`napari_unet.rois`;
    of an image with objects, predicted in memory: not of a slide's). A
    result that would replace an input is refused when called, before any work. Returns a
    generator that yields a :class:`FileEvent` for each step and returns
    a :class:`FilesResult`."""
    out = Path(out)
    files = [Path(f) for f in files]
    folders = result_folders(files, out)
    refuse_overwriting_inputs([(f, tiff_outputs(f, folders[f])) for f in files], files,
                              probabilities, folder)
    if measure:
        refuse_the_summary([csv_output(f, folders[f]) for f in files], out, folder)
    if rois and model.mode == "semantic":
        raise InputError("ImageJ ROIs are of objects, and this model labels classes: leave "
                         "out the ROIs (--rois), or measure each class's pixels (--measure).")
    return _each_file(model, files, folders, out, config, (probabilities, measure, rois),
                      (channel, channel_option), chunk, skip_bad)


def _each_file(model, files: list[Path], folders: dict[Path, Path], out: Path, config,
               outputs: tuple[bool, bool, bool], channel: tuple, chunk, skip_bad: bool):
    from .measure import SUMMARY, summary_row, write_rows

    result, started = FilesResult(), time.monotonic()
    rows = result.rows
    for index, f in enumerate(files):
        name = str((folders[f] / f.name).relative_to(out))  # img0.tif, or A01/img0.tif
        try:
            found, notes = yield from _one_file(model, f, folders[f], name, config,
                                                outputs, channel, chunk,
                                                (index, len(files)))
        except NapariUNetError as err:
            if not skip_bad:
                raise
            result.skipped.append((name, str(err)))
            yield FileEvent(index, len(files), name, problem=str(err))
            continue
        result.written.append(tiff_outputs(f, folders[f])[0])
        result.objects += found[1] or 0
        if found[2] is not None and model.mode == "instances":
            rows.append(summary_row(name, found[2]))
        yield FileEvent(index, len(files), name, found=found[0], notes=notes)
    if rows:
        result.summary = write_rows(out / SUMMARY, rows)
    result.seconds = time.monotonic() - started
    return result


def _one_file(model, f: Path, out: Path, name: str, config, outputs: tuple[bool, bool, bool],
              channel: tuple, chunk, place: tuple[int, int]):
    """Predict and write one image file (``outputs``: also its probabilities, its
    measurements, its ROIs); returns ((what was found, objects, measurements or None),
    notes)."""
    from .channels import for_model, result_axes
    from .found import object_count, what_was_found
    from .io import read_image, tiff_metadata, write_tiff, write_tiff_tiled
    from .measure import apart, measure, tiff_pixel_size, write_csv
    from .memory import beyond_memory
    from .predict import predict, zarr_outputs
    from .progress import mapped
    from .rois import write_rois

    def tiles(event) -> FileEvent:
        return FileEvent(*place, name, tiles=event)

    def measured(labels):  # the objects of ``labels`` (memory or disk) to CSV
        if not measures:
            return None
        size = tiff_pixel_size(meta)
        table = measure(labels, image, pixel_size=size and size[0], unit=size and size[1],
                        classes=model.mode == "semantic",
                        apart=apart(np.ndim(labels), config.link_planes > 0, model.mode))
        write_csv(csv_output(f, out), table)
        return table

    probabilities, measures, rois = outputs
    meta = tiff_metadata(f)
    image, axes = for_model(read_image(f), meta.get("axes"), model.config.in_channels,
                            channel[0], name, option=channel[1])
    targets = tiff_outputs(f, out)
    label_axes, prob_axes = result_axes(axes)  # the image's axes and pixel size
    metas = ({**meta, "axes": label_axes}, {**meta, "axes": prob_axes})
    linked, followed = config.link_planes > 0, config.follow_time
    need = beyond_memory(image, model, config)
    if need:  # a slide, a long stack: block by block through a scratch folder
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out, prefix=".napari-unet-") as tmp:
            labels, prob = zarr_outputs(model, image, Path(tmp) / "labels.zarr",
                                        Path(tmp) / "prob.zarr" if probabilities else None,
                                        chunk=chunk, name=name)
            result = yield from mapped(predict(model, image, config, out_labels=labels,
                                               out_probabilities=prob, name=name), tiles)
            write_tiff_tiled(targets[0], labels, metas[0])
            table = measured(labels)
            if prob is not None:
                write_tiff_tiled(targets[1], prob, metas[1])
            found = what_was_found(result, linked, on_disk=True, followed=followed)
        found = ", ".join(x for x in (found, f"predicted block by block on disk ({need})")
                          if x)
        notes = (*result.notes, *(["no ImageJ ROIs: predicted block by block on disk, too "
                                   "many objects for Fiji's ROI Manager"] if rois else []))
        return (found, object_count(result, linked, followed=followed), table), notes
    result = yield from mapped(predict(model, image, config, name=name), tiles)
    write_tiff(targets[0], result.labels, metas[0])
    table = measured(result.labels)
    if rois and result.labels.max() > 0:  # an image without objects: no ROI file
        write_rois(rois_output(f, out), result.labels)
    if probabilities:
        write_tiff(targets[1], np.asarray(result.probabilities, np.float32), metas[1])
    return ((what_was_found(result, linked, followed=followed) or "",
             object_count(result, linked, followed=followed), table), tuple(result.notes))
