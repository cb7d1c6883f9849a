import numpy as np
import pytest
import torch
from conftest import tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.config import ModelConfig
from napari_unet.data import normalize
from napari_unet.model import UNet
from napari_unet.predict import forward, infer_plane
from napari_unet.tiling import mirror_index, plan_tiles, read_window


def whole_image_reference(net, image, tta=False, device="cpu"):
    """One pass of the network over the whole mirror-padded image, cropped to the image
    (the network on ``device``)."""
    cfg = net.config
    halo = cfg.context()
    align = 2**cfg.depth
    sizes = []
    for n in image.shape[:2]:
        if cfg.padding == "valid":
            sizes.append(cfg.valid_input_size(n + 2 * halo))
        else:
            sizes.append(-(-(n + 2 * halo) // align) * align)
    window = read_window(image, -halo, -halo, *sizes)
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(window, -1, 0)[None]))
    with torch.no_grad():
        prob = forward(net, x.float().to(device), tta)[0].cpu().numpy()
    crop = 0 if cfg.padding == "valid" else halo
    return prob[:, crop : crop + image.shape[0], crop : crop + image.shape[1]]


@pytest.mark.parametrize("resident", [False, True], ids=["streamed", "resident"])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("shape,tile", [((97, 131), 40), ((64, 64), 60), ((50, 203), 100),
                                        ((7, 5), 40), ((160, 90), 70)])
def test_tiled_equals_whole_image(padding, norm, shape, tile, resident, rng):
    torch.manual_seed(0)
    cfg = tiny_config(padding=padding, norm=norm, in_channels=2, n_classes=3)
    net = UNet(cfg).eval()
    if norm == "batch":  # non-trivial running statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    image = normalize(rng.normal(size=(*shape, 2)).astype(np.float32))
    plan = plan_tiles(shape, cfg, tile)
    out = np.full((3, *shape), np.nan, np.float32)
    for _ in infer_plane(net, image, plan, out, batch_size=3, device=torch.device("cpu"),
                         resident=resident):
        pass
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, whole_image_reference(net, image), atol=2e-5)
    if min(shape) > 60:
        assert len(plan) > 1  # the case really is tiled


def test_paper_network_tiles_seamlessly(rng):
    """Depth 4 (the paper's geometry), thin channels to stay fast."""
    torch.manual_seed(0)
    cfg = ModelConfig(base_channels=2, dropout=0.0)
    net = UNet(cfg).eval()
    image = normalize(rng.normal(size=(300, 250)).astype(np.float32)[..., None])
    plan = plan_tiles(image.shape[:2], cfg, 220)
    assert len(plan) > 1
    out = np.zeros((2, 300, 250), np.float32)
    for _ in infer_plane(net, image, plan, out, batch_size=4, device=torch.device("cpu")):
        pass
    np.testing.assert_allclose(out, whole_image_reference(net, image), atol=2e-5)


@given(n=st.integers(1, 50), lo=st.integers(-200, 0), span=st.integers(1, 300))
def test_mirror_index_stays_inside_and_mirrors(n, lo, span):
    idx = np.arange(lo, lo + span)
    m = mirror_index(idx, n)
    assert m.min() >= 0 and m.max() < n
    inside = (idx >= 0) & (idx < n)
    assert np.array_equal(m[inside], idx[inside])
    if n > 1:  # numpy's 'reflect' near the borders
        ref = np.pad(np.arange(n), 2 * n, mode="reflect")
        near = (idx >= -2 * n) & (idx < 3 * n)
        assert np.array_equal(m[near], ref[idx[near] + 2 * n])


@settings(deadline=None, max_examples=60)
@given(h=st.integers(1, 400), w=st.integers(1, 400), tile=st.integers(1, 300),
       padding=st.sampled_from(["valid", "same"]), depth=st.integers(1, 4))
def test_plan_covers_every_pixel_exactly_once(h, w, tile, padding, depth):
    cfg = tiny_config(padding=padding, depth=depth)
    plan = plan_tiles((h, w), cfg, tile)
    count = np.zeros((h, w), np.int32)
    for t in plan:
        count[t.out] += 1
        crop_h = t.crop[0].stop - t.crop[0].start
        assert crop_h == t.out[0].stop - t.out[0].start
        assert t.crop[0].stop <= cfg.output_size(plan.input_shape[0])
        assert t.top % 2**depth == (-cfg.context()) % 2**depth  # pooling grid kept
    assert (count == 1).all()
    assert len(plan) == len(list(plan))


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_test_time_augmentation_keeps_tiling_exact(padding, rng):
    torch.manual_seed(1)
    cfg = tiny_config(padding=padding)
    net = UNet(cfg).eval()
    image = normalize(rng.normal(size=(90, 77, 1)).astype(np.float32))
    plan = plan_tiles(image.shape[:2], cfg, 50)
    assert len(plan) > 1
    out = np.zeros((2, 90, 77), np.float32)
    for _ in infer_plane(net, image, plan, out, batch_size=2, device=torch.device("cpu"),
                         tta=True):
        pass
    np.testing.assert_allclose(out, whole_image_reference(net, image, tta=True), atol=2e-5)
    assert not np.allclose(out, whole_image_reference(net, image, tta=False), atol=1e-3)


_NETS = {}


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 120), w=st.integers(1, 120), tile=st.integers(1, 150),
       padding=st.sampled_from(["valid", "same"]), seed=st.integers(0, 1000),
       resident=st.booleans())
def test_any_shape_and_tile_size_give_a_seamless_result(h, w, tile, padding, seed, resident):
    if padding not in _NETS:
        torch.manual_seed(0)
        _NETS[padding] = UNet(tiny_config(padding=padding, depth=2)).eval()
    net = _NETS[padding]
    image = np.random.default_rng(seed).normal(size=(h, w, 1)).astype(np.float32)
    out = np.full((2, h, w), np.nan, np.float32)
    plan = plan_tiles((h, w), net.config, tile)
    for _ in infer_plane(net, image, plan, out, batch_size=2, device=torch.device("cpu"),
                         resident=resident):
        pass
    np.testing.assert_allclose(out, whole_image_reference(net, image), atol=2e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float64])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_device_resident_region_of_a_raw_image_equals_the_streamed_one(dtype, padding, rng):
    """A region (as Dask blocks and labelled blocks are) of a raw multi-channel image,
    normalised by given percentiles: the resident way mirrors at the whole image's borders
    and normalises in the same float32 steps as the streamed one."""
    torch.manual_seed(2)
    net = UNet(tiny_config(padding=padding, in_channels=2)).eval()
    top = 60000 if dtype == np.uint16 else 100  # values past int16: unsigned kept unsigned
    image = rng.integers(0, top, size=(83, 71, 2)).astype(dtype)
    lo, hi = np.array([3.0, 10.0], np.float32), np.array([90.0, 10.0], np.float32)
    region = (50, 40)
    for origin in [(0, 0), (33, 31), (20, 0)]:
        plan = plan_tiles(region, net.config, 40)
        streamed, resident = (np.full((2, *region), np.nan, np.float32) for _ in range(2))
        for out, way in ((streamed, False), (resident, True)):
            done = list(infer_plane(net, image, plan, out, batch_size=3,
                                    device=torch.device("cpu"), lo=lo, hi=hi,
                                    origin=origin, resident=way))
            assert done[-1] == len(plan) > 1
        assert np.isfinite(resident).all()
        np.testing.assert_allclose(resident, streamed, atol=1e-5)


def test_the_resident_way_is_chosen_for_in_memory_arrays_on_a_gpu_only(tmp_path):
    from napari_unet.resident import fits

    cfg = tiny_config()
    plan = plan_tiles((64, 64), cfg, 40)
    image, out = np.zeros((64, 64, 1), np.float32), np.zeros((2, 64, 64), np.float32)
    assert not fits(image, out, plan, torch.device("cpu"))
    memmap = np.lib.format.open_memmap(tmp_path / "out.npy", "w+", np.float32, out.shape)
    assert not fits(image, memmap, plan, torch.device("cuda"))  # no GPU asked


def test_reduced_halo_is_rounded_capped_and_still_covers_the_image():
    cfg = ModelConfig(depth=3, base_channels=4, padding="same", norm="none", dropout=0.0)
    exact = plan_tiles((300, 270), cfg, 128)
    small = plan_tiles((300, 270), cfg, 128, halo=13)
    assert small.geometry.halo == 16 and small.geometry.crop == 16  # rounded to 2**depth
    assert plan_tiles((300, 270), cfg, 128, halo=10_000).geometry.halo == exact.geometry.halo
    assert small.stride[0] > exact.stride[0]
    seen = np.zeros((300, 270), int)
    for t in small:
        seen[t.out] += 1
    assert (seen == 1).all()
    valid = ModelConfig(depth=2, base_channels=4, padding="valid", norm="none", dropout=0.0)
    assert plan_tiles((100, 100), valid, 128, halo=8).geometry == plan_tiles(
        (100, 100), valid, 128).geometry  # 'valid' networks need their whole context


def test_balanced_tiles_keep_the_tile_count_and_shrink_the_tiles():
    cfg = ModelConfig(depth=4, base_channels=4, padding="same", norm="none", dropout=0.0)
    plan = plan_tiles((2048, 2048), cfg, 1024)
    assert len(plan) == 9 and plan.input_shape == (912, 912)
