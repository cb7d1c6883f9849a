import pytest
import torch
from conftest import tiny_config

from napari_unet.config import ModelConfig
from napari_unet.model import TwoConv, UNet


def test_paper_configuration_parameter_count_and_tile_shape():
    net = UNet()  # defaults are the paper's network
    assert net.config == ModelConfig(in_channels=1, n_classes=2, depth=4, base_channels=64,
                                     padding="valid")
    assert sum(p.numel() for p in net.parameters()) == 31_030_658
    assert net.config.parameter_count() == 31_030_658
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert net.config.output_size(572) == 388
    assert net.config.context() == 92


@pytest.mark.parametrize("options", [
    {"norm": "batch", "base_channels": 16, "in_channels": 3, "n_classes": 4},
    {"norm": "group", "depth": 2, "base_channels": 4, "offsets": True},
    {"depth": 5, "base_channels": 8, "distance": True, "padding": "same"},
])
def test_parameter_count_is_the_networks(options):
    cfg = ModelConfig(**options)
    assert cfg.parameter_count() == sum(p.numel() for p in UNet(cfg).parameters())


def test_a_network_too_large_to_build_is_refused_before_it_fills_memory():
    """--depth 9 was killed by the kernel for want of memory, 8 billion parameters in."""
    from napari_unet.errors import InputError

    assert ModelConfig(depth=6, base_channels=64).parameter_count() < 500e6
    with pytest.raises(InputError, match="depth 9 has 7,964 million parameters, more than "
                                         "the 500 million"):
        ModelConfig(depth=9, base_channels=32)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("norm", ["none", "batch", "group"])
def test_size_arithmetic_matches_the_network(padding, depth, norm):
    cfg = tiny_config(padding=padding, depth=depth, norm=norm, in_channels=3, n_classes=4)
    net = UNet(cfg).eval()
    for request in (1, 37, 64, 101):
        size = cfg.valid_input_size(request)
        assert size >= request
        with torch.no_grad():
            out = net(torch.zeros(1, 3, size, size + 2**depth))
        assert out.shape[:2] == (1, 4)
        assert out.shape[-2] == cfg.output_size(size)
        assert out.shape[-1] == cfg.output_size(size + 2**depth)
        if padding == "same":
            assert out.shape[-2] == size


def test_refused_sizes_raise():
    cfg = tiny_config(depth=2)
    with pytest.raises(ValueError):
        cfg.output_size(cfg.valid_input_size(30) + 1)
    with pytest.raises(ValueError):
        cfg.output_size(8)


@pytest.mark.parametrize("depth", [2, 3])
def test_same_padding_footprint_within_context(depth):
    """The halo used for 'same' tiles covers every output pixel's real footprint."""
    torch.manual_seed(0)
    cfg = tiny_config(padding="same", depth=depth, base_channels=4)
    net = UNet(cfg).eval().double()
    for block in net.modules():  # no dead units: every input in the footprint gets gradient
        if isinstance(block, TwoConv):
            block[2] = block[5] = torch.nn.LeakyReLU(0.1)
    worst = 0
    for p in range(60, 60 + 2**depth):
        x = torch.randn(1, 1, 128, 128, dtype=torch.double, requires_grad=True)
        net(x)[0, :, p, p].sum().backward()
        rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero()[:, 0]
        worst = max(worst, p - int(rows.min()), int(rows.max()) - p)
    assert worst <= cfg.context()
    assert worst > cfg.replace(padding="valid").context()  # pooling phase adds reach


def test_encoder_and_dropout():
    net = UNet(tiny_config(dropout=0.5))
    assert isinstance(net.dropout, torch.nn.Dropout)
    assert len(net.encoder) == 1 + net.config.depth


def test_bad_config_is_refused():
    from napari_unet.errors import InputError

    with pytest.raises(InputError, match="padding"):
        ModelConfig(padding="reflect")
    with pytest.raises(InputError, match="n_classes"):
        ModelConfig(n_classes=1)


# --- convolution + ReLU fused for inference (cuDNN on a GPU; emulated here) ---------------

def _built(norm="batch"):
    import copy

    from napari_unet.checkpoint import Checkpoint

    torch.manual_seed(0)
    net = UNet(tiny_config(padding="same", norm=norm, base_channels=8)).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    ck = Checkpoint(net.config, copy.deepcopy(net.state_dict()),
                    task={"mode": "instances", "target": "two_class"})
    return ck, net


@pytest.fixture
def emulated_fusion(monkeypatch):
    """The fused way switched on for CPU tensors (as under bf16 autocast on a GPU), with
    a stand-in for cuDNN's fused call; returns the list of calls it saw."""
    import torch.nn.functional as F

    from napari_unet import model

    calls = []

    def reference(x, w, b, stride, padding, dilation, groups):
        calls.append(tuple(w.shape))
        return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups))

    monkeypatch.setattr(model, "_CHECKED", {})
    monkeypatch.setattr(model, "_fusable", lambda x: None if torch.is_grad_enabled()
                        else torch.float32)
    monkeypatch.setattr(model, "fused_conv_relu", reference)
    return calls


def test_built_network_fuses_conv_and_relu_without_changing_weights_or_outputs():
    import copy

    from napari_unet.model import ConvReLU, fuse_batch_norm, fused_layers

    ck, net = _built()
    built = ck.build()
    folded = fuse_batch_norm(copy.deepcopy(net))
    assert set(built.state_dict()) == set(folded.state_dict())  # the same parameters
    assert fused_layers(built) == {"fused": 0, "unfused": 0, "untried": 10}
    assert not any(isinstance(m, torch.nn.ReLU) for m in built.modules() if
                   not isinstance(m, ConvReLU))
    x = torch.randn(2, 1, 64, 48)
    with torch.inference_mode():  # on the CPU the plain way: the same numbers
        torch.testing.assert_close(built(x), net(x), atol=1e-5, rtol=1e-4)
    assert fused_layers(built)["untried"] == 10


def test_group_norm_layers_are_not_fused():
    from napari_unet.model import fuse_conv_relu

    _, net = _built(norm="group")
    assert fuse_conv_relu(net) == (0, 10)


def test_fused_way_is_checked_once_per_shape_and_then_used(emulated_fusion):
    from napari_unet.model import ConvReLU, fused_layers

    ck, net = _built()
    x = torch.randn(2, 1, 96, 80)
    with torch.inference_mode():
        want = net(x)
        first = ck.build()
        torch.testing.assert_close(first(x), want, atol=1e-5, rtol=1e-4)
        assert fused_layers(first) == {"fused": 10, "unfused": 0, "untried": 0}
        checks = len(emulated_fusion)  # one check per layer shape, then the real calls
        shapes = {tuple(m.weight.shape) for m in first.modules() if isinstance(m, ConvReLU)}
        assert checks == len(shapes) + 10 and len(shapes) < 10
        second = ck.build()
        torch.testing.assert_close(second(x), want, atol=1e-5, rtol=1e-4)
        assert len(emulated_fusion) == checks + 10  # no new checks, all fused
    n = len(emulated_fusion)  # with gradients on (training), never the fused way
    ck.build()(x).sum().backward()
    assert len(emulated_fusion) == n


@pytest.mark.parametrize("failure", ["error", "disagrees"])
def test_a_layer_cudnn_cannot_fuse_stays_plain(emulated_fusion, monkeypatch, failure):
    import torch.nn.functional as F

    from napari_unet import model
    from napari_unet.model import fused_layers

    def broken(x, w, b, stride, padding, dilation, groups):
        if w.shape[1] == 1 or failure == "disagrees":
            if failure == "error":
                raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")
            return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups)) + 0.5
        return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups))

    monkeypatch.setattr(model, "fused_conv_relu", broken)
    ck, net = _built()
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ck.build()(x), net(x), atol=1e-5, rtol=1e-4)
        built = ck.build()
        built(x)
    counts = fused_layers(built)
    if failure == "error":  # only the first layer (one input channel) is refused
        assert counts == {"fused": 9, "unfused": 1, "untried": 0}
    else:
        assert counts == {"fused": 0, "unfused": 10, "untried": 0}


def test_the_check_on_a_crop_does_not_autotune(emulated_fusion, monkeypatch):
    """cuDNN autotuning is for the real tile shapes: the crop of the check is computed
    with it off, and the setting is back afterwards."""
    import torch.nn.functional as F

    from napari_unet import model

    seen = []

    def recording(x, w, b, stride, padding, dilation, groups):
        seen.append((tuple(x.shape[-2:]), torch.backends.cudnn.benchmark))
        return F.relu(F.conv2d(x, w, b, stride, padding, dilation, groups))

    monkeypatch.setattr(model, "fused_conv_relu", recording)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    ck, _ = _built()
    with torch.inference_mode():
        ck.build()(torch.randn(1, 1, 128, 96))
    crops = [b for shape, b in seen if shape == (64, 64)]
    full = [b for shape, b in seen if shape == (128, 96)]
    assert crops and not any(crops)
    assert full and all(full)
    assert torch.backends.cudnn.benchmark
