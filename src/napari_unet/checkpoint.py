"""Model files: safetensors weights with JSON metadata in the same file; never unpickled.

One file travels well (e-mail, download links). Its safetensors header holds, under the key
``napari_unet``, a JSON document: format and version, the :class:`ModelConfig`, the task
(mode, target, classes), the normalisation and the training record. Before any tensor is
read the header is checked: bounded size, known dtypes, shapes that match their byte ranges
and lie inside the file. Writes go to a temporary file that is flushed, synced and renamed,
so a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelConfig
from .errors import InputError, ModelFileError, could_not_write

FORMAT = "napari-unet-model"
VERSION = 1
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_METADATA_BYTES = 1024 * 1024
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4}


@dataclass
class Checkpoint:
    """A model file's content: configuration, task, normalisation, training record, weights."""

    config: ModelConfig
    state_dict: dict
    task: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return self.task.get("mode", "instances")

    @property
    def target(self) -> str:
        return self.task.get("target", "two_class")

    @property
    def threshold(self) -> float:
        """Foreground threshold calibrated on the validation images (0.5 if none)."""
        t = self.task.get("threshold", 0.5)
        return float(t) if isinstance(t, (int, float)) and 0 < t < 1 else 0.5

    @property
    def label_offset(self) -> tuple[float, float]:
        """Shift ``(dy, dx)`` in pixels from the network's probabilities to where the
        annotations were drawn, calibrated on the validation images
        (:mod:`napari_unet.label_offset`); ``(0, 0)`` if none."""
        o = self.task.get("label_offset")
        if (isinstance(o, (list, tuple)) and len(o) == 2
                and all(isinstance(v, (int, float)) and abs(v) <= 2 for v in o)):
            return float(o[0]), float(o[1])
        return 0.0, 0.0

    @property
    def object_diameter(self) -> float | None:
        """Median diameter (px) of the objects the model was trained on; None if unknown."""
        return _diameter(self.task)

    def build(self, device=None, *, fuse: bool = True):
        """The :class:`~napari_unet.model.UNet` with these weights, in eval mode, for
        inference: unless ``fuse=False``, batch norms folded into the convolutions and each
        convolution made one with its ReLU (fused by cuDNN on a GPU under bf16,
        :class:`~napari_unet.model.ConvReLU`)."""
        import torch

        from .model import UNet, fuse_batch_norm, fuse_conv_relu

        # Built without memory and random initialisation (a third of a second for the
        # paper's width), then given these weights, copied (in float32) onto the device.
        target = torch.device("cpu") if device is None else torch.device(device)
        state = {}
        for k, v in self.state_dict.items():
            v = torch.as_tensor(v)
            state[k] = v.to(target, torch.float32 if v.is_floating_point() else v.dtype,
                            copy=True)
        with torch.device("meta"):
            net = UNet(self.config)
        try:
            net.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as err:
            raise ModelFileError(
                "the model file's weights do not fit its own architecture description "
                f"({str(err).splitlines()[0]})."
            ) from None
        net.eval()
        if fuse:
            fuse_batch_norm(net)
            fuse_conv_relu(net)
        if device is not None:
            from .device import memory_format

            net = net.to(device, memory_format=memory_format(device))
        return net

    def metadata(self) -> dict[str, Any]:
        from . import __version__

        return {
            "format": FORMAT,
            "version": VERSION,
            "napari_unet_version": __version__,
            "model": self.config.to_dict(),
            "task": self.task,
            "normalization": self.normalization,
            "training": self.training,
        }


def models_folder() -> Path:
    """Where models are saved unless the user picks a place: ``~/napari-unet/models``.

    ``NAPARI_UNET_HOME`` replaces ``~/napari-unet`` (the tests use it).
    """
    root = os.environ.get("NAPARI_UNET_HOME") or Path.home() / "napari-unet"
    return Path(root) / "models"


def named_with(path: str | os.PathLike, suffix: str) -> Path:
    """``path`` ending in ``suffix`` (``.safetensors``, ``.zip``), added where it does not:
    a model saved as ``mymodel`` was listed by no widget and opened by no drop on napari."""
    path = Path(path)
    return path if path.name.lower().endswith(suffix) else path.with_name(path.name + suffix)


def default_model_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    """A new file name in ``folder`` (default: :func:`models_folder`) from a layer or image
    name and the time."""
    import re
    import time

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"
    return (Path(folder) if folder else models_folder()) / (
        f"{safe[:40]}-{time.strftime('%Y%m%d-%H%M%S')}.safetensors")


def recent_models(limit: int = 10) -> list[Path]:
    """Model files in :func:`models_folder`, newest first."""
    folder = models_folder()
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    return files[:limit]


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically; return the path."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in checkpoint.state_dict.items()}
    meta = json.dumps(checkpoint.metadata(), sort_keys=True)
    if len(meta) > MAX_METADATA_BYTES:
        raise InputError("the model's metadata is too large to save.")
    data = save(tensors, metadata={"napari_unet": meta})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:  # the disk full, no permission: a sentence, the old file kept
        raise could_not_write(path, err) from err
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before any work, a model file that could not be written: its folder cannot
    be made, or nothing can be written in it (read-only, no permission)."""
    path = Path(path)
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise could_not_write(path, err) from err


def read_header(path: str | os.PathLike) -> tuple[dict, dict]:
    """Validate a safetensors file's header without reading its tensors.

    Returns ``(tensor_entries, napari_unet_metadata)``.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist.")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file.")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        header = None
        if 0 <= n <= MAX_HEADER_BYTES and 8 + n <= size:
            try:
                header = json.loads(fh.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError):
                header = None
    if header is None:
        if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":  # pickle, or torch's zip
            raise ModelFileError(
                f"{path.name} is a pickle/PyTorch .pt file; napari-unet only opens "
                "safetensors model files, because a pickle can run hidden code when opened."
            )
        raise ModelFileError(f"{path.name} is not a napari-unet model file "
                             "(its header is missing, truncated or unreadable).")
    if not isinstance(header, dict):
        raise ModelFileError(f"{path.name} is not a napari-unet model file.")
    meta_block = header.pop("__metadata__", None) or {}
    data_len = size - 8 - n
    for name, entry in header.items():
        try:
            dtype, shape, (a, b) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = 1
            for s in shape:
                if not isinstance(s, int) or s < 0:
                    raise ValueError
                count *= s
            ok = (dtype in _DTYPE_BYTES and 0 <= a <= b <= data_len
                  and count * _DTYPE_BYTES[dtype] == b - a)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelFileError(
                f"{path.name} is damaged or truncated: tensor {name!r} does not fit the file."
            )
    raw_meta = meta_block.get("napari_unet") if isinstance(meta_block, dict) else None
    if not isinstance(raw_meta, str) or len(raw_meta) > MAX_METADATA_BYTES:
        raise ModelFileError(f"{path.name} is a safetensors file but not a napari-unet model "
                             "(no napari-unet metadata).")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise ModelFileError(f"{path.name} has unreadable napari-unet metadata.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path.name} is not a napari-unet model file.")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ModelFileError(f"{path.name} was written by a newer napari-unet "
                             f"(format version {meta.get('version')}); please update.")
    return header, meta


def recorded_diameter(path: str | os.PathLike) -> float | None:
    """The cell diameter a model file records (from its header alone, nothing else is
    read); None if it records none or is not a napari-unet model file."""
    return _diameter(recorded_task(path))


def recorded_threshold(path: str | os.PathLike) -> float | None:
    """The foreground threshold a model file records (calibrated by its training; from its
    header alone); None if it records none or is not a napari-unet model file."""
    t = recorded_task(path).get("threshold")
    ok = isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1
    return float(t) if ok else None


def recorded_classes(path: str | os.PathLike) -> int | None:
    """The number of classes of a semantic model file (from its header alone); None for an
    instance model or a file that is not a napari-unet model file."""
    task = recorded_task(path)
    k = task.get("n_classes")
    ok = isinstance(k, int) and not isinstance(k, bool) and k >= 2
    return k if ok and task.get("mode") == "semantic" else None


def recorded_task(path) -> dict:
    """The task a model file's header records; {} for a file that is not a model."""
    try:
        _, meta = read_header(path)
    except (ModelFileError, OSError):
        return {}
    task = meta.get("task")
    return task if isinstance(task, dict) else {}


def _diameter(task) -> float | None:
    d = task.get("object_diameter") if isinstance(task, dict) else None
    ok = isinstance(d, (int, float)) and not isinstance(d, bool) and 0 < d < 1e5
    return float(d) if ok else None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a model file safely (see the module docstring).

    ``path`` may also name a model shipped with the package ('nuclei'), or a bioimage.io
    package exported by napari-unet (``.zip``, its folder or its ``rdf.yaml``).
    """
    from safetensors import SafetensorError

    from .device import load_torch
    from .pretrained import resolve_model

    load_torch()  # the weights are torch tensors: a sentence where PyTorch cannot be loaded
    from safetensors.torch import load_file

    path = resolve_model(path)
    if path.suffix.lower() in (".zip", ".yaml") or (path / "rdf.yaml").is_file():
        from .modelzoo import import_package

        return import_package(path)
    _, meta = read_header(path)
    try:
        config = ModelConfig.from_dict(meta.get("model"))
    except (InputError, TypeError) as err:
        raise ModelFileError(f"{path.name} describes an invalid model: {err}") from None
    for key in ("task", "normalization", "training"):
        if not isinstance(meta.get(key, {}), dict):
            raise ModelFileError(f"{path.name} has an invalid '{key}' entry.")
    target = meta.get("task", {}).get("target", "two_class")
    for extra in ("distance", "offsets"):  # the output channels the target reads
        if (target == extra) != getattr(config, extra):
            raise ModelFileError(f"{path.name} describes an invalid model: its target is "
                                 f"{target!r} but its network has "
                                 f"{'no ' if not getattr(config, extra) else ''}{extra} "
                                 "output channels.")
    diameter = meta.get("task", {}).get("object_diameter")
    if diameter is not None and _diameter(meta["task"]) is None:
        raise ModelFileError(f"{path.name} has an invalid 'object_diameter' entry "
                             f"({diameter!r}); it must be a positive number of pixels.")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ModelFileError(f"{path.name} could not be read: {err}.") from None
    return Checkpoint(config=config, state_dict=state, task=meta.get("task", {}),
                      normalization=meta.get("normalization", {}),
                      training=meta.get("training", {}))
