"""BioImage Model Zoo (bioimage.io) packages: export a model, import one back.

:func:`export_package` writes a bioimage.io model package (a ``.zip`` with ``rdf.yaml``,
format 0.5) that Fiji/deepImageJ, ilastik, bioimageio.core and other napari plugins open:
PyTorch state-dict weights (the architecture is ``napari_unet.model.UNet`` with the model's
options), TorchScript weights and ONNX weights (where the network exports cleanly and ONNX
Runtime reproduces it), a test input and its expected output, a cover image, a
README with the training record and validation scores, and the citations (the U-Net paper
and the training data named in the model's metadata). The napari-unet model file itself
(safetensors + JSON) travels as an attachment, and :func:`import_package` opens that, never
the PyTorch weights (a ``.pt`` file is a pickle); the model's metadata is also copied to
``config.napari_unet`` for other readers.

Preprocessing is the percentile scaling napari-unet trains with (1st to 99.8th percentile
of each channel to 0..1) and postprocessing the softmax over classes, so a consumer's output
is the class probabilities :func:`napari_unet.predict.predict` gives (before the shift by a
semantic model's label offset, :mod:`napari_unet.label_offset`, which the README states).

The ``bioimageio.spec`` package (and ``bioimageio.core`` to test a package) are needed here
only: ``pip install "napari-unet[bioimageio]"``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import MAX_PARAMETERS
from .errors import InputError, ModelFileError

UNET_DOI = "10.1007/978-3-319-24574-4_28"
UNET_TEXT = ("Ronneberger, O., Fischer, P., Brox, T. U-Net: Convolutional Networks for "
             "Biomedical Image Segmentation. MICCAI 2015.")


def _require_spec():
    try:
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise InputError("exporting to bioimage.io needs the bioimageio.spec package: "
                         'pip install "napari-unet[bioimageio]".') from None


def test_image(ckpt: Checkpoint, size: int = 256) -> np.ndarray:
    """A synthetic image of touching cells with the model's channels, ``(H, W[, C])``."""
    from .synthetic import touching_cells

    image, _ = touching_cells((size, size), n_cells=14, radius=18, seed=0)
    image = image.astype(np.float32)
    c = ckpt.config.in_channels
    return image if c == 1 else np.stack([image] * c, axis=-1)


def _sizes(ckpt: Checkpoint, side: int) -> tuple[int, int, int]:
    """(accepted input side near ``side``, minimum input side, step) of the network."""
    cfg = ckpt.config
    step = 2**cfg.depth
    smallest = cfg.valid_input_size(1)
    return cfg.valid_input_size(side), smallest, step


def _cover(image: np.ndarray, prob: np.ndarray, path: Path) -> Path:
    """Input (left) and foreground probability (right), side by side, as a PNG."""
    import imageio.v3 as iio

    grey = image if image.ndim == 2 else image.mean(-1)
    m = (grey.shape[0] - prob.shape[-1]) // 2  # 'valid' networks give a smaller output
    grey = grey[m : m + prob.shape[-2], m : m + prob.shape[-1]]
    lo, hi = np.percentile(grey, [1, 99.8])
    left = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    right = 1.0 - prob[0]
    rgb_left = np.stack([left] * 3, -1)
    rgb_right = np.stack([right, right * 0.6, right * 0.2], -1)
    sep = np.ones((grey.shape[0], 4, 3))
    iio.imwrite(path, (np.concatenate([rgb_left, sep, rgb_right], 1) * 255).astype(np.uint8))
    return path


def _readme(ckpt: Checkpoint, name: str, path: Path) -> Path:
    training = ckpt.training
    validation = training.get("validation") or {}
    scores = "\n".join(f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}"
                       for k, v in validation.items()) or "- not validated during training"
    data = training.get("data") or "the images and labels given to napari-unet's training"
    text = f"""# {name}

A U-Net (Ronneberger et al. 2015) trained with napari-unet: {ckpt.config.depth} levels,
{ckpt.config.base_channels} base channels, '{ckpt.config.padding}' padding, {ckpt.config.norm}
normalisation; {ckpt.config.in_channels} input channel(s), {ckpt.config.n_classes} classes;
task: {ckpt.mode} ({ckpt.target if ckpt.mode == 'instances' else 'classes'}).

## Input and output

Input: a 2D image, scaled per channel from its 1st..99.8th percentile to 0..1. Output: the
class probabilities (softmax). For instance models, class 1 is the cell interior with a
background line between touching cells; label its connected components (napari-unet's
'components' separation) at the calibrated threshold {ckpt.threshold}.{_offset_note(ckpt)}

## Training

Data: {data}. Device: {training.get('device', 'unknown')}.

## Validation

Scores on the validation images held out by the training:

{scores}

## Citation

{UNET_TEXT} doi:{UNET_DOI}
"""
    path.write_text(text)
    return path


def _onnx(net, x: np.ndarray, path: Path) -> bool:
    """Export ``net`` to ONNX (opset 17, batch and image sizes dynamic) and keep it only if
    ONNX Runtime reproduces the network on ``x``; False where it does not export cleanly
    or the ``onnx``/``onnxruntime`` packages are missing."""
    import warnings

    import torch

    try:
        import onnxruntime

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = {0: "batch", 2: "y", 3: "x"}
            torch.onnx.export(net, (torch.from_numpy(x),), str(path), dynamo=False,
                              opset_version=ONNX_OPSET, input_names=["input"],
                              output_names=["output"],
                              dynamic_axes={"input": axes, "output": axes})
        got = onnxruntime.InferenceSession(str(path)).run(None, {"input": x})[0]
        with torch.inference_mode():
            want = net(torch.from_numpy(x)).numpy()
        return bool(np.allclose(got, want, atol=1e-4, rtol=1e-4))
    except Exception:  # noqa: BLE001 - any failure means: no ONNX weights, said in the README
        return False


ONNX_OPSET = 17
#: The napari-unet model file inside an exported package (an attachment).
MODEL_FILE = "model.safetensors"


def _offset_note(ckpt) -> str:
    dy, dx = ckpt.label_offset
    if not (dy or dx):
        return ""
    return (f"\nThe annotations this model learned from lie ({dy:g}, {dx:g}) px (rows, "
            "columns) from what the network draws; napari-unet shifts the probabilities by "
            "that much (out[y, x] = p[y - dy, x - dx]), which this package's weights alone "
            "do not do.")


def export_package(model, out, *, name: str | None = None, authors=None,
                   image: np.ndarray | None = None, torchscript: bool = True,
                   onnx: bool = True) -> Path:
    """Write ``model`` (a model file, a shipped name or a :class:`Checkpoint`) as a
    bioimage.io model package ``out`` (``.zip``); returns its path.

    ``authors``: names (default: the login name); ``image``: the test input (default: a
    synthetic image of touching cells); ``onnx``: add ONNX weights where the network exports
    cleanly (checked with ONNX Runtime; needs the ``onnx`` and ``onnxruntime`` packages).
    """
    _require_spec()
    import torch
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromLibraryDescr,
        Author,
        AxisId,
        BatchAxis,
        ChannelAxis,
        CiteEntry,
        Doi,
        FileDescr,
        Identifier,
        InputTensorDescr,
        LicenseId,
        ModelDescr,
        OnnxWeightsDescr,
        OutputTensorDescr,
        ParameterizedSize,
        PytorchStateDictWeightsDescr,
        ScaleRangeDescr,
        ScaleRangeKwargs,
        SizeReference,
        SoftmaxDescr,
        SpaceInputAxis,
        SpaceOutputAxis,
        TensorId,
        TorchscriptWeightsDescr,
        Version,
        WeightsDescr,
    )

    from .model import UNet

    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    if ckpt.config.distance or ckpt.config.offsets:
        what, extra = (("distance", "last channel is a distance map") if ckpt.config.distance
                       else ("offsets", "last two channels are vectors"))
        raise InputError(f"a '{what}' model cannot be exported to bioimage.io yet: the "
                         "format's postprocessing is one softmax over all output channels, "
                         f"and this model's {extra}, not classes.")
    out = Path(out)
    import re

    name = re.sub(r"[^A-Za-z0-9_+\- ()]", " ", name or out.name.removesuffix(".zip")).strip()
    if len(name) < 5:
        name = f"napari-unet {name}".strip()
    if authors is None:
        import getpass

        authors = [getpass.getuser() or "napari-unet user"]
    image = test_image(ckpt) if image is None else np.asarray(image, np.float32)
    side, smallest, step = _sizes(ckpt, min(image.shape[:2]))
    image = _fit(image, side)
    net = UNet(ckpt.config)
    net.load_state_dict(ckpt.state_dict)
    net.eval()
    x = np.moveaxis(image if image.ndim == 3 else image[..., None], -1, 0)[None]
    norm = _scale_range(x)
    with torch.inference_mode():
        prob = net(torch.from_numpy(norm)).softmax(1).numpy()
    shrink = x.shape[-1] - prob.shape[-1]

    with tempfile.TemporaryDirectory(prefix="napari-unet-export-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "test_input.npy", x.astype(np.float32))
        np.save(tmp / "test_output.npy", prob.astype(np.float32))
        import tifffile

        tifffile.imwrite(tmp / "sample_input.tif", x[0].astype(np.float32))
        tifffile.imwrite(tmp / "sample_output.tif", prob[0].astype(np.float32))
        torch.save(ckpt.state_dict, tmp / "weights.pt")
        save_checkpoint(tmp / MODEL_FILE, ckpt)
        weights = {"pytorch_state_dict": PytorchStateDictWeightsDescr(
            source=tmp / "weights.pt",
            architecture=ArchitectureFromLibraryDescr(
                callable=Identifier("UNet"), import_from="napari_unet.model",
                kwargs=ckpt.config.to_dict()),
            pytorch_version=Version(torch.__version__.split("+")[0]),
            dependencies=FileDescr(source=_environment(tmp / "environment.yaml")))}
        if torchscript:
            traced = torch.jit.trace(net, torch.from_numpy(norm), check_trace=False)
            traced.save(str(tmp / "weights_torchscript.pt"))
            weights["torchscript"] = TorchscriptWeightsDescr(
                source=tmp / "weights_torchscript.pt",
                pytorch_version=Version(torch.__version__.split("+")[0]),
                parent="pytorch_state_dict")
        if onnx and _onnx(net, norm, tmp / "weights.onnx"):
            weights["onnx"] = OnnxWeightsDescr(source=tmp / "weights.onnx",
                                               opset_version=ONNX_OPSET,
                                               parent="pytorch_state_dict")
        channels = [f"channel{i}" for i in range(ckpt.config.in_channels)]
        space_in = [SpaceInputAxis(id=AxisId(a), size=ParameterizedSize(min=smallest, step=step))
                    for a in ("y", "x")]
        space_out = [SpaceOutputAxis(id=AxisId(a), size=SizeReference(
            tensor_id=TensorId("input"), axis_id=AxisId(a), offset=-shrink)) for a in ("y", "x")]
        classes = [f"class{i}" for i in range(ckpt.config.n_classes)]
        cite = [CiteEntry(text=UNET_TEXT, doi=Doi(UNET_DOI))]
        citation = ckpt.training.get("citation")
        if citation:
            cite.append(CiteEntry(text=str(citation)[:1000], url=ckpt.training.get("url")
                                  or "https://bbbc.broadinstitute.org/BBBC038"))
        descr = ModelDescr(
            name=name,
            description=(ckpt.training.get("description") or
                         f"U-Net for {ckpt.mode} segmentation, trained with napari-unet")[:1024],
            authors=[Author(name=a) for a in authors],
            cite=cite,
            license=LicenseId(ckpt.training.get("licence_spdx", "CC-BY-4.0")),
            documentation=FileDescr(source=_readme(ckpt, name, tmp / "README.md")),
            covers=[FileDescr(source=_cover(image, prob[0], tmp / "cover.png"))],
            tags=["unet", "segmentation", "napari-unet", "2d", "pytorch",
                  "instance-segmentation" if ckpt.mode == "instances"
                  else "semantic-segmentation"],
            inputs=[InputTensorDescr(
                id=TensorId("input"),
                axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in channels]),
                      *space_in],
                test_tensor=FileDescr(source=tmp / "test_input.npy"),
                sample_tensor=FileDescr(source=tmp / "sample_input.tif"),
                preprocessing=[ScaleRangeDescr(kwargs=ScaleRangeKwargs(
                    axes=[AxisId("y"), AxisId("x")], min_percentile=1.0,
                    max_percentile=99.8))])],
            outputs=[OutputTensorDescr(
                id=TensorId("probabilities"),
                axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier(c) for c in classes]),
                      *space_out],
                test_tensor=FileDescr(source=tmp / "test_output.npy"),
                sample_tensor=FileDescr(source=tmp / "sample_output.tif"),
                postprocessing=[SoftmaxDescr()])],
            weights=WeightsDescr(**weights),
            attachments=[FileDescr(source=tmp / MODEL_FILE)],
            config={"napari_unet": ckpt.metadata()},
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.{os.getpid()}.tmp.zip")
        try:
            save_bioimageio_package(descr, output_path=partial)
            os.replace(partial, out)
        finally:
            if partial.exists():
                partial.unlink()
    return out


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    """Crop or mirror-pad the test image to ``side`` x ``side``."""
    from .tiling import read_window

    return read_window(image, 0, 0, side, side)


def _scale_range(x: np.ndarray) -> np.ndarray:
    """bioimage.io's scale_range with our percentiles, per channel: what a consumer feeds
    the network."""
    lo = np.percentile(x, 1.0, axis=(2, 3), keepdims=True)
    hi = np.percentile(x, 99.8, axis=(2, 3), keepdims=True)
    return ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)


def _environment(path: Path) -> Path:
    path.write_text("name: napari-unet\nchannels: [conda-forge]\ndependencies:\n"
                    "  - python>=3.10\n  - pytorch\n  - pip\n  - pip:\n      - napari-unet\n")
    return path


def import_package(source, out=None) -> Checkpoint:
    """A :class:`Checkpoint` from a bioimage.io package exported by napari-unet (a ``.zip``,
    a folder or an ``rdf.yaml``); saved as a napari-unet model file to ``out`` if given.

    The model is read from the package's napari-unet model file (safetensors + JSON); its
    PyTorch, TorchScript and ONNX weights are for other programs and are never opened here,
    so nothing in a package is unpickled.
    """
    import zipfile

    import yaml

    source = Path(source)
    try:
        with tempfile.TemporaryDirectory(prefix="napari-unet-import-") as tmp:
            if source.suffix == ".zip":
                with zipfile.ZipFile(source) as z:
                    rdf = yaml.safe_load(_member(z, "rdf.yaml", MAX_RDF_BYTES, source))
                    model_path = Path(tmp) / MODEL_FILE
                    model_path.write_bytes(_member(z, _model_file(rdf, source),
                                                   MAX_MODEL_BYTES, source))
            else:
                folder = source if source.is_dir() else source.parent
                rdf_path = source if source.is_file() else folder / "rdf.yaml"
                rdf = yaml.safe_load(rdf_path.read_text())
                model_path = folder / _model_file(rdf, source)
            ckpt = load_checkpoint(model_path)
    except (OSError, KeyError, AttributeError, zipfile.BadZipFile, yaml.YAMLError) as err:
        raise ModelFileError(f"{source.name} is not a readable bioimage.io model package "
                             f"({type(err).__name__}).") from None
    ckpt.training = {**ckpt.training,
                     "imported_from": json.dumps(rdf.get("name", source.name))}
    if out is not None:
        save_checkpoint(out, ckpt)
    return ckpt


#: the largest members of a package that are unpacked (in memory): a model of the most
#: parameters napari-unet builds, in 32-bit floats, with room for its header; a description
MAX_MODEL_BYTES = 4 * MAX_PARAMETERS + (64 << 20)
MAX_RDF_BYTES = 16 << 20


def _member(z, name: str, limit: int, source: Path) -> bytes:
    """A member of the zip ``z``, refused before it is unpacked if it says it is larger
    than ``limit`` (a zip bomb: a few kB that unpack to gigabytes)."""
    size = z.getinfo(name).file_size
    if size > limit:
        raise ModelFileError(f"{source.name}: its {name} would unpack to {size / 1e9:.1f} GB, "
                             f"more than any napari-unet package holds; it was not opened.")
    return z.read(name)


def _model_file(rdf: dict, source: Path) -> str:
    """The name of the napari-unet model file a package's ``rdf.yaml`` attaches."""
    for item in rdf.get("attachments") or []:
        name = Path(str(item.get("source", "") if isinstance(item, dict) else item)).name
        if name.endswith(".safetensors"):
            return name
    arch = (rdf.get("weights") or {}).get("pytorch_state_dict", {}).get("architecture", {})
    if arch.get("import_from") != "napari_unet.model":
        raise ModelFileError(f"{source.name} holds a model napari-unet cannot build "
                             f"({arch.get('import_from', '?')}.{arch.get('callable', '?')}"
                             "); napari-unet opens U-Nets exported by napari-unet.")
    raise ModelFileError(f"{source.name} has no napari-unet model file (safetensors), only "
                         "PyTorch weights, which are pickles that napari-unet does not open; "
                         "export the model again with this napari-unet.")


def exporting(model, out, **options):
    """:func:`export_package` as a generator (one progress message, then the path), for the
    widgets' worker thread."""
    yield f"exporting {Path(out).name} (state dict, TorchScript, test data, cover)…"
    return export_package(model, out, **options)
