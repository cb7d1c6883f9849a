"""What a prediction adds to the viewer (the labels, probability, distance and centre-vote
layers, named after the image and placed where it is), and the zarr stores on disk that a
lazy layer's prediction writes."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels

from ..measure import measure_events, write_csv
from ._features import pixel_size, show_features
from ._placement import placement

#: Metadata key of the layers napari-unet wrote (never segmented as "every image layer").
OUTPUT = "napari_unet_output"
#: Metadata key of an output Labels layer the user has painted in (never overwritten).
EDITED = "napari_unet_edited"
#: Said the first time a segmentation layer is given its objects' measurements.
MEASURED = ("each object's area, centre, diameter, elongation, perimeter, solidity, place on "
            "the border and mean intensity are its segmentation layer's features: under "
            "the cursor, and in Layers > Metadata > Features table widget")
#: Metadata key of a segmentation's model (what the Train widget offers to fine-tune on it).
MODEL = "napari_unet_model"


def output_name(image_name: str) -> str:
    """The Labels layer a prediction of ``image_name`` goes to (updated on a re-run)."""
    return f"{image_name} segmentation"


def put_layer(viewer, name: str, data, kind: str, source, metadata: dict | None = None,
              multiscale: bool = False, **kwargs) -> str:
    """Add a layer, or update the one of that name that napari-unet wrote; scale/translate
    follow ``source``; ``metadata`` is added to the layer's; ``multiscale``: ``data`` is a
    list of levels, the full resolution first. Returns the name used.

    Work is never overwritten: a layer of that name that napari-unet did not write (one
    the user opened or made), or an output Labels layer the user has since painted, filled
    or erased in (a segmentation being corrected), is left as it is, and the data go to
    ``"<name> (2)"`` (or the next such name that is free or holds an unedited output)."""
    nd = np.ndim(data[0] if multiscale else data)
    placed = placement(source, nd)
    cls = Labels if kind == "labels" else Image
    name = _writable_name(viewer, name, cls)
    place = None
    if name in viewer.layers:
        layer = viewer.layers[name]
        if layer.multiscale == multiscale and layer.ndim == nd:
            layer.data = data
            for key, value in placed.items():
                setattr(layer, key, value)
            layer.metadata.update(metadata or {})
            return name
        place = viewer.layers.index(layer)  # napari cannot turn a layer multiscale
        viewer.layers.remove(layer)
    add = viewer.add_labels if kind == "labels" else viewer.add_image
    layer = add(data, name=name, multiscale=multiscale,
                metadata={OUTPUT: True, **(metadata or {})}, **placed, **kwargs)
    if place is not None:
        viewer.layers.move(viewer.layers.index(layer), place)
    if kind == "labels":
        layer.events.paint.connect(lambda _event, layer=layer: mark_edited(layer))
    return name


def is_uncorrected(layer) -> bool:
    """Whether ``layer`` holds labels napari-unet predicted that nobody has edited since."""
    return (isinstance(layer, Labels) and bool(layer.metadata.get(MODEL))
            and not layer.metadata.get(EDITED))


def mark_edited(layer) -> None:
    """Record that the user edited an output layer, so that no prediction overwrites it."""
    layer.metadata[EDITED] = True


def _writable_name(viewer, name: str, cls) -> str:
    """``name``, or ``"<name> (k)"`` for the smallest k from 2 whose layer is free or an
    unedited output of kind ``cls``."""
    for k in range(1, 10_000):
        candidate = name if k == 1 else f"{name} ({k})"
        if candidate not in viewer.layers:
            return candidate
        layer = viewer.layers[candidate]
        if (isinstance(layer, cls) and layer.metadata.get(OUTPUT)
                and not layer.metadata.get(EDITED)):
            return candidate
    raise RuntimeError(f"no free layer name for {name!r}")  # 10,000 edited copies


def inputs(viewer) -> list:
    """The image layers a user opened: every Image layer but the ones napari-unet wrote."""
    return [layer for layer in viewer.layers
            if isinstance(layer, Image) and not layer.metadata.get(OUTPUT)]


def show_result(viewer, result, layer, probabilities: bool, model: str,
                image=None) -> list[str]:
    """Put a prediction of ``layer`` by ``model`` (as the Predict widget names it) in the
    viewer: its labels, with their measurements (taken in ``image``, the layer's data as
    the model read it) as the layer's features, and, with ``probabilities``, the
    probability map (and a distance model's distance map, an offsets model's votes).
    Returns what to say of it: where the labels went to another layer than ``<image>
    segmentation`` (because that one holds the user's edits, or is not napari-unet's),
    and, the first time a layer is measured, where its measurements are."""
    wanted = output_name(layer.name)
    levels = result.levels.get("labels")  # a result on disk too large to show whole
    used = put_layer(viewer, wanted, levels or result.labels, "labels", layer,
                     {MODEL: model}, multiscale=bool(levels))
    said = [MEASURED] if show_features(viewer, viewer.layers[used], result.features, image,
                                       layer, classes=result.mode == "semantic") else []
    stored = {"labels": used}  # the layers of stores on disk, for the reader
    if probabilities:
        probs = result.levels.get("probabilities")

        def shown(how):  # of each level, where there are levels
            return [how(result, p) for p in probs] if probs else how(result)

        name = put_layer(viewer, f"{layer.name} probabilities", shown(shown_probabilities),
                         "image", layer, colormap="magma", blending="additive", visible=False,
                         multiscale=bool(probs))
        stored["probabilities"] = name
        if shown_distance(result) is not None:
            put_layer(viewer, f"{layer.name} distance", shown(shown_distance), "image", layer,
                      colormap="viridis", blending="additive", visible=False,
                      multiscale=bool(probs))
        votes = shown_votes(result)
        if votes is not None:
            put_layer(viewer, f"{layer.name} centre votes", votes, "image", layer,
                      colormap="inferno", blending="additive", visible=False)
    _remember(viewer, result, stored, model)
    if used == wanted:
        return said
    why = ("holds your edits" if viewer.layers[wanted].metadata.get(EDITED)
           else "is not one napari-unet wrote")
    return [f"'{wanted}' {why}, so it was left as it is; this result is in '{used}'", *said]


def _remember(viewer, result, names: dict, model: str) -> None:
    """Beside the stores of a prediction on disk (a large image's labels, probabilities),
    the ``x.napari-unet`` file saying the layers they were shown as (``names``: kind to
    layer name), so that napari-unet's reader opens them as those layers again, placed as
    they were, after napari was closed."""
    from pathlib import Path

    from ..pyramid import write_pointer

    def folder(array):  # of a zarr array in a folder on disk; None for anything else
        return getattr(getattr(array, "store", None), "root", None)

    arrays = {"labels": result.labels, "probabilities": result.probabilities}
    if any(folder(arrays[kind]) is None for kind in names):
        return
    try:
        write_pointer(folder(result.labels), [
            {"layer": kind, "store": Path(folder(arrays[kind])).name, "name": name,
             **{key: np.asarray(value, float).tolist()
                for key, value in placement(viewer.layers[name]).items()}}
            for kind, name in names.items()], mode=result.mode, target=result.target,
            model=model)
    except OSError as err:  # the disk full: the layers are shown, only reopening them is not
        from napari.utils.notifications import show_warning

        from ..errors import os_error_sentence

        show_warning("The result is shown, but the file to open it again in napari could "
                     f"not be written: {os_error_sentence(err)}")


def sentences(notes) -> str:
    """Notes (lower-case clauses) as sentences to follow a status text, each once."""
    return "".join(f" {note[0].upper()}{note[1:]}." for note in dict.fromkeys(notes) if note)


def predict_to_disk(ckpt, data, config, name: str, probabilities: bool, why: str = "",
                    placed=None):
    """:func:`napari_unet.predict.predict` of a lazy layer (Dask, zarr, multiscale), or of
    one whose prediction would not fit in memory (``why``, said in its notes), into zarr
    arrays on disk (in ~/napari-unet/predictions), so that it is predicted without being
    loaded whole. The arrays are made when the prediction starts, and removed again if it
    is cancelled or refused: neither a half-written store nor, for the layers after a
    Cancel, an empty one is left behind. The objects are counted and measured here (in
    ``data``, at the pixel size of the layer ``placed``), in the worker (the labels are
    read block by block), and kept with the result; their measurements also beside the
    labels' store (``x.csv`` beside ``x.zarr``), whence napari-unet's reader gives them
    back to the layer."""
    import shutil

    from ..checkpoint import default_model_path
    from ..found import object_count
    from ..predict import PredictEvent, predict, zarr_outputs
    from ..pyramid import levels_folder, needs_levels

    stem = default_model_path(name)
    base = stem.parent.parent / "predictions" / stem.name.removesuffix(".safetensors")
    paths = [base.with_name(base.name + ".zarr")]
    if probabilities:
        paths.append(base.with_name(base.name + "_prob.zarr"))
    finished = False
    try:
        labels, prob = zarr_outputs(ckpt, data, *paths, name=f"layer '{name}'")
        result = yield from predict(ckpt, data, config, name=f"layer '{name}'",
                                    out_labels=labels, out_probabilities=prob)
        if result.mode != "semantic":  # the labels are read again: say so
            yield PredictEvent(1, 1, 0, 1, "counting the objects")
        result.objects = object_count(result, config.link_planes > 0, on_disk=True,
                                      followed=config.follow_time)
        size, unit = pixel_size(placed) if placed is not None else (None, None)
        result.features = yield from measure_events(labels, data, pixel_size=size, unit=unit,
                                                    mode=result.mode,
                                                    linked=config.link_planes > 0)
        if result.features is not None:  # beside the store: opened again with it
            paths.append(paths[0].with_suffix(".csv"))
            write_csv(paths[-1], result.features)
        if needs_levels(labels.shape):  # napari would read the whole plane to show it
            paths.append(levels_folder(paths[0]))
            result.levels = yield from _levels({"labels": labels, "probabilities": prob},
                                               paths[-1])
            result.notes.append(_LEVELS_NOTE)
        finished = True
        result.notes.insert(0, (f"predicted block by block on disk ({why})" if why else
                                "predicted block by block")
                            + f"; the results are kept in {paths[0].parent}")
        return result
    finally:
        if not finished:
            for path in paths:
                if path.is_file():
                    path.unlink()
                shutil.rmtree(path, ignore_errors=True)


_LEVELS_NOTE = ("shown with overview levels, as napari shows a slide (napari does not paint "
                "on such a layer: to correct a part, zoom in on it and predict 'only the part "
                "in view')")


def _levels(arrays: dict, folder):
    """:func:`napari_unet.pyramid.write_all_levels` with the prediction's progress events."""
    from ..predict import PredictEvent
    from ..pyramid import write_all_levels

    made = write_all_levels(arrays, folder)
    while True:
        try:
            done, total = next(made)
        except StopIteration as stop:
            return stop.value
        yield PredictEvent(done, total, 0, 1, "overview levels for napari")


def _shown_lazily(prob):
    """Probabilities as napari shows them: a numpy array as it is, a zarr on disk as a
    Dask array (read lazily)."""
    if isinstance(prob, np.ndarray):
        return prob
    import dask.array as da

    return da.from_array(prob, chunks=prob.chunks)


def shown_probabilities(result, prob=None) -> np.ndarray:
    """Foreground probability (2D per plane) for instance and two-class models; all
    classes (a leading class axis) for multi-class semantic models; of ``prob`` (a level
    of the probabilities) where given."""
    prob = _shown_lazily(result.probabilities if prob is None else prob)
    axis = prob.ndim - 3
    if result.mode == "semantic" and prob.shape[axis] > 2:
        return prob
    return 1.0 - prob[(slice(None),) * axis + (0,)]


def shown_distance(result, prob=None):
    """The distance map of a 'distance' model (2D per plane), None for other models; of
    ``prob`` (a level of the probabilities) where given."""
    if result.target != "distance" or result.mode != "instances":
        return None
    prob = _shown_lazily(result.probabilities if prob is None else prob)
    return prob[(slice(None),) * (prob.ndim - 3) + (-1,)]


def shown_votes(result):
    """Where an 'offsets' model's foreground pixels point (vote counts, 2D per plane), None
    for other models and for probabilities kept on disk."""
    if (result.target != "offsets" or result.mode != "instances"
            or not isinstance(result.probabilities, np.ndarray)):
        return None
    from ..instances import vote_counts

    prob = result.probabilities
    if prob.ndim == 3:
        return vote_counts(prob)
    return np.stack([vote_counts(p) for p in prob])
