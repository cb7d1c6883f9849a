"""A process killed (SIGKILL) in the middle of saving a model leaves the previous file intact.

The child saves with the real ``save_checkpoint``; only its file writes are slowed down and
announced (chunk by chunk), so that the parent's SIGKILL surely lands in the middle of a
write rather than between two saves.
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from napari_unet.checkpoint import load_checkpoint

CHILD = textwrap.dedent("""
    import builtins, sys, time
    import torch
    import napari_unet.checkpoint as checkpoint
    from napari_unet.checkpoint import Checkpoint, save_checkpoint
    from napari_unet.config import ModelConfig
    from napari_unet.model import UNet

    class SlowFile:
        def __init__(self, fh):
            self.fh = fh
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.fh.close()
        def write(self, data):
            view = memoryview(data)
            for k, start in enumerate(range(0, len(view), 1 << 20)):
                self.fh.write(view[start:start + (1 << 20)])
                self.fh.flush()
                print("chunk", k, flush=True)
                time.sleep(0.01)
        def __getattr__(self, name):
            return getattr(self.fh, name)

    checkpoint.open = lambda *a, **k: SlowFile(builtins.open(*a, **k))
    path = sys.argv[1]
    net = UNet(ModelConfig(base_channels=16, depth=4, padding="same"))  # ~7.8 MB
    state = net.state_dict()
    version = 0
    while True:
        version += 1
        for v in state.values():
            v.fill_(version)
        save_checkpoint(path, Checkpoint(config=net.config, state_dict=state,
                                         training={"version": version}))
        print("saved", version, flush=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("chunk", [0, 3])
def test_sigkill_during_save_leaves_the_previous_model_loadable(tmp_path, chunk):
    path = tmp_path / "model.safetensors"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             text=True)
    saved = 0
    try:
        while True:
            line = child.stdout.readline().split()
            assert line, "the child stopped before it was killed"
            if line[0] == "saved":
                saved = int(line[1])
            elif saved >= 2 and int(line[1]) == chunk:  # inside the third save's write
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    ck = load_checkpoint(path)
    assert ck.training["version"] == saved == 2
    for name, tensor in ck.state_dict.items():  # every tensor from that one save
        assert (tensor == saved).all(), name
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.safetensors"]
    # the interrupted save's temporary file may remain; never a damaged model
    assert all(name.startswith(".model.safetensors.") for name in leftovers), leftovers
