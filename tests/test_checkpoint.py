import json
import pickle
import struct

import numpy as np
import pytest
import torch
from conftest import tiny_config

from napari_unet.checkpoint import Checkpoint, load_checkpoint, read_header, save_checkpoint
from napari_unet.errors import ModelFileError
from napari_unet.model import UNet


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    net = UNet(tiny_config(norm="batch", in_channels=3, n_classes=3))
    ck = Checkpoint(config=net.config, state_dict=net.state_dict(),
                    task={"mode": "instances", "target": "three_class", "n_classes": 3},
                    normalization={"kind": "percentile", "low": 1.0, "high": 99.8},
                    training={"steps": 5})
    return save_checkpoint(tmp_path / "m.safetensors", ck), net


def test_round_trip_gives_identical_outputs(model_file):
    path, net = model_file
    ck = load_checkpoint(path)
    assert ck.config == net.config and ck.target == "three_class"
    assert ck.training == {"steps": 5}
    x = torch.randn(2, 3, 60, 60)
    with torch.no_grad():
        np.testing.assert_array_equal(ck.build(fuse=False)(x).numpy(), net.eval()(x).numpy())


def test_batch_norms_folded_for_inference_give_the_same_outputs(model_file):
    path, net = model_file
    for m in net.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    ck = Checkpoint(config=net.config, state_dict=net.state_dict())
    fused = ck.build()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 60, 60)
    with torch.no_grad():
        np.testing.assert_allclose(fused(x).numpy(), net.eval()(x).numpy(), atol=1e-5)


def test_save_replaces_atomically_and_leaves_no_temporary(model_file):
    path, net = model_file
    ck = load_checkpoint(path)
    save_checkpoint(path, ck)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]


def test_missing_truncated_and_foreign_files_are_refused(model_file, tmp_path):
    path, _ = model_file
    with pytest.raises(ModelFileError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_checkpoint(cut)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelFileError, match="not a napari-unet model"):
        load_checkpoint(foreign)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, this is not a model")
    with pytest.raises(ModelFileError):
        load_checkpoint(text)


def test_a_header_claiming_huge_tensors_is_refused_before_allocating(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 4 * 10**10]},
              "__metadata__": {"napari_unet": json.dumps({"format": "napari-unet-model",
                                                           "version": 1})}}
    raw = json.dumps(header).encode()
    bad = tmp_path / "huge.safetensors"
    bad.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
    with pytest.raises(ModelFileError, match="does not fit the file"):
        read_header(bad)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_a_malicious_pickle_is_refused_and_runs_no_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"state_dict": _Evil()}, protocol=2))
    with pytest.raises(ModelFileError, match="pickle"):
        load_checkpoint(evil)
    torch.save({"x": _Evil()}, tmp_path / "model2.pt")  # zip-based torch file
    with pytest.raises(ModelFileError, match="pickle"):
        load_checkpoint(tmp_path / "model2.pt")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_a_header_length_starting_with_0x80_is_not_mistaken_for_a_pickle(tmp_path):
    raw = json.dumps({"__metadata__": {"other": "tool"}}).encode()
    raw += b" " * (0x280 - len(raw))  # length 640: its first byte is 0x80, like a pickle's
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    assert path.read_bytes()[:1] == b"\x80"
    with pytest.raises(ModelFileError, match="no napari-unet metadata"):
        read_header(path)


@pytest.mark.parametrize("model, task, match", [
    ({"offsets": "yes"}, {"target": "offsets"}, "true or false"),
    ({"offsets": True, "distance": True}, {"target": "offsets"}, "not both"),
    ({}, {"target": "offsets"}, "no offsets output channels"),
    ({"distance": True}, {"target": "two_class"}, "has distance output channels"),
    ({}, {"object_diameter": -3}, "invalid 'object_diameter'"),
    ({}, {"object_diameter": "20 px"}, "invalid 'object_diameter'"),
])
def test_a_target_that_does_not_match_the_network_is_refused(model_file, tmp_path, model,
                                                              task, match):
    """The header is edited by hand: what the instances step would read from the output
    channels must exist, or the file is refused with a sentence."""
    from safetensors.torch import load_file, save_file

    path, _ = model_file
    _, meta = read_header(path)
    meta["model"].update(model)
    meta["task"].update(task)
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={"napari_unet": json.dumps(meta)})
    with pytest.raises(ModelFileError, match=match):
        load_checkpoint(bad)


def test_float16_weights_build_a_float32_network_that_does_not_share_them(model_file,
                                                                          tmp_path):
    """Files stored in float16 (the shipped model's size limit) give a float32 network;
    the built network owns its weights (the checkpoint's stay as they were)."""
    path, net = model_file
    ck = load_checkpoint(path)
    half = Checkpoint(ck.config, {k: v.half() if v.is_floating_point() else v
                                  for k, v in ck.state_dict.items()}, task=ck.task)
    half = load_checkpoint(save_checkpoint(tmp_path / "half.safetensors", half))
    assert {v.dtype for v in half.state_dict.values()} == {torch.float16, torch.int64}
    built = half.build(fuse=False)
    assert {p.dtype for p in built.parameters()} == {torch.float32}
    x = torch.randn(1, 3, 60, 60)
    with torch.no_grad():
        torch.testing.assert_close(built(x), net.eval()(x), atol=2e-2, rtol=2e-2)
        for p in ck.build(fuse=False).parameters():  # a network built on the CPU ...
            p.zero_()
    assert all(v.abs().sum() > 0 for k, v in ck.state_dict.items() if "weight" in k)
    rebuilt = ck.build(fuse=False)
    with torch.no_grad():
        np.testing.assert_array_equal(rebuilt(x).numpy(), net.eval()(x).numpy())


def test_the_size_threshold_and_classes_a_file_records_are_read_from_its_header(tmp_path):
    from napari_unet.checkpoint import recorded_classes, recorded_diameter, recorded_threshold

    net = UNet(tiny_config())
    task = {"mode": "instances", "target": "two_class", "threshold": 0.85,
            "object_diameter": 17.5}
    path = save_checkpoint(tmp_path / "m.safetensors", Checkpoint(net.config,
                                                                  net.state_dict(), task))
    assert recorded_threshold(path) == 0.85 and recorded_diameter(path) == 17.5
    bare = save_checkpoint(tmp_path / "b.safetensors", Checkpoint(
        net.config, net.state_dict(), {"mode": "instances", "target": "two_class"}))
    assert recorded_threshold(bare) is None and recorded_diameter(bare) is None
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    assert recorded_threshold(tmp_path / "junk.safetensors") is None
    assert recorded_classes(path) is None
    assert recorded_classes(tmp_path / "junk.safetensors") is None
    classes = UNet(tiny_config(n_classes=3))
    semantic = save_checkpoint(tmp_path / "s.safetensors", Checkpoint(
        classes.config, classes.state_dict(), {"mode": "semantic", "n_classes": 3}))
    assert recorded_classes(semantic) == 3
