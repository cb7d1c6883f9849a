"""Dask-distributed prediction: a LocalCluster of two worker processes."""

import distributed  # the testing extra has it: a broken install fails here, no skip
import numpy as np
import pytest
import zarr
from conftest import tiny_config
from scipy import ndimage as ndi

from napari_unet.checkpoint import Checkpoint, save_checkpoint
from napari_unet.config import PredictConfig
from napari_unet.distributed import models_loaded, predict_distributed
from napari_unet.errors import InputError
from napari_unet.metrics import same_partition
from napari_unet.model import UNet
from napari_unet.predict import predict
from napari_unet.progress import run


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def _model(path, **kw):
    import torch

    torch.manual_seed(3)
    net = UNet(tiny_config(**kw))
    ck = Checkpoint(net.config, net.state_dict(), task={"mode": "instances",
                                                        "target": "two_class"})
    return save_checkpoint(path, ck)


def test_two_workers_equal_single_process_predict(tmp_path, client):
    model = _model(tmp_path / "m.safetensors", padding="same", norm="batch")
    rng = np.random.default_rng(7)
    image = (ndi.gaussian_filter(rng.normal(size=(2048, 2048)), 4) * 2000 + 100
             ).astype(np.uint16)
    lazy = zarr.create_array(store=tmp_path / "big.zarr", shape=image.shape,
                             chunks=(512, 512), dtype="uint16")
    lazy[:] = image
    labels = zarr.create_array(store=tmp_path / "labels.zarr", shape=image.shape,
                               chunks=(512, 512), dtype="uint32")
    prob = zarr.create_array(store=tmp_path / "prob.zarr", shape=(2, *image.shape),
                             chunks=(2, 512, 512), dtype="float32")
    cfg = PredictConfig(tile_size=256, min_size=20)
    first = run(predict(model, image, cfg, labels=False))
    # an untrained network: threshold so that 30 % of the image is object
    cfg = PredictConfig(tile_size=256, min_size=20, instance_method="components",
                        threshold=float(np.quantile(first.probabilities[1], 0.7)))
    single = run(predict(model, image, cfg))
    events = []
    result = run(predict_distributed(model, lazy, labels, client=client, config=cfg,
                                     out_probabilities=prob), events.append)

    np.testing.assert_allclose(prob[:], single.probabilities, atol=1e-4)
    got = labels[:]
    assert single.labels.max() > 50
    assert same_partition(single.labels, got)
    # objects that straddle a chunk border are one object
    cut = np.intersect1d(got[511], got[512])
    assert len(cut[cut > 0]) >= 10
    assert events[-1].message == "labelling" and events[-2].done == 16
    assert "2 worker" in result.device
    # the model file was loaded once per worker, not once per task
    assert sorted(client.run(models_loaded).values()) == [1, 1]


def test_a_stack_is_predicted_on_the_cluster_and_its_planes_linked(tmp_path, client):
    """A z-stack (a light-sheet volume larger than one machine) was refused ("one 2D image
    at a time"): every block of every plane is a task, each plane normalised on its own and
    labelled block by block, the planes then linked (and a time-lapse of z-stacks followed
    through time): as one process predicts it. The labelling's tables were sent to the
    workers under keys made of their content: an equal table of another plane took the key
    and was lost with the first ("lost dependencies")."""
    from napari_unet.synthetic import touching_cells

    image = np.stack([touching_cells((256, 256), n_cells=12, radius=9, seed=s)[0]
                      for s in range(3)])
    image[1] = image[1] // 2 + 60  # each plane normalised on its own
    labels = zarr.create_array(store=tmp_path / "labels.zarr", shape=image.shape,
                               chunks=(1, 128, 128), dtype="uint32")
    prob = zarr.create_array(store=tmp_path / "prob.zarr", shape=(3, 2, 256, 256),
                             chunks=(1, 2, 128, 128), dtype="float32")
    cfg = PredictConfig(link_planes=0.25)
    single = run(predict("nuclei", image, cfg))
    events = []
    run(predict_distributed("nuclei", image, labels, client=client, config=cfg,
                            out_probabilities=prob), events.append)
    np.testing.assert_allclose(prob[:], single.probabilities, atol=1e-4)
    got = labels[:]
    assert single.labels.max() > 20 and same_partition(single.labels, got)
    assert len(np.unique(got)) - 1 < sum(len(np.unique(p)) - 1 for p in got)  # linked
    assert events[0].message == "predicting 12 blocks on 2 Dask worker(s)"
    assert any(e.message.startswith("linking objects across planes (3 of 3)") for e in events)
    # a time-lapse of z-stacks: every plane of every time point, linked and followed
    movie = np.stack([image, np.roll(image, 3, axis=2)])
    labels = zarr.create_array(store=tmp_path / "movie.zarr", shape=movie.shape,
                               chunks=(1, 1, 128, 128), dtype="uint32")
    cfg = cfg.replace(follow_time=True)
    run(predict_distributed("nuclei", movie, labels, client=client, config=cfg))
    single = run(predict("nuclei", movie, cfg)).labels
    assert same_partition(single, labels[:])
    assert len(np.unique(single)) == len(np.unique(single[0]))  # followed through time


def test_chunks_off_the_pooling_grid_are_refused(tmp_path, client):
    model = _model(tmp_path / "m.safetensors", depth=3)
    image = np.zeros((100, 100), np.float32)
    labels = zarr.create_array(store=tmp_path / "l.zarr", shape=image.shape,
                               chunks=(50, 50), dtype="uint32")
    with pytest.raises(InputError, match="multiples of 8"):
        next(predict_distributed(model, image, labels, client=client))


def test_cli_says_in_one_line_what_is_wrong_with_the_dask_options(tmp_path, capsys):
    """An unreachable scheduler and 0 workers ended in tracebacks (OSError after 30 s,
    ZeroDivisionError); a block side of 0 was taken as 16 px. Nothing is left behind."""
    from napari_unet.cli import main

    image = zarr.create_array(store=str(tmp_path / "big.zarr"), shape=(64, 64),
                              dtype="uint8", chunks=(32, 32))
    image[:] = 7
    model = _model(tmp_path / "m.safetensors")
    args = ["-q", "predict", str(model), str(tmp_path / "big.zarr"), "--out",
            str(tmp_path / "out")]
    assert main([*args, "--scheduler", "no-port-here"]) == 2
    err = capsys.readouterr().err
    assert "could not reach the Dask scheduler at no-port-here" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for option in ("--workers", "--chunk"):
        with pytest.raises(SystemExit) as exit_:
            main([*args, "--scheduler", "local", option, "0"])
        assert exit_.value.code == 2
        assert f"argument {option}: expected a whole number of at least 1, not '0'" in (
            capsys.readouterr().err)
    out = tmp_path / "out"
    assert (list(out.iterdir()) if out.exists() else []) == []


def test_cli_says_how_to_get_distributed_where_it_cannot_be_imported(tmp_path, capsys,
                                                                    monkeypatch):
    """Without Dask's distributed package (or with one that does not match dask, as pip
    paired them when dask had a release no distributed had yet), --scheduler ended in an
    ImportError traceback."""
    import sys

    from napari_unet.cli import main

    image = zarr.create_array(store=str(tmp_path / "big.zarr"), shape=(64, 64),
                              dtype="uint8", chunks=(32, 32))
    image[:] = 7
    model = _model(tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    assert main(["-q", "predict", str(model), str(tmp_path / "big.zarr"), "--out",
                 str(tmp_path / "out"), "--scheduler", "local"]) == 2
    err = capsys.readouterr().err
    assert "--scheduler needs Dask's distributed package" in err and (
        'pip install "napari-unet[distributed]"' in err)
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
