import numpy as np
import pytest
import zarr
from conftest import discs, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from napari_unet.blockwise import label_components, merge_lut
from napari_unet.checkpoint import Checkpoint, save_checkpoint
from napari_unet.config import PredictConfig
from napari_unet.errors import InputError
from napari_unet.instances import components
from napari_unet.metrics import same_partition
from napari_unet.model import UNet
from napari_unet.predict import predict
from napari_unet.progress import run


@pytest.mark.parametrize("seed,grow,block", [(0, 1, (64, 96)), (1, 2, (50, 50)),
                                             (2, 1, (300, 17)), (3, 0, (31, 64))])
def test_blockwise_components_equal_whole_image(seed, grow, block):
    rng = np.random.default_rng(seed)
    fg = ndi.gaussian_filter(rng.random((300, 517)), 3) > 0.5
    whole = components(fg, grow=grow, min_size=10)
    out = np.zeros(fg.shape, np.uint32)
    n = label_components(lambda sl: fg[sl], out, block=block, grow=grow, min_size=10)
    assert n == whole.max() > 20
    assert same_partition(whole, out)
    assert set(np.unique(out)) == set(range(n + 1))


def test_merge_lut_maps_groups_to_their_smallest_id():
    lut = merge_lut(6, np.array([[5, 2], [2, 4], [1, 6]]))
    assert lut.tolist() == [0, 1, 2, 3, 2, 2, 1]
    assert np.array_equal(lut[lut], lut)


def test_too_many_objects_for_the_output_type_are_refused():
    fg = np.zeros((40, 40), bool)
    fg[::2, ::2] = True  # 400 one-pixel objects
    with pytest.raises(InputError, match="uint32"):
        label_components(lambda sl: fg[sl], np.zeros(fg.shape, np.uint8), min_size=1)


def _model(tmp_path, **kw):
    import torch

    torch.manual_seed(3)
    net = UNet(tiny_config(**kw))
    ck = Checkpoint(net.config, net.state_dict(), task={"mode": "instances",
                                                        "target": "two_class"})
    return save_checkpoint(tmp_path / "m.safetensors", ck)


@pytest.mark.parametrize("min_size", [3, "auto"])
def test_predict_into_a_zarr_labels_file_matches_in_memory(tmp_path, rng, min_size):
    from _models import thresholding_model

    model = thresholding_model()
    model.task["object_diameter"] = 12.0  # 'auto': 22 px here, where 10 px keeps 9 more
    image = ndi.gaussian_filter(rng.normal(size=(300, 260)), 3).astype(np.float32)
    lazy = zarr.create_array(store=tmp_path / "in.zarr", shape=image.shape, chunks=(64, 64),
                             dtype="float32")
    lazy[:] = image
    cfg = PredictConfig(tile_size=64, min_size=min_size, instance_method="components")
    whole = run(predict(model, image, cfg))
    labels = zarr.create_array(store=tmp_path / "out.zarr", shape=image.shape,
                               chunks=(96, 80), dtype="uint32")
    prob = zarr.create_array(store=tmp_path / "p.zarr", shape=(2, *image.shape),
                             chunks=(2, 64, 64), dtype="float32")
    result = run(predict(model, lazy, cfg, out_labels=labels, out_probabilities=prob))
    assert result.labels is labels
    np.testing.assert_allclose(prob[:], whole.probabilities, atol=1e-5)
    assert whole.labels.max() > 5
    assert same_partition(whole.labels, labels[:])


def test_stack_streamed_without_a_probabilities_output(tmp_path, rng):
    model = _model(tmp_path)
    stack = ndi.gaussian_filter(rng.normal(size=(2, 120, 140)), (0, 2, 2)).astype(np.float32)
    whole = run(predict(model, stack, PredictConfig(tile_size=64)))
    labels = zarr.create_array(store=tmp_path / "o.zarr", shape=stack.shape,
                               chunks=(1, 64, 64), dtype="uint32")
    result = run(predict(model, stack, PredictConfig(tile_size=64), out_labels=labels))
    assert result.probabilities is None  # the temporary store is gone
    for k in range(2):
        assert same_partition(whole.labels[k], labels[k])


def test_labels_output_of_the_wrong_shape_is_refused(tmp_path):
    model = _model(tmp_path)
    with pytest.raises(InputError, match="labels output has shape"):
        next(predict(model, np.zeros((40, 40), np.float32),
                     out_labels=np.zeros((40, 41), np.uint32)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(1, 70), w=st.integers(1, 70),
       bh=st.integers(1, 40), bw=st.integers(1, 40), grow=st.integers(0, 2),
       min_size=st.integers(0, 6), density=st.floats(0.2, 0.8))
def test_blockwise_labelling_is_the_whole_image_labelling_for_any_blocks(
        seed, h, w, bh, bw, grow, min_size, density):
    fg = np.random.default_rng(seed).random((h, w)) < density
    whole = components(fg, grow=grow, min_size=min_size)
    out = np.zeros(fg.shape, np.uint32)
    n = label_components(lambda sl: fg[sl], out, block=(bh, bw), grow=grow,
                         min_size=min_size)
    assert n == int(whole.max())
    assert same_partition(whole, out)


@pytest.mark.parametrize("chunks", [(40, 40), (48, 59), (96, 120)])
def test_touching_cells_cut_by_block_faces_come_out_as_in_memory(tmp_path, chunks):
    """Written block by block, objects are made as in memory (the watershed and its neck
    cut), not as connected components, which joined every touching pair: here two cells
    touching across a face (48 runs through their centres, 59 through their neck)."""
    from _models import thresholding_model

    lab = discs((96, 120), [(48, 45), (48, 72), (20, 100)], 15)
    image = np.where(lab > 0, 0.9, 0.1).astype(np.float32)
    model = thresholding_model()
    whole = run(predict(model, image, PredictConfig(tile_size=64))).labels
    assert whole.max() == 3  # the touching pair split at its neck
    out = zarr.create_array(store=tmp_path / "o.zarr", shape=image.shape, chunks=chunks,
                            dtype="uint32")
    run(predict(model, image, PredictConfig(tile_size=64), out_labels=out))
    assert same_partition(whole, out[:])


@pytest.mark.parametrize("block", [(64, 64), (96, 80), (128, 200)])
def test_label_with_halo_gives_the_objects_of_one_pass(block):
    from napari_unet.blockwise import label_with_halo
    from napari_unet.instances import watershed_two_class
    from napari_unet.synthetic import touching_cells

    image, _ = touching_cells((300, 260), n_cells=40, radius=10, seed=2)
    prob = ndi.gaussian_filter(image.astype(np.float32) / image.max(), 1.5)
    prob = np.stack([1 - prob, prob])

    def labeller(p):
        return watershed_two_class(p[1], threshold=0.6, min_size=10)

    whole = labeller(prob)
    assert whole.max() > 20
    out = np.zeros(image.shape, np.uint32)
    n = label_with_halo(labeller, prob, out, block=block, halo=48, min_size=10)
    assert n == whole.max() and same_partition(whole, out)


def test_labelling_block_by_block_says_how_far_it_is_and_stops_when_asked(tmp_path,
                                                                          monkeypatch):
    """The watershed of many blocks takes as long as the network on a CPU: it reports each
    block, and closing the prediction there (Cancel) stops it before the next block."""
    from _models import thresholding_model

    image = np.where(discs((128, 128), [(30, 30), (90, 95)], 12) > 0, 0.9, 0.1)
    model = thresholding_model()
    out = zarr.create_array(store=tmp_path / "o.zarr", shape=image.shape, chunks=(32, 32),
                            dtype="uint32")
    messages = [e.message for e in predict(model, image.astype(np.float32),
                                           PredictConfig(tile_size=64), out_labels=out)]
    blocks_said = [m for m in messages if m.startswith("labelling (")]
    assert blocks_said == [f"labelling ({k} of 16)" for k in range(1, 17)]
    gen = predict(model, image.astype(np.float32), PredictConfig(tile_size=64),
                  out_labels=out)
    import napari_unet.blockwise as blockwise

    calls = []
    original = blockwise._label_window
    monkeypatch.setattr(blockwise, "_label_window",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    for event in gen:
        if event.message == "labelling (3 of 16)":
            gen.close()
            break
    assert len(calls) == 3
