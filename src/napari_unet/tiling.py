"""The overlap-tile strategy (numpy only).

An image of any size is cut into tiles whose *kept* output regions tile it exactly. Every
tile's input carries the network's context around its kept region; beyond the image border
that context is the image mirrored (the paper's Fig. 2). Tile starts are multiples of
2**depth, so every max pooling sees the same pixel grid as a single pass over the whole
(mirror-padded) image would, and the tiled result equals that pass to float tolerance.

Images are channels-last: ``(H, W)`` or ``(H, W, C)``. Tiles are read lazily, so the image
may be a memmap, a zarr or a Dask array; only the rows and columns a tile needs are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .config import ModelConfig


def mirror_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map positions (possibly outside ``[0, n)``) to the image by mirroring at the borders.

    The border pixel is not repeated (numpy's 'reflect'), and positions any distance away
    are handled by repeated mirroring.
    """
    index = np.asarray(index)
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    m = np.mod(index, period)
    return np.where(m < n, m, period - m)


def read_window(image, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Read ``image[top:top+height, left:left+width]`` with mirrored borders.

    Works on anything indexable by slices (numpy, memmap, zarr, Dask); reads only the
    bounding box of the needed rows and columns.
    """
    h, w = image.shape[:2]
    if 0 <= top and top + height <= h and 0 <= left and left + width <= w:
        return np.asarray(image[top : top + height, left : left + width])  # inside: a slice
    rows = mirror_index(np.arange(top, top + height), h)
    cols = mirror_index(np.arange(left, left + width), w)
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    block = np.asarray(image[r0:r1, c0:c1])
    return block[np.ix_(rows - r0, cols - c0)]


@dataclass(frozen=True)
class Geometry:
    """How a network maps an input tile to its output.

    Attributes
    ----------
    halo : int
        Context pixels read before (and after) a tile's kept region.
    align : int
        Tile starts are multiples of this (2**depth).
    crop : int
        Index, in the network's output, of the first kept pixel (``margin`` for 'valid',
        ``halo`` for 'same' padding).
    margin : int
        Output pixels computed around each kept region and not kept (at least this many
        for 'same' padding), so that a shift of the output by up to ``margin`` pixels
        (:mod:`napari_unet.label_offset`) is exact across tile seams.
    """

    halo: int
    align: int
    crop: int
    config: ModelConfig
    margin: int = 0

    @classmethod
    def for_model(cls, config: ModelConfig, halo: int | None = None,
                  margin: int = 0) -> Geometry:
        """The exact geometry, or for a 'same' padding network a smaller ``halo`` (rounded
        up to the pooling grid): faster, no longer exactly one pass over the whole image."""
        align = 2**config.depth
        margin = max(int(margin), 0)
        if config.padding == "valid":
            return cls(halo=config.context() + margin, align=align, crop=margin,
                       config=config, margin=margin)
        if halo is None:
            halo = config.context()
        else:
            halo = min(-(-max(int(halo), 0) // align) * align, config.context())
        halo = max(halo, -(-margin // align) * align)
        return cls(halo=halo, align=align, crop=halo, config=config, margin=margin)

    def stride(self, input_size: int) -> int:
        """Kept pixels per tile for an accepted input size (a multiple of ``align``)."""
        if self.config.padding == "valid":
            usable = self.config.output_size(input_size) - 2 * self.margin
        else:
            usable = input_size - 2 * self.halo
        return max(usable // self.align * self.align, 0)

    def input_for(self, requested: int, length: int) -> int:
        """The input tile side to use for an axis of ``length`` pixels.

        The accepted size nearest ``requested`` from above sets how many tiles the axis
        needs; the tiles are then made as small as that count allows (balanced), so that the
        last tile does not compute mostly mirrored border: with 1024 px tiles a 2048 px axis
        takes 3 tiles of 912 px instead of 3 of 1024 (same padding, depth 4). Never so small
        that a tile keeps nothing.
        """
        accepted = self.config.valid_input_size
        size = accepted(max(requested, 1))
        while self.stride(size) < self.align:
            size = accepted(size + 1)
        count = -(-max(length, 1) // self.stride(size))
        need = max(-(-length // count), self.align)
        best = accepted(1)
        while best < size and self.stride(best) < need:
            best = accepted(best + 1)
        return min(best, size)


@dataclass(frozen=True)
class Tile:
    """One tile: where its input is read and where its kept output goes."""

    top: int  # input window's first row in image coordinates (may be negative)
    left: int
    out: tuple[slice, slice]  # kept region in the image
    crop: tuple[slice, slice]  # the same region in the network's output


@dataclass(frozen=True)
class TilePlan:
    """All tiles of one 2D image."""

    shape: tuple[int, int]
    input_shape: tuple[int, int]
    stride: tuple[int, int]
    geometry: Geometry

    def __len__(self) -> int:
        return int(np.prod([-(-n // s) for n, s in zip(self.shape, self.stride)]))

    def __iter__(self) -> Iterator[Tile]:
        (h, w), (sh, sw), g = self.shape, self.stride, self.geometry
        for y in range(0, h, sh):
            for x in range(0, w, sw):
                oh, ow = min(sh, h - y), min(sw, w - x)
                yield Tile(
                    top=y - g.halo,
                    left=x - g.halo,
                    out=(slice(y, y + oh), slice(x, x + ow)),
                    crop=(slice(g.crop, g.crop + oh), slice(g.crop, g.crop + ow)),
                )

    def read(self, image, tile: Tile) -> np.ndarray:
        """The mirrored input window of ``tile`` from a channels-last ``image``."""
        return read_window(image, tile.top, tile.left, *self.input_shape)


def plan_tiles(shape: tuple[int, int], config: ModelConfig, tile_size: int,
               halo: int | None = None, margin: int = 0) -> TilePlan:
    """Plan the overlap-tile pass of a network over an image of 2D ``shape`` (``halo``,
    ``margin``: see :class:`Geometry`)."""
    geometry = Geometry.for_model(config, halo, margin)
    sizes = tuple(geometry.input_for(tile_size, n) for n in shape)
    return TilePlan(
        shape=(int(shape[0]), int(shape[1])),
        input_shape=sizes,  # type: ignore[arg-type]
        stride=tuple(geometry.stride(s) for s in sizes),  # type: ignore[arg-type]
        geometry=geometry,
    )
