import numpy as np
import pytest
import torch
from conftest import tiny_config

from napari_unet.checkpoint import Checkpoint, save_checkpoint
from napari_unet.config import PredictConfig
from napari_unet.errors import InputError
from napari_unet.model import UNet
from napari_unet.predict import predict
from napari_unet.progress import run


def make_model(tmp_path, channels=1, mode="instances", n_classes=2):
    torch.manual_seed(0)
    net = UNet(tiny_config(in_channels=channels, n_classes=n_classes))
    ck = Checkpoint(net.config, net.state_dict(), task={"mode": mode, "target": "two_class"})
    return save_checkpoint(tmp_path / "m.safetensors", ck)


def test_single_image_and_progress(tmp_path, rng):
    model = make_model(tmp_path)
    events = []
    result = run(predict(model, rng.integers(0, 255, (130, 170), dtype=np.uint8),
                         PredictConfig(tile_size=64)), events.append)
    assert result.labels.shape == (130, 170) and result.labels.dtype == np.uint16
    assert result.probabilities.shape == (2, 130, 170)
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-5)
    assert events[-1].done == events[-1].total > 1
    assert "CPU" in result.device


def test_a_pytorch_tensor_is_predicted_as_its_numpy_array(tmp_path, rng):
    """A notebook's tensor ended in numpy's "Cannot interpret 'torch.uint8' as a data
    type"."""
    model = make_model(tmp_path)
    image = rng.integers(0, 255, (2, 70, 90), dtype=np.uint8)  # a stack
    want = run(predict(model, image))
    for tensor in (torch.from_numpy(image), torch.from_numpy(image).float().requires_grad_()):
        got = run(predict(model, tensor))
        np.testing.assert_array_equal(got.probabilities, want.probabilities)
        np.testing.assert_array_equal(got.labels, want.labels)


def test_stack_is_predicted_plane_by_plane(tmp_path, rng):
    model = make_model(tmp_path)
    stack = rng.normal(size=(3, 50, 60)).astype(np.float32)
    result = run(predict(model, stack))
    assert result.labels.shape == (3, 50, 60)
    single = run(predict(model, stack[1]))
    np.testing.assert_allclose(result.probabilities[1], single.probabilities, atol=1e-6)


def test_multichannel_and_memmap_output(tmp_path, rng):
    model = make_model(tmp_path, channels=3, mode="semantic", n_classes=4)
    image = rng.normal(size=(70, 40, 3)).astype(np.float32)
    out = np.lib.format.open_memmap(tmp_path / "p.npy", "w+", np.float32, (4, 70, 40))
    result = run(predict(model, image, out_probabilities=out))
    assert result.probabilities is out
    assert result.labels.shape == (70, 40) and result.labels.max() < 4
    rgba = np.concatenate([image, np.ones((70, 40, 1), np.float32)], -1)
    np.testing.assert_allclose(run(predict(model, rgba)).probabilities, out, atol=1e-6)


@pytest.mark.parametrize("shape,match", [((20, 20, 5), "channel"), ((2, 3, 4, 5, 6), "shape")])
def test_wrong_layout_is_refused(tmp_path, shape, match):
    model = make_model(tmp_path, channels=3)
    with pytest.raises(InputError, match=match):
        next(predict(model, np.zeros(shape, np.float32)))


def test_colour_image_for_a_grey_model_is_refused(tmp_path, rng):
    model = make_model(tmp_path)
    with pytest.raises(InputError, match="RGB image .* in colour.*Split RGB"):
        next(predict(model, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))


@pytest.mark.parametrize("how,why", [("equal", "its three colour channels are equal"),
                                     ("blue", "only its blue channel holds signal")])
def test_grey_image_saved_as_rgb_is_read_as_grey(tmp_path, rng, how, why):
    model = make_model(tmp_path)
    grey = rng.integers(0, 255, (64, 80), dtype=np.uint8)
    zero = np.zeros_like(grey)
    rgb = np.stack([grey] * 3 if how == "equal" else [zero, zero, grey], -1)
    rgba = np.concatenate([rgb, np.full_like(grey, 255)[..., None]], -1)
    expected = run(predict(model, grey))
    assert not expected.notes
    for image in (rgb, rgba):
        result = run(predict(model, image))
        assert result.notes == [f"read as grey ({why})"]
        np.testing.assert_array_equal(result.probabilities, expected.probabilities)
        np.testing.assert_array_equal(result.labels, expected.labels)
    stack = run(predict(model, np.stack([rgb, rgb[::-1]])))
    assert stack.labels.shape == (2, 64, 80)
    np.testing.assert_array_equal(stack.probabilities[0], expected.probabilities)


class _OutOfMemoryAbove(torch.nn.Module):
    """A network that runs out of device memory for batches of more than ``limit`` tiles."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit, self.config = net, limit, net.config

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def _tiled_case(rng, shape):
    """A tiny network, an image of ``shape``, its plan of 40 px tiles, and the
    probabilities infer_plane gives on the CPU without trouble."""
    from napari_unet.predict import infer_plane
    from napari_unet.tiling import plan_tiles

    torch.manual_seed(0)
    net = UNet(tiny_config()).eval()
    image = rng.normal(size=(*shape, 1)).astype(np.float32)
    plan = plan_tiles(shape, net.config, 40)
    expected = np.zeros((2, *shape), np.float32)
    list(infer_plane(net, image, plan, expected, batch_size=8, device=torch.device("cpu")))
    return net, image, plan, expected


@pytest.mark.parametrize("resident", [False, True], ids=["streamed", "resident"])
def test_out_of_memory_halves_the_batch_and_says_so(resident, rng):
    from napari_unet.predict import infer_plane

    net, image, plan, expected = _tiled_case(rng, (150, 170))
    cpu = torch.device("cpu")
    out, notes = np.zeros_like(expected), []
    done = list(infer_plane(_OutOfMemoryAbove(net, 2), image, plan, out, batch_size=8,
                            device=cpu, notes=notes, resident=resident))
    assert done[-1] == len(plan)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert notes == ["out of memory on CPU: continuing with batches of 4 tile(s)",
                     "out of memory on CPU: continuing with batches of 2 tile(s)"]
    with pytest.raises(InputError, match="ran out of memory for a single tile"):
        list(infer_plane(_OutOfMemoryAbove(net, 0), image, plan, out, batch_size=2,
                         device=cpu, resident=resident))


def test_no_memory_for_the_whole_image_streams_its_tiles_instead(monkeypatch, rng):
    import napari_unet.predict as predict_module
    import napari_unet.resident

    def no_memory(array, device):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    net, image, plan, expected = _tiled_case(rng, (90, 70))
    monkeypatch.setattr(napari_unet.resident, "upload", no_memory)
    out, notes = np.zeros_like(expected), []
    list(predict_module.infer_plane(net, image, plan, out, batch_size=4,
                                    device=torch.device("cpu"), notes=notes, resident=True))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert notes == ["out of memory on CPU for the whole image: streaming its tiles instead"]


def test_a_missing_gpu_falls_back_to_the_cpu_with_a_warning(monkeypatch):
    from napari_unet.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="using the CPU instead"):
        assert resolve_device("cuda").type == "cpu"
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")


def test_precision_policy(monkeypatch):
    import torch

    from napari_unet import device as dev

    cpu = torch.device("cpu")
    assert dev.resolve_precision(cpu, "fp32") == "fp32"
    assert dev.resolve_precision(cpu, "bf16") == "bf16"
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    assert dev.resolve_precision(cpu, "auto") == "bf16"
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)
    assert dev.resolve_precision(cpu, "auto") == "fp32"
    assert dev.resolve_precision(torch.device("mps"), "auto") == "fp32"


def test_bf16_prediction_agrees_with_fp32(tmp_path, rng):
    from scipy import ndimage as ndi

    from napari_unet.metrics import dice

    model = make_model(tmp_path)
    image = ndi.gaussian_filter(rng.normal(size=(120, 100)), 2).astype(np.float32)
    full = run(predict(model, image, PredictConfig(tile_size=64, precision="fp32")))
    half = run(predict(model, image, PredictConfig(tile_size=64, precision="bf16")))
    np.testing.assert_allclose(half.probabilities, full.probabilities, atol=0.05)
    assert dice(full.probabilities[1] > 0.5, half.probabilities[1] > 0.5) > 0.97


class _PointAtBrightest(torch.nn.Module):
    """An 'offsets' network that commutes with rotations and flips by construction: two
    class logits from the intensity, and from every pixel the vector to the brightest one."""

    def __init__(self):
        super().__init__()
        self.config = tiny_config(padding="same").replace(offsets=True)

    def forward(self, x):
        from napari_unet.targets import OFFSET_SCALE

        n, _, h, w = x.shape
        flat = x[:, 0].reshape(n, -1).argmax(1)
        cy, cx = (flat // w).float(), (flat % w).float()
        ys = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(n, h, w)
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, w).expand(n, h, w)
        vec = torch.stack([cy.view(n, 1, 1) - ys, cx.view(n, 1, 1) - xs], 1)
        return torch.cat([-x[:, :1], x[:, :1], vec / OFFSET_SCALE], 1)


def test_test_time_augmentation_turns_offset_vectors_back():
    """Averaged over the 8 rotations and flips, vectors of an equivariant network equal
    those of one pass: each turned or flipped prediction was turned back, positions and
    vector components alike (a missed sign would point them elsewhere)."""
    from napari_unet.predict import forward

    x = torch.rand(2, 1, 16, 16)
    x[0, 0, 3, 11] = 5.0
    x[1, 0, 12, 2] = 5.0
    net = _PointAtBrightest()
    one, avg = forward(net, x), forward(net, x, tta=True)
    assert one.shape == (2, 4, 16, 16)
    assert float(one[:, 2:].abs().max()) > 10  # vectors in pixels
    torch.testing.assert_close(avg, one, atol=1e-4, rtol=1e-5)


def test_automatic_tile_size_fills_half_the_free_gpu_memory_within_32_bit_indexing(
        monkeypatch):
    from napari_unet.config import ModelConfig, PredictConfig
    from napari_unet.device import HOST_TILE, auto_tile_size, tile_bytes

    paper = ModelConfig(padding="same", norm="batch")  # 64 base channels
    assert auto_tile_size(paper, torch.device("cpu"), "bf16") == HOST_TILE == 1024
    gpu = torch.device("cuda")
    free = 4 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    side = auto_tile_size(paper, gpu, "bf16")
    assert tile_bytes(paper, (side, side), "bf16") <= free / 2
    assert tile_bytes(paper, (side + 64, side + 64), "bf16") > free / 2
    assert 1000 < side < 1500
    free = 140 * 2**30  # an H200: the widest map, 128 channels, must stay under 2**31
    side = auto_tile_size(paper, gpu, "bf16")
    input_side = paper.valid_input_size(side)
    assert 2 * 64 * input_side**2 < 2**31 and input_side > 4000
    assert PredictConfig().tile_size == 0
    with pytest.raises(InputError, match="tile_size must be a number of pixels"):
        PredictConfig(tile_size=-1)


def _model_with_cell_size(diameter=10.0, target="two_class"):
    torch.manual_seed(0)
    net = UNet(tiny_config(padding="same", norm="none", offsets=target == "offsets"))
    return Checkpoint(net.config, net.state_dict(), task={
        "mode": "instances", "target": target, "n_classes": 2, "threshold": 0.5,
        "object_diameter": diameter})


@pytest.mark.parametrize("diameter", [None, 20.0])
@pytest.mark.parametrize("planes", [0, 3])
@pytest.mark.parametrize("target", ["two_class", "offsets"])
def test_relabelling_gives_what_predicting_with_those_settings_gives(rng, diameter, planes,
                                                                     target):
    """Trying other separation settings on the probabilities already computed gives the
    labels a new prediction with them would give, for images resized to the model's cell
    size (whose scale centre voting uses) and for stacks with linked planes too."""
    from napari_unet.predict import relabel

    ckpt = _model_with_cell_size(target=target)
    shape = (planes, 80, 72) if planes else (80, 72)
    image = rng.normal(size=shape).astype(np.float32)
    first_cfg = PredictConfig(device="cpu", precision="fp32", tile_size=64,
                              diameter=diameter)
    first = run(predict(ckpt, image, first_cfg))
    fg = first.probabilities[..., 1, :, :]
    assert first.factor == (0.5 if diameter else 1.0)
    for change in ({"threshold": float(np.quantile(fg, 0.4))},
                   {"threshold": float(np.quantile(fg, 0.6)), "min_size": 5,
                    "instance_method": "components"},
                   {"threshold": float(np.quantile(fg, 0.5)), "cut_necks": False,
                    "link_planes": 0.25 if planes else 0.0}):
        cfg = first_cfg.replace(**change)
        events = []
        again = run(relabel(ckpt, first, cfg), events.append)
        fresh = run(predict(ckpt, image, cfg))
        assert again.labels.max() > 1  # objects to compare
        np.testing.assert_array_equal(again.labels, fresh.labels)
        assert again.labels.dtype == fresh.labels.dtype
        assert again.probabilities is first.probabilities
        assert events[-1].done == events[-1].total


def test_relabelling_needs_probabilities_in_memory(rng):
    from napari_unet.predict import PredictResult, relabel

    gone = PredictResult(labels=None, probabilities=object(), device="CPU", seconds=0.0,
                         mode="instances", target="two_class")
    with pytest.raises(InputError, match="kept on disk and are gone; predict again"):
        run(relabel(_model_with_cell_size(), gone, PredictConfig()))
