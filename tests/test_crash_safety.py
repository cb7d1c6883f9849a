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
from conftest import discs, tiny_config

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


# ---- a disk that fills up, a folder that cannot be made: a sentence, work kept -----------

def _no_space(*args, **kwargs):
    raise OSError(28, "No space left on device")


def _tiny_training(out, epochs=3):
    from napari_unet.config import TrainConfig
    from napari_unet.synthetic import touching_cells
    from napari_unet.train import train

    image, labels = touching_cells((96, 96), n_cells=10, radius=8, seed=1)
    return train([image, image], [labels, labels],
                 TrainConfig(epochs=epochs, steps_per_epoch=2, patch_size=64, seed=0),
                 model_config=tiny_config(padding="same"), out=out)


def test_a_full_disk_keeps_the_old_model_and_says_where_and_why(tmp_path, monkeypatch):
    import napari_unet.checkpoint as checkpoint
    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.errors import OutputError
    from napari_unet.progress import run

    path = tmp_path / "m.safetensors"
    run(_tiny_training(path, epochs=1))
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint.os, "fsync", _no_space)
    with pytest.raises(OutputError, match=f"could not write {path}: no space left on device"):
        save_checkpoint(path, load_checkpoint(path))
    assert path.read_bytes() == before
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_training_goes_on_when_a_save_fails_and_saves_later(tmp_path, monkeypatch):
    """The disk full at one epoch's save: a warning, and the training saves its best
    model at a later one (or at its end); full to the end: a sentence, not a traceback."""
    import napari_unet.train as train_module
    from napari_unet.errors import OutputError

    real = train_module.save_checkpoint
    calls = []

    def full_once(path, ckpt):
        calls.append(path)
        if len(calls) == 1:
            raise OutputError(f"could not write {path}: no space left on device.")
        return real(path, ckpt)

    monkeypatch.setattr(train_module, "save_checkpoint", full_once)
    path = tmp_path / "m.safetensors"
    gen = _tiny_training(path)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    warned = [e.message for e in events if e.kind == "warning"]
    assert any(m.startswith("The best model so far was not saved: could not write")
               for m in warned), warned
    assert len(calls) >= 2 and result.path == path
    assert load_checkpoint(path).training["steps"] == result.checkpoint.training["steps"]

    monkeypatch.setattr(train_module, "save_checkpoint",
                        lambda path, ckpt: (_ for _ in ()).throw(
                            OutputError(f"could not write {path}: no space left on device.")))
    with pytest.raises(OutputError, match="The trained model could not be saved."):
        for _ in _tiny_training(tmp_path / "n.safetensors"):
            pass


def test_a_model_file_that_cannot_be_written_is_refused_before_training(tmp_path):
    from napari_unet.errors import OutputError

    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputError, match="could not write .*a_file/m.safetensors") as err:
        next(_tiny_training(tmp_path / "a_file" / "m.safetensors"))
    # the file in the way named; no space asked for where the disk is not full
    assert str(err.value).endswith(f"{tmp_path / 'a_file'} is a file, not a folder; choose "
                                   "another place.")


def test_cli_names_the_file_standing_where_a_folder_is_needed(tmp_path, capsys):
    """'img.tif: file exists.' (export, evaluate), '...: not a directory; free some space
    there' (predict)."""
    import tifffile

    from napari_unet import cli

    tifffile.imwrite(tmp_path / "a.tif", discs((64, 64), [(32, 32)], 10) * 200)
    blocked = tmp_path / "a.tif" / "sub"
    for args in (["export", "nuclei", "--out", str(blocked / "p.zip")],
                 ["predict", "nuclei", str(tmp_path / "a.tif"), "--out", str(blocked)]):
        capsys.readouterr()
        assert cli.main(["-q", *args]) in (1, 2)
        err = capsys.readouterr().err
        assert f"{tmp_path / 'a.tif'} is a file, not a folder; choose another place." in err, err
        assert "free some space" not in err


def test_cli_says_a_full_disk_in_one_line(tmp_path, capsys, monkeypatch):
    import tifffile

    from napari_unet import cli

    image = tmp_path / "a.tif"
    tifffile.imwrite(image, discs((64, 64), [(32, 32)], 10) * 200)
    monkeypatch.setattr(tifffile, "imwrite", _no_space)
    assert cli.main(["-q", "predict", "nuclei", str(image), "--out",
                     str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"napari-unet: error: could not write {tmp_path / 'out' / 'a.tif'}: no "
                   "space left on device; free some space there or choose another place."]
    assert not list((tmp_path / "out").iterdir())  # no half-written file
    monkeypatch.setattr(cli, "cmd_predict", lambda args: _no_space())  # any other OSError
    assert cli.main(["-q", "predict", "nuclei", str(image), "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "napari-unet: error: no space left on device.\n"
