"""Training with torchrun and DistributedDataParallel: two CPU processes (gloo)."""

import subprocess
import sys

import pytest

from napari_unet.checkpoint import load_checkpoint
from napari_unet.cli import main
from napari_unet.predict import predict
from napari_unet.progress import run
from napari_unet.synthetic import touching_cells


def _torchrun(tmp_path, *extra, timeout=240):
    main(["sample", str(tmp_path / "s"), "--count", "4"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "napari_unet.cli", "-q", "train", str(tmp_path / "s" / "images"),
           str(tmp_path / "s" / "labels"), "--out", str(tmp_path / "ddp.safetensors"),
           "--base-channels", "8", "--depth", "2", "--patch-size", "64", "--device", "cpu",
           *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("duration", [["--epochs", "2", "--steps-per-epoch", "4"],
                                      ["--time-budget", "6", "--steps-per-epoch", "3"]])
def test_torchrun_two_processes_write_one_loadable_model(tmp_path, duration):
    done = _torchrun(tmp_path, *duration)
    assert done.returncode == 0, done.stderr[-3000:]
    # rank 0 reports, rank 1 stays quiet
    assert done.stdout.count("training on CPU") == done.stdout.count("best validation") == 1
    ckpt = load_checkpoint(tmp_path / "ddp.safetensors")
    assert ckpt.metadata()["training"]["processes"] == 2
    image, _ = touching_cells(seed=9)
    result = run(predict(ckpt, image))
    assert result.labels.shape == image.shape
    assert not list(tmp_path.glob(".*.tmp"))
