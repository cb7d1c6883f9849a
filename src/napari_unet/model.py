"""The U-Net of Ronneberger, Fischer and Brox (MICCAI 2015), in small named blocks.

The contracting path repeats two 3x3 convolutions (each followed by a ReLU) and a 2x2 max
pooling, doubling the channels at every level; dropout ends it. The expanding path repeats a
2x2 up-convolution that halves the channels, a concatenation with the centre-cropped feature
map of the same level, and two 3x3 convolutions. A 1x1 convolution maps to the classes.

With ``padding='valid'`` (the paper) the convolutions are unpadded, the output is smaller than
the input and only some input sizes are allowed (every max pooling must see an even size);
:meth:`ModelConfig.valid_input_size` gives them. The paper's configuration has 31,030,658
parameters and maps a 572x572 tile to 388x388.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class TwoConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (optional normalisation and) a ReLU."""

    def __init__(self, in_ch: int, out_ch: int, *, padding: int, norm: str) -> None:
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=padding, bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=padding, bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )


def fuse_batch_norm(net: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it, in place.

    For inference only: the outputs agree to float rounding, and the normalisation costs
    nothing any more (it was about a sixth of a prediction's time on the CPU).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in net.modules():
        if isinstance(module, TwoConv):
            for i in (0, 3):
                conv, bn = module[i], module[i + 1]
                if isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                    module[i + 1] = nn.Identity()
    return net


class ConvReLU(nn.Conv2d):
    """A 3x3 convolution and the ReLU after it in one cuDNN call (convolution, bias and
    activation fused), for inference on a CUDA GPU under bf16/fp16 autocast.

    Unfused, the bias addition and the ReLU are two more passes over every feature map: a
    fifth of the paper-width network's time on an H200 (benchmarks/RESULTS.md). The same
    parameters as the :class:`~torch.nn.Conv2d` it replaces (the state dict is unchanged).
    Before its first fused use, a layer of each shape and dtype is checked once on a small
    crop of its input against the plain way (:data:`_CHECKED`); where cuDNN cannot fuse
    (an error) or disagrees, the layer stays unfused. Elsewhere (CPU, fp32, training) it is
    the plain convolution and ReLU.
    """

    fused: bool | None = None  # None: not yet checked

    @classmethod
    def of(cls, conv: nn.Conv2d) -> ConvReLU:
        new = cls.__new__(cls)
        new.__dict__ = conv.__dict__.copy()  # the same parameters, buffers and options
        return new

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).relu_()

    def _fused(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        w = self.weight.to(dtype)
        b = None if self.bias is None else self.bias.to(dtype)
        return fused_conv_relu(x.to(dtype), w, b, self.stride, self.padding, self.dilation,
                               self.groups)

    def _check(self, x: torch.Tensor, dtype: torch.dtype) -> bool:
        """Whether the fused way works and agrees with the plain way for this layer's
        shape, on a crop of ``x`` (remembered per shape, dtype and device)."""
        key = (tuple(self.weight.shape), self.stride, self.padding, self.dilation,
               self.groups, self.bias is not None, dtype, x.device, x.is_contiguous(
                   memory_format=torch.channels_last))
        if key not in _CHECKED:
            crop = x[:1, :, :64, :64]
            crop = crop.contiguous(memory_format=torch.channels_last
                                   if key[-1] else torch.contiguous_format)
            cudnn = torch.backends.cudnn
            with cudnn.flags(enabled=cudnn.enabled, benchmark=False,  # no autotuning
                             deterministic=cudnn.deterministic,      # for the crop
                             allow_tf32=cudnn.allow_tf32):
                try:
                    fused = self._fused(crop, dtype).float()
                except RuntimeError:
                    _CHECKED[key] = False
                else:
                    ref = self._plain(crop).float()
                    tol = 2e-2 * float(ref.abs().max()) + 1e-3  # bf16 rounding
                    _CHECKED[key] = bool((fused - ref).abs().max() <= tol)
        return _CHECKED[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _fusable(x)
        if dtype is None or self.fused is False or self.padding_mode != "zeros":
            return self._plain(x)
        if self.fused is None:
            self.fused = self._check(x, dtype)
        if self.fused:
            try:
                return self._fused(x, dtype)
            except torch.OutOfMemoryError:
                raise  # the caller halves the batch
            except RuntimeError:  # cuDNN had no fused engine at this size
                self.fused = False
        return self._plain(x)


#: The verdicts of :meth:`ConvReLU._check`, by layer shape, dtype and device.
_CHECKED: dict[tuple, bool] = {}


def fused_conv_relu(x, weight, bias, stride, padding, dilation, groups):
    """cuDNN's fused convolution + bias + ReLU (``torch.cudnn_convolution_relu``)."""
    return torch.cudnn_convolution_relu(x, weight, bias, stride, padding, dilation, groups)


#: Whether :class:`ConvReLU` layers may take cuDNN's fused way at all (benchmarks turn it
#: off to time the plain network in the same run).
FUSE_CONV_RELU = True


def _fusable(x: torch.Tensor) -> torch.dtype | None:
    """The autocast dtype when ``x`` may go through :class:`ConvReLU`'s fused way: on a
    CUDA GPU, in inference, under bf16 or fp16 autocast; else None."""
    if not (FUSE_CONV_RELU and x.is_cuda) or torch.is_grad_enabled() or \
            not torch.is_autocast_enabled("cuda"):
        return None
    dtype = torch.get_autocast_dtype("cuda")
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def fuse_conv_relu(net: nn.Module) -> tuple[int, int]:
    """Make every convolution followed directly by its ReLU a :class:`ConvReLU` (after
    :func:`fuse_batch_norm`; group norms stay in between), in place, for prediction.
    Returns (convolutions made fusable, 3x3 convolutions in all)."""
    made = total = 0
    for module in net.modules():
        if isinstance(module, TwoConv):
            for i in (0, 3):
                total += 1
                if isinstance(module[i + 1], nn.Identity) and not isinstance(module[i],
                                                                              ConvReLU):
                    module[i] = ConvReLU.of(module[i])
                    module[i + 2] = nn.Identity()
                    made += 1
    return made, total


def fused_layers(net: nn.Module) -> dict[str, int]:
    """How many :class:`ConvReLU` layers run fused, unfused, or were not tried yet."""
    counts = {"fused": 0, "unfused": 0, "untried": 0}
    for m in net.modules():
        if isinstance(m, ConvReLU):
            counts[{True: "fused", False: "unfused", None: "untried"}[m.fused]] += 1
    return counts


class Down(nn.Sequential):
    """2x2 max pooling, then :class:`TwoConv` doubling the channels."""

    def __init__(self, in_ch: int, out_ch: int, *, padding: int, norm: str) -> None:
        super().__init__(nn.MaxPool2d(2), TwoConv(in_ch, out_ch, padding=padding, norm=norm))


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the centre ``height`` x ``width`` of an NCHW tensor."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class UpCat(nn.Module):
    """2x2 up-convolution halving the channels, crop-and-concatenate the skip, TwoConv."""

    def __init__(self, in_ch: int, out_ch: int, *, padding: int, norm: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, 2, stride=2)
        self.conv = TwoConv(in_ch // 2 + out_ch, out_ch, padding=padding, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = center_crop(skip, x.shape[-2], x.shape[-1])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """The U-Net; build it with keyword options or from a :class:`ModelConfig`.

    Examples
    --------
    >>> net = UNet()  # the paper's network
    >>> net(torch.zeros(1, 1, 572, 572)).shape
    torch.Size([1, 2, 388, 388])

    Sizes are arithmetic on the configuration: ``net.config.output_size(572)`` is 388,
    ``net.config.valid_input_size(500)`` is 508 and ``net.config.context()`` is 92.
    """

    def __init__(self, config: ModelConfig | None = None, **options) -> None:
        super().__init__()
        if config is None:
            config = ModelConfig(**options)
        elif options:
            config = config.replace(**options)
        self.config = config
        pad = 1 if config.padding == "same" else 0
        chans = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.inc = TwoConv(config.in_channels, chans[0], padding=pad, norm=config.norm)
        self.downs = nn.ModuleList(
            Down(chans[i], chans[i + 1], padding=pad, norm=config.norm)
            for i in range(config.depth)
        )
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            UpCat(chans[i + 1], chans[i], padding=pad, norm=config.norm)
            for i in reversed(range(config.depth))
        )
        self.head = nn.Conv2d(chans[0], config.out_channels, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # The paper: Gaussian weights with standard deviation sqrt(2 / N), N = fan-in.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def encoder(self) -> list[nn.Module]:
        """The contracting path's modules (frozen when fine-tuning with a fixed encoder)."""
        return [self.inc, *self.downs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.dropout(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)


def activate(logits: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Network outputs to probabilities: softmax over the classes; for a model with a
    distance channel, a sigmoid on that channel (the normalised distance, 0..1); for a
    model with offset channels, the vectors to the objects' centres in pixels (y, x)."""
    logits = logits.float()
    if not (config.distance or config.offsets):
        return logits.softmax(1)
    k = config.n_classes
    parts = [logits[:, :k].softmax(1)]
    if config.distance:
        parts.append(logits[:, k : k + 1].sigmoid())
    if config.offsets:
        from .targets import OFFSET_SCALE

        parts.append(logits[:, -2:] * OFFSET_SCALE)
    return torch.cat(parts, 1)
