"""Overview levels of results on disk (napari_unet.pyramid)."""

import numpy as np
import pytest
import zarr

from napari_unet import pyramid


def _drain(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


@pytest.mark.parametrize("shape,chunks", [((301, 517), (64, 64)),
                                          ((2, 3, 130, 257), (1, 3, 32, 48))])
def test_each_level_takes_every_other_pixel_of_the_one_before(tmp_path, shape, chunks):
    """Levels halve the plane (odd sides rounded up) down to the smallest side asked,
    keep the labels' values (nearest neighbour, never blended), keep the leading axes
    (planes, classes) and the chunking, and report each chunk written."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 2**31, shape).astype(np.uint32)
    array = zarr.create_array(store=str(tmp_path / "labels.zarr"), shape=shape,
                              chunks=chunks, dtype="uint32")
    array[...] = data
    events, levels = _drain(pyramid.write_levels(array, tmp_path / "levels", smallest=40))
    assert len(levels) == 1 + pyramid.level_count(shape, 40) and levels[0] is array
    assert max(levels[-1].shape[-2:]) <= 40 < max(levels[-2].shape[-2:])
    for k, level in enumerate(levels):
        np.testing.assert_array_equal(level[...], data[..., :: 2**k, :: 2**k])
        assert level.shape[:-2] == shape[:-2] and level.dtype == np.uint32
        assert all(c <= s for c, s in zip(level.chunks, level.shape, strict=True))
    chunks_written = sum(np.prod(level.cdata_shape) for level in levels[1:])
    assert len(events) == chunks_written + 1 and events[-1] == (len(levels) - 1,) * 2


def test_only_planes_too_large_to_show_whole_get_levels(monkeypatch):
    assert not pyramid.needs_levels((8192, 8192)) and pyramid.needs_levels((8193, 8192))
    assert pyramid.needs_levels((5, 3, 20000, 20000)) and not pyramid.needs_levels((99, 64, 64))
    assert pyramid.level_count((100_000, 60_000)) == 6  # 100,000 px -> 1,563 px a side
    assert pyramid.level_count((2048, 2048)) == 0
