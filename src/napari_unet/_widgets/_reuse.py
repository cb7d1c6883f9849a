"""The probabilities of the Predict widget's last prediction, kept so that a run that
changes only how they are labelled (threshold, separation, minimum size, plane linking)
labels them again (:func:`napari_unet.predict.relabel`) instead of running the network."""

from __future__ import annotations

import numpy as np

from ..pretrained import resolve_model

#: The largest probabilities (bytes) kept after a prediction to label them again.
KEEP_PROBABILITIES = 1 << 30


def _key(layer, model: str, cfg, channel: int) -> tuple:
    """What the probabilities of ``layer`` depend on: its data (the channel taken of it),
    the model file (as it is on disk now) and every setting but those that only label
    them."""
    from ..predict import LABEL_SETTINGS

    path = resolve_model(model)
    stat = path.stat()
    settings = {k: v for k, v in cfg.to_dict().items() if k not in LABEL_SETTINGS}
    return (layer.unique_id, id(layer.data), channel, str(path), stat.st_mtime_ns,
            stat.st_size, tuple(sorted(settings.items())))


class LastPrediction:
    """The last single-layer prediction's result, with what its probabilities depend on."""

    def __init__(self) -> None:
        self._kept: tuple | None = None  # (key, image data, result)
        self._pending: tuple | None = None  # (key, image data) of the run under way

    def reusable(self, layer, model: str, cfg, channel: int = 0):
        """The result whose probabilities a prediction of ``layer`` (its ``channel``, 0 for
        all) by ``model`` with ``cfg`` would compute again, or None; remembers this run for
        :meth:`keep`."""
        key = _key(layer, model, cfg, channel)
        self._pending = (key, layer.data)  # the data are held, so their id stays theirs
        return self._kept[2] if self._kept is not None and self._kept[0] == key else None

    def skip(self) -> None:
        """Keep nothing of the run under way (a part of a layer, not the layer); None."""
        self._pending = None

    def keep(self, result) -> None:
        """Keep the result of the run :meth:`reusable` was last asked about, if its
        probabilities are in memory and not too large."""
        prob = result.probabilities
        ok = isinstance(prob, np.ndarray) and prob.nbytes <= KEEP_PROBABILITIES
        self._kept = (*self._pending, result) if ok and self._pending else None
