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
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)
    assert net.config.output_size(572) == 388
    assert net.config.context() == 92


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
