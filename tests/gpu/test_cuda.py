"""The GPU code paths, on a real CUDA GPU: not part of the default test run (CI has no GPU).

Run them where a GPU is: ``python -m pytest -m gpu tests/gpu`` (``benchmarks/gpu_session.sh``
does, on a lent GPU machine). ``NAPARI_UNET_TEST_DEVICE=cpu`` runs the same checks on the
CPU, to try the tests themselves without a GPU.
"""

import os

import numpy as np
import pytest
import torch
from conftest import tiny_config
from test_tiling import whole_image_reference

from napari_unet.checkpoint import load_checkpoint
from napari_unet.config import ModelConfig, PredictConfig, TrainConfig
from napari_unet.data import normalize
from napari_unet.device import auto_batch_size, autocast, describe_device, resolve_device
from napari_unet.metrics import dice
from napari_unet.model import UNet
from napari_unet.predict import infer_plane, predict
from napari_unet.progress import run
from napari_unet.synthetic import touching_cells
from napari_unet.tiling import plan_tiles
from napari_unet.train import train

pytestmark = pytest.mark.gpu

DEVICE = os.environ.get("NAPARI_UNET_TEST_DEVICE", "cuda")


@pytest.fixture(scope="module")
def device():
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail("these tests need a CUDA GPU (NAPARI_UNET_TEST_DEVICE=cpu runs them on "
                    "the CPU)", pytrace=False)
    return resolve_device(DEVICE)


def test_auto_picks_the_gpu_and_says_which(device):
    if device.type == "cuda":
        assert resolve_device("auto").type == "cuda"
        assert describe_device(device) == f"CUDA: {torch.cuda.get_device_name(device)}"
        assert torch.backends.cudnn.benchmark  # fixed tile and patch sizes: autotuned
    else:
        assert describe_device(device).startswith("CPU (")


@pytest.mark.parametrize("resident", [False, True], ids=["streamed", "resident"])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_tiles_add_up_to_the_whole_image_in_fp32(device, padding, resident, rng):
    """The overlap-tile guarantee on the device, both ways of feeding it (tiles streamed
    from the host, or cut on the device from the image sent once): fp32 there is IEEE fp32
    (no TF32)."""
    torch.manual_seed(0)
    cfg = ModelConfig(depth=4, base_channels=16, norm="batch", dropout=0.0, padding=padding,
                      in_channels=1, n_classes=2)
    net = UNet(cfg).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    image = normalize(rng.normal(size=(301, 413, 1)).astype(np.float32))
    plan = plan_tiles(image.shape[:2], cfg, 128)
    assert len(plan) > 4
    cpu_whole = whole_image_reference(net, image)
    net = net.to(device)
    out = np.full((2, *image.shape[:2]), np.nan, np.float32)
    for _ in infer_plane(net, image, plan, out, batch_size=3, device=device, precision="fp32",
                         resident=resident):
        pass
    with autocast(device, "fp32"):
        whole = whole_image_reference(net, image, device=device)
    np.testing.assert_allclose(out, whole, atol=1e-4)
    np.testing.assert_allclose(out, cpu_whole, atol=1e-4)


def test_bf16_prediction_agrees_with_fp32(device, tmp_path):
    image, _ = touching_cells((300, 260), n_cells=25, radius=10, seed=3)
    torch.manual_seed(0)
    model = UNet(tiny_config(padding="same", norm="batch", base_channels=8))
    from napari_unet.checkpoint import Checkpoint

    ck = Checkpoint(model.config, model.state_dict(),
                    task={"mode": "instances", "target": "two_class"})
    full = run(predict(ck, image, PredictConfig(device=DEVICE, tile_size=128,
                                                precision="fp32")))
    half = run(predict(ck, image, PredictConfig(device=DEVICE, tile_size=128,
                                                precision="bf16")))
    np.testing.assert_allclose(half.probabilities, full.probabilities, atol=0.05)
    assert dice(full.probabilities[1] > 0.5, half.probabilities[1] > 0.5) > 0.97


def test_training_on_the_device_learns_and_saves_a_model_the_cpu_opens(device, tmp_path):
    pairs = [touching_cells((128, 128), n_cells=14, radius=9, seed=s) for s in range(4)]
    cfg = TrainConfig(epochs=6, steps_per_epoch=10, batch_size=4, patch_size=64,
                      val_fraction=0.25, learning_rate=3e-3, device=DEVICE)
    events = []
    result = run(train([p[0] for p in pairs], [p[1] for p in pairs], cfg,
                       model_config=tiny_config(norm="batch", base_channels=8, padding="same"),
                       out=tmp_path / "m.safetensors"), events.append)
    losses = [e.loss for e in events if e.kind == "epoch"]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])
    record = load_checkpoint(result.path).metadata()["training"]
    assert record["device"] == describe_device(device)
    if device.type == "cuda":  # bf16 autocast, patches from worker processes
        assert record["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    labels = run(predict(result.path, pairs[0][0], PredictConfig(device="cpu"))).labels
    assert labels.shape == (128, 128)


def test_the_batch_size_follows_the_free_gpu_memory(device):
    paper = ModelConfig()  # 64 base channels
    n = auto_batch_size(paper, (572, 572), device)
    if device.type == "cuda":
        assert n >= 8  # an H100's free memory holds far more than the CPU's 4 tiles
    else:
        assert 1 <= n <= 4


def test_conv_relu_fused_by_cudnn_agrees_with_the_plain_network(device):
    """bf16 inference: cuDNN's fused convolution + bias + ReLU is used for (most) layers of
    the network, and its output agrees with the unfused network's."""
    from napari_unet.checkpoint import Checkpoint
    from napari_unet.model import ConvReLU, fused_layers

    torch.manual_seed(0)
    net = UNet(ModelConfig(depth=4, base_channels=16, norm="batch", dropout=0.0,
                           padding="same"))
    ck = Checkpoint(net.config, net.state_dict(),
                    task={"mode": "instances", "target": "two_class"})
    fused, plain = ck.build(device), ck.build(device)
    for m in plain.modules():
        if isinstance(m, ConvReLU):
            m.fused = False
    x = torch.randn(2, 1, 320, 256, device=device).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, "bf16"):
        a, b = fused(x).float(), plain(x).float()
    counts = fused_layers(fused)
    print("fused layers:", counts)
    if device.type == "cuda":
        assert counts["fused"] >= 9, counts  # all but perhaps the one-channel first layer
    else:
        assert counts["fused"] == 0
    assert float((a - b).abs().max()) <= 0.05 * float(b.abs().max()) + 1e-2
    assert dice((a.softmax(1)[:, 1] > 0.5).cpu().numpy(),
                (b.softmax(1)[:, 1] > 0.5).cpu().numpy()) > 0.99


def test_probabilities_come_back_into_page_locked_memory(device):
    image, _ = touching_cells((700, 900), n_cells=60, radius=10, seed=5)
    torch.manual_seed(0)
    model = UNet(tiny_config(padding="same", norm="batch", base_channels=8))
    from napari_unet.checkpoint import Checkpoint

    ck = Checkpoint(model.config, model.state_dict(),
                    task={"mode": "instances", "target": "two_class"})
    res = run(predict(ck, image, PredictConfig(device=DEVICE, precision="fp32"),
                      labels=False))
    ref = run(predict(ck, image, PredictConfig(device="cpu", precision="fp32", tile_size=256),
                      labels=False))
    pinned = torch.from_numpy(res.probabilities).is_pinned()
    assert pinned == (device.type == "cuda")
    np.testing.assert_allclose(res.probabilities, ref.probabilities, atol=1e-4)
