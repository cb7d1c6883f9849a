"""Frozen configuration dataclasses; plain data, no torch import.

``ModelConfig`` describes the network, ``TrainConfig`` a training run and ``PredictConfig``
a prediction. Each converts to and from a JSON-friendly ``dict``; unknown keys are refused so
that a model file from a future or foreign program fails with a clear message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .errors import InputError

Padding = Literal["valid", "same"]
Norm = Literal["none", "batch", "group"]
Mode = Literal["instances", "semantic"]
Target = Literal["two_class", "three_class", "distance", "offsets"]
#: The instance targets, as the command line and the Train widget offer them.
TARGETS: tuple[str, ...] = get_args(Target)

#: Model size presets offered by the widgets (base channels, depth).
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"base_channels": 8, "depth": 3},
    "small": {"base_channels": 16, "depth": 4},
    "medium": {"base_channels": 32, "depth": 4},
    "paper": {"base_channels": 64, "depth": 4},
}


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}.")


def _check_positive(name: str, value: float | int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not value > 0:
        raise InputError(f"{name} must be a positive number, not {value!r}.")


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise InputError(f"{cls.__name__} must be a mapping, not {type(data).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"{cls.__name__} has no field(s) {', '.join(unknown)}.")
        values = dict(data)
        for key, val in values.items():
            if isinstance(val, list):
                values[key] = tuple(val)
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


#: The largest network built: 2 GB of fp32 weights, four times that to train with Adam (the
#: paper's network has 31 million parameters; 64 base channels at depth 6, 500 million).
MAX_PARAMETERS = 500_000_000


@dataclass(frozen=True)
class ModelConfig(_DictMixin):
    """The U-Net's architecture. The defaults are the paper's network.

    Parameters
    ----------
    in_channels : int
        Image channels (1 grey, 3 RGB, any number for multi-channel images).
    n_classes : int
        Output classes, background included.
    depth : int
        Number of 2x2 max-poolings in the contracting path (the paper: 4).
    base_channels : int
        Feature channels of the first level; doubled at every level (the paper: 64).
    padding : {'valid', 'same'}
        'valid': unpadded 3x3 convolutions as in the paper; 'same': zero-padded ones.
    norm : {'none', 'batch', 'group'}
        Normalisation after every convolution.
    dropout : float
        Dropout probability at the end of the contracting path.
    distance : bool
        One more output channel after the classes: each object's distance to its border,
        divided by the object's largest one (0..1 by a sigmoid), regressed for the
        'distance' instance target.
    offsets : bool
        Two more output channels after those: each object pixel's vector to its object's
        centre (y, x), regressed for the 'offsets' instance target.
    """

    in_channels: int = 1
    n_classes: int = 2
    depth: int = 4
    base_channels: int = 64
    padding: Padding = "valid"
    norm: Norm = "none"
    dropout: float = 0.5
    distance: bool = False
    offsets: bool = False

    @property
    def out_channels(self) -> int:
        """Output channels: the classes, then the distance channel and the two offset
        channels if there are."""
        return self.n_classes + int(self.distance) + 2 * int(self.offsets)

    def __post_init__(self) -> None:
        for name in ("in_channels", "base_channels", "depth"):
            _check_positive(name, getattr(self, name))
        if self.n_classes < 2:
            raise InputError(f"n_classes must be at least 2, not {self.n_classes}.")
        _check_choice("padding", self.padding, ("valid", "same"))
        _check_choice("norm", self.norm, ("none", "batch", "group"))
        if not 0 <= self.dropout < 1:
            raise InputError(f"dropout must be in [0, 1), not {self.dropout}.")
        for name in ("distance", "offsets"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, not {getattr(self, name)!r}.")
        if self.distance and self.offsets:
            raise InputError("a model has a distance channel or offset channels, not both.")
        if (count := self.parameter_count()) > MAX_PARAMETERS:
            raise InputError(
                f"a network of {self.base_channels} base channels and depth {self.depth} has "
                f"{count / 1e6:,.0f} million parameters, more than the "
                f"{MAX_PARAMETERS // 10**6} million napari-unet builds (the paper's has 31 "
                "million): choose fewer base channels or a smaller depth.")

    # ---- size arithmetic (no torch needed) -----------------------------------------------
    def parameter_count(self) -> int:
        """The network's trainable parameters (the paper's network: 31,030,658)."""
        per_conv = 2 if self.norm != "none" else 1  # a norm's weight and bias, or a bias

        def two_conv(i: int, o: int) -> int:
            return 9 * i * o + 9 * o * o + 2 * per_conv * o

        ch = [self.base_channels * 2**i for i in range(self.depth + 1)]
        n = two_conv(self.in_channels, ch[0]) + (ch[0] + 1) * self.out_channels
        for i in range(self.depth):
            up = ch[i + 1] // 2
            n += two_conv(ch[i], ch[i + 1]) + 4 * ch[i + 1] * up + up + two_conv(up + ch[i],
                                                                                 ch[i])
        return n

    def output_size(self, size: int) -> int:
        """Output side of the network for an input side ``size``.

        Raises ``ValueError`` where a max pooling would see an odd size or the size vanishes.
        """
        shrink = 4 if self.padding == "valid" else 0
        n = int(size)
        for _ in range(self.depth):
            n -= shrink
            if n <= 0 or n % 2:
                raise ValueError(f"input size {size} does not suit this U-Net")
            n //= 2
        n -= shrink
        for _ in range(self.depth):
            n = 2 * n - shrink
        if n <= 0:
            raise ValueError(f"input size {size} is too small for this U-Net")
        return n

    def valid_input_size(self, size: int) -> int:
        """The smallest input side ``>= size`` that :meth:`output_size` accepts."""
        n = max(int(size), 1)
        while True:
            try:
                self.output_size(n)
                return n
            except ValueError:
                n += 1

    def context(self) -> int:
        """Pixels of context each side of an output pixel that the network looks at.

        For 'valid' padding this is (input - output) / 2, 92 for the paper's network. For
        'same' padding an output pixel's footprint reaches up to 2**depth - 1 pixels further,
        depending on where it falls in the pooling grid (107 for depth 4, measured by
        gradients in the tests); this is rounded up so that a tile's input stays a multiple
        of 2**depth. Outputs that far from a tile's border are unaffected by the zero padding
        there.
        """
        valid = self.replace(padding="valid")
        size = valid.valid_input_size(1)
        ctx = (size - valid.output_size(size)) // 2
        if self.padding == "valid":
            return ctx
        half = 2 ** (self.depth - 1)
        return -(-(ctx + 2**self.depth - 1) // half) * half


@dataclass(frozen=True)
class TrainConfig(_DictMixin):
    """How to train.

    Parameters
    ----------
    mode : {'instances', 'semantic'}
        'instances': labels are objects 1..N, touching ones are separated by the paper's
        border weight map; 'semantic': labels are classes 0..K.
    target : {'two_class', 'three_class', 'distance', 'offsets'}
        For instances: the paper's foreground/background map, background/interior/boundary,
        the paper's map plus a regressed distance map that seeds a watershed, or the
        paper's map plus each object pixel's vector to its object's centre (pixels are
        grouped by the centre they point to).
    epochs : int or None
        Number of epochs; ignored when ``time_budget`` is set.
    time_budget : float or None
        Seconds of training; validation and saving included.
    steps_per_epoch : int or None
        Optimiser steps between validations (None: about one pass over the training pixels,
        at least 50 and at most 500).
    batch_size : int
        Patches per optimiser step.
    patch_size : int
        Side of the labelled (output) patch in pixels.
    learning_rate : float
        Adam's initial learning rate (cosine decay to 1 % of it).
    w0, sigma : float
        The border weight map's amplitude and width in pixels (the paper: 10 and 5).
    class_balance : bool
        The weight map's class-frequency term ``w_c`` (off: every class weighs 1).
    dice_weight : float
        Weight of a soft Dice term added to the weighted cross-entropy (default 0: the
        paper's loss alone, which separated more touching nuclei on DSB 2018 at the same
        AP@0.5; see benchmarks/RESULTS.md).
    val_fraction : float
        Share of the training images held out for validation (0: none); of one to five
        images, a strip of that share of each image's longer side instead.
    augment : bool
        Elastic deformation, flips, 90 degree rotations and intensity changes.
    zoom : float
        With ``augment``: random zoom by a factor up to ``1 + zoom`` either way (0: off).
    foreground_bias : float
        Probability that a patch is centred on a labelled object.
    match_size : bool
        When fine-tuning a model that records the size of its cells: resize the training
        images so that their cells have that size (the model keeps learning cells at the
        size it knows; predict with the cell diameter of your images, or 'auto').
    freeze_encoder : bool
        When fine-tuning, keep the contracting path's weights fixed.
    label_offset : bool
        Semantic models: after training, find on the validation images whether the
        annotations lie a fraction of a pixel off what the network draws, and keep that
        shift with the model for prediction (:mod:`napari_unet.label_offset`).
    seed : int
        Random seed (patches, augmentation, initial weights, validation split).
    device : str
        'auto', 'cpu', 'cuda' or 'mps'.
    precision : {'auto', 'fp32', 'bf16', 'fp16'}
        Mixed precision of the training steps: 'auto' is bf16 autocast on a CUDA GPU that
        has it, fp32 elsewhere; 'fp16' uses a gradient scaler.
    loader_workers : int or None
        Processes that make the augmented patches (None: up to 6 on a GPU, none on a CPU,
        where a thread prepares the next batch).
    """

    mode: Mode = "instances"
    target: Target = "two_class"
    epochs: int | None = 50
    time_budget: float | None = None
    steps_per_epoch: int | None = None
    batch_size: int = 4
    patch_size: int = 256
    learning_rate: float = 1e-3
    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True
    dice_weight: float = 0.0
    val_fraction: float = 0.1
    augment: bool = True
    zoom: float = 0.0
    foreground_bias: float = 0.5
    freeze_encoder: bool = False
    match_size: bool = False
    label_offset: bool = True
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    loader_workers: int | None = None

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, ("instances", "semantic"))
        _check_choice("precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        if self.loader_workers is not None and self.loader_workers < 0:
            raise InputError(f"loader_workers must be 0 or more, not {self.loader_workers}.")
        _check_choice("target", self.target, TARGETS)
        if self.epochs is None and self.time_budget is None:
            raise InputError("Give either a number of epochs or a time budget.")
        _check_positive("epochs", self.epochs, allow_none=True)
        _check_positive("time_budget", self.time_budget, allow_none=True)
        _check_positive("steps_per_epoch", self.steps_per_epoch, allow_none=True)
        for name in ("batch_size", "patch_size", "learning_rate", "sigma"):
            _check_positive(name, getattr(self, name))
        if not 0 <= self.zoom <= 2:
            raise InputError(f"zoom must be between 0 and 2, not {self.zoom}.")
        if self.w0 < 0 or self.dice_weight < 0:
            raise InputError("w0 and dice_weight must not be negative.")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction must be in [0, 1), not {self.val_fraction}.")
        if not 0 <= self.foreground_bias <= 1:
            raise InputError(f"foreground_bias must be in [0, 1], not {self.foreground_bias}.")
        if not (hasattr(self.seed, "__index__") and 0 <= self.seed < 2**63):  # int, numpy's
            raise InputError(f"seed must be a whole number from 0 to 2**63 - 1, not "
                             f"{self.seed!r}.")


@dataclass(frozen=True)
class PredictConfig(_DictMixin):
    """How to predict.

    Parameters
    ----------
    tile_size : int
        Side of the input tile fed to the network (rounded to a size the network accepts).
        0 (the default) chooses: 1024 px on a CPU or Apple MPS; on a CUDA GPU the largest
        tile that half of the free memory holds
        (:func:`napari_unet.device.auto_tile_size`).
    batch_size : int
        Tiles per forward pass; 0 chooses from the free device memory.
    device : str
        'auto', 'cpu', 'cuda' or 'mps'.
    precision : {'auto', 'fp32', 'bf16', 'fp16'}
        Arithmetic of the network: 'auto' is bf16 autocast on a CUDA GPU that has it
        (probabilities agree with fp32 to Dice >= 0.99, see benchmarks/predict_speed.py),
        fp32 elsewhere.
    threshold : float or None
        Foreground probability threshold of two-class models (None: the threshold the
        training calibrated on its validation images, stored in the model file).
    instance_method : {'auto', 'components', 'watershed'}
        How objects are separated: 'components' (the paper), 'watershed' (seeded; for
        two-class models, split objects whose shared boundary is foreground are merged
        again), 'auto' (the watershed, chosen on a development set of DSB 2018 nuclei,
        see benchmarks/RESULTS.md).
    cut_necks : bool
        The watershed of two- and three-class models also cuts objects where they narrow
        to a neck, as two touching round cells do
        (:func:`napari_unet.instances.split_at_necks`). Turn it off for cells that are not
        round (long, branched or lobed ones).
    min_size : int or 'auto'
        Objects smaller than this many pixels are removed. 'auto': a fifth of the area of
        the model's typical cell (at the image's scale when it is resized) or of the
        image's median object, the smaller, at least 10 px
        (:func:`napari_unet.instances.auto_min_size`); 10 px for a model that records no
        cell size.
    tta : bool
        Test-time augmentation: average over the 8 rotations and flips (8x slower).
    halo : int or None
        Context pixels each tile carries beyond what it keeps, for 'same' padding models.
        None: the network's whole receptive field (112 px at depth 4), so the tiled result
        equals one pass over the whole image. Smaller is faster and approximate (48 px
        agreed with the exact result to Dice 0.999 on DSB nuclei, benchmarks/RESULTS.md).
    diameter : float, 'auto' or None
        Typical diameter of the cells in the image, in pixels. The image is resized so that
        its cells have the size the model was trained on (recorded in the model file),
        predicted, and the result resized back. 'auto': estimated from a first pass at the
        image's own size (of a stack, from its first plane). None or 0: predict at the
        image's own size.
    link_planes : float
        Of a stack (a z-stack, or a time-lapse whose cells move less than their size),
        give the objects of consecutive planes that overlap by at least this intersection
        over union one label (as Cellpose's ``stitch_threshold``); 0: each plane is
        labelled on its own. Instance models only.
    follow_time : bool
        Of a time-lapse of z-stacks ``(T, Z, H, W)``, whose objects ``link_planes`` links
        along Z within each time point: follow them through the time points too, each
        object taking the id of the one of the time point before that it overlaps by at
        least ``link_planes`` in 3D (cells that move less than their size between time
        points). A stack ``(N, H, W)`` is followed along its one axis by ``link_planes``
        alone.
    """

    tile_size: int = 0
    batch_size: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threshold: float | None = None
    instance_method: Literal["auto", "components", "watershed"] = "auto"
    cut_necks: bool = True
    min_size: int | Literal["auto"] = "auto"
    tta: bool = False
    halo: int | None = None
    diameter: float | Literal["auto"] | None = None
    link_planes: float = 0.0
    follow_time: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int) or (
                self.tile_size < 0):
            raise InputError(f"tile_size must be a number of pixels, or 0 to choose from the "
                             f"device, not {self.tile_size!r}.")
        if isinstance(self.link_planes, bool) or not (
                isinstance(self.link_planes, (int, float)) and 0 <= self.link_planes <= 1):
            raise InputError(f"link_planes is the overlap (IoU, 0 to 1) at which objects of "
                             f"consecutive planes become one; 0 leaves the planes apart, "
                             f"not {self.link_planes!r}.")
        if not isinstance(self.follow_time, bool):
            raise InputError(f"follow_time is True or False, not {self.follow_time!r}.")
        if self.follow_time and not self.link_planes:
            raise InputError("following objects through time links the objects that "
                             "link_planes makes of each z-stack: set link_planes too (the "
                             "overlap, e.g. 0.25).")
        if self.diameter is not None and self.diameter != "auto" and not (
                isinstance(self.diameter, (int, float)) and not isinstance(self.diameter, bool)
                and 0 <= self.diameter < 1e5):
            raise InputError(f"diameter must be a positive number of pixels, 'auto' or 0 "
                             f"(predict at the image's size), not {self.diameter!r}.")
        if self.batch_size < 0:
            raise InputError(f"batch_size must be 0 (automatic) or more, not {self.batch_size}.")
        if self.min_size != "auto" and (isinstance(self.min_size, bool) or not isinstance(
                self.min_size, int) or self.min_size < 0):
            raise InputError(f"min_size must be a number of pixels (0 or more) or 'auto', "
                             f"not {self.min_size!r}.")
        _check_choice("precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _check_choice("instance_method", self.instance_method, ("auto", "components", "watershed"))
        if self.halo is not None and self.halo < 0:
            raise InputError(f"halo must be 0 or more pixels, not {self.halo}.")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise InputError(f"threshold must be between 0 and 1, not {self.threshold}.")
