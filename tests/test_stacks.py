"""Objects linked across the planes of a stack (``PredictConfig.link_planes``)."""

import numpy as np
import pytest
from _models import thresholding_model

from napari_unet.config import PredictConfig
from napari_unet.errors import InputError
from napari_unet.instances import components
from napari_unet.io import create_zarr
from napari_unet.predict import predict, zarr_outputs
from napari_unet.progress import run
from napari_unet.stacks import link_planes, match_objects


def balls(shape, centres, radii):
    """3D instance labels of balls (ids 1..n)."""
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    lab = np.zeros(shape, np.int32)
    for i, ((cz, cy, cx), r) in enumerate(zip(centres, radii, strict=True), start=1):
        lab[(zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = i
    return lab


def per_plane(truth, rng):
    """Each plane labelled on its own, as a 2D model does: ids from 1 in every plane, in a
    random order."""
    out = np.zeros(truth.shape, np.uint32)
    for k, p in enumerate(truth):
        ids = np.unique(p[p > 0])
        order = rng.permutation(len(ids)) + 1
        for i, new in zip(ids, order, strict=True):
            out[k][p == i] = new
    return out


def same_partition(a, b) -> bool:
    """True where the two labellings are the same objects under some renaming of ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
            and ((pairs[0] == 0) == (pairs[1] == 0)).all())


@pytest.fixture
def truth():
    # balls of different sizes and depths, two of them touching side by side, one that
    # starts in a later plane right below where another one ended; the sections of under
    # 30 px at their poles are left out, as a minimum object size removes them in a
    # prediction (a pole of a few pixels overlaps the section next to it too little)
    lab = balls((24, 64, 80), [(8, 20, 20), (10, 20, 33), (12, 45, 60), (4, 48, 20),
                               (17, 48, 20)],
                [6, 8, 9, 4, 5])
    for p in lab:
        ids, sizes = np.unique(p, return_counts=True)
        p[np.isin(p, ids[sizes < 30])] = 0
    return lab


def test_planes_labelled_apart_come_back_as_the_3d_objects(truth, rng):
    flat = per_plane(truth, rng)
    assert not same_partition(flat, truth)  # one ball has several ids before linking
    linked = link_planes(flat.copy(), 0.25)
    assert same_partition(linked, truth)
    ids = np.unique(linked[linked > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive


def test_objects_that_do_not_overlap_enough_stay_apart():
    # one square in plane 0, the same square shifted by 6 of its 10 px in plane 1: IoU 1/4
    lab = np.zeros((2, 30, 30), np.uint16)
    lab[0, 5:15, 5:15] = 7
    lab[1, 5:15, 11:21] = 3
    linked = link_planes(lab.copy(), 0.2)
    assert linked[0, 10, 10] == linked[1, 10, 18] == 1
    apart = link_planes(lab.copy(), 0.3)
    assert apart[0, 10, 10] == 1 and apart[1, 10, 18] == 2


def test_each_object_continues_at_most_one():
    # one object in plane 0 is split into two in plane 1: the one overlapping it more
    # keeps its id, the other starts a new object
    lab = np.zeros((2, 20, 40), np.uint32)
    lab[0, 5:15, 5:35] = 1
    lab[1, 5:15, 5:22] = 1
    lab[1, 5:15, 23:35] = 2
    linked = link_planes(lab.copy(), 0.1)
    assert linked[1, 10, 10] == linked[0, 10, 10] == 1
    assert linked[1, 10, 30] == 2
    assert match_objects({1: 10}, {5: 10, 6: 10}, {(1 << 32) | 5: 8, (1 << 32) | 6: 8},
                         0.5) == {5: 1}  # a tie goes to the smaller id


def test_a_zarr_stack_is_linked_block_by_block(truth, rng, tmp_path):
    flat = per_plane(truth, rng)
    store = create_zarr(tmp_path / "labels.zarr", flat.shape, "uint32", (1, 16, 16))
    store[...] = flat
    link_planes(store, 0.25)  # blocks of the chunks: 16 px, smaller than every ball
    np.testing.assert_array_equal(np.asarray(store[...]), link_planes(flat.copy(), 0.25))


def test_bad_overlaps_and_shapes_are_refused():
    with pytest.raises(InputError, match="IoU between 0 and 1"):
        link_planes(np.zeros((2, 4, 4), np.uint8), 1.5)
    with pytest.raises(InputError, match="stack"):
        link_planes(np.zeros((4, 4), np.uint8), 0.5)
    with pytest.raises(InputError, match="link_planes is the overlap"):
        PredictConfig(link_planes=2.0)
    with pytest.raises(InputError, match="more than labels of type uint8"):
        lab = np.zeros((2, 40, 40), np.uint8)
        lab[0] = np.arange(1600).reshape(40, 40) % 200 + 1
        lab[1] = lab[0].T  # other pixels: every object of plane 1 is new
        link_planes(lab, 0.99)


def test_prediction_links_the_planes_of_a_stack(truth, rng, tmp_path):
    fg = truth > 0
    fg[:, 60:, :] = True  # a bar through every plane: no plane is noise alone
    image = fg.astype(np.float32) + rng.normal(0, 0.05, fg.shape).astype(np.float32)
    cfg = PredictConfig(device="cpu", precision="fp32", tile_size=64, min_size=0,
                        instance_method="components")
    apart = run(predict(thresholding_model(), image, cfg)).labels
    # the model finds each plane's foreground, and its connected components are the
    # objects (the two touching balls are one)
    expected = np.stack([components(p, grow=1, min_size=0) for p in fg])
    assert same_partition(apart, expected)
    assert apart[10].max() == 3  # ids restart in every plane: balls 1+2, ball 3, the bar
    events = []
    result = run(predict(thresholding_model(), image, cfg.replace(link_planes=0.25)),
                 events.append)
    assert same_partition(result.labels, link_planes(expected.astype(np.uint32), 0.25))
    ids = [np.unique(result.labels[truth == i]) for i in (3, 4, 5)]
    assert all(len(i) == 1 for i in ids)  # each isolated ball: one id through its planes
    assert ids[1] != ids[2]  # balls 4 and 5: one above the other, apart in z
    assert len(np.unique(result.labels[:, 60:, :])) == 1  # the bar
    assert any("linking objects across planes (24 of 24)" in e.message for e in events)
    # the same written block by block into a zarr store
    out = create_zarr(tmp_path / "l.zarr", fg.shape, "uint32", (1, 32, 32))
    run(predict(thresholding_model(), image, cfg.replace(link_planes=0.25), out_labels=out))
    np.testing.assert_array_equal(np.asarray(out[...]), result.labels)


def test_linking_is_for_instance_models(rng):
    image = rng.random((3, 32, 32)).astype(np.float32)
    cfg = PredictConfig(device="cpu", precision="fp32", tile_size=64, link_planes=0.5)
    with pytest.raises(InputError, match="linked across planes for instance models"):
        run(predict(thresholding_model("semantic"), image, cfg))
    with pytest.raises(InputError, match="linked across planes for instance models"):
        run(predict(thresholding_model("semantic"), np.stack([image, image]), cfg))
    one = run(predict(thresholding_model(), image[0], cfg))  # a 2D image: nothing to link
    assert one.labels.shape == (32, 32)


def test_command_line_links_the_planes(truth, rng, tmp_path, capsys):
    import tifffile

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.cli import main

    model = save_checkpoint(tmp_path / "m.safetensors", thresholding_model())
    image = (truth > 0).astype(np.float32) * 100 + rng.normal(0, 5, truth.shape)
    image[:, 60:, :] = 100
    tifffile.imwrite(tmp_path / "stack.tif", image.astype(np.float32))
    flags = ["--instance-method", "components", "--min-size", "0", "--tile-size", "64"]
    assert main(["-q", "predict", str(model), str(tmp_path / "stack.tif"), "--out",
                 str(tmp_path / "out"), "--link-planes", "0.25", *flags]) == 0
    assert "linking" not in capsys.readouterr().out  # -q: no progress lines
    linked = tifffile.imread(tmp_path / "out" / "stack.tif")
    apart = run(predict(model, image.astype(np.float32),
                        PredictConfig(instance_method="components", min_size=0,
                                      tile_size=64))).labels
    np.testing.assert_array_equal(linked, link_planes(apart.astype(np.uint32), 0.25))
    assert len(np.unique(linked[truth == 3])) == 1
    assert main(["-q", "predict", str(model), str(tmp_path / "stack.tif"), "--out",
                 str(tmp_path / "bad"), "--link-planes", "3"]) == 2
    assert "link_planes is the overlap (IoU, 0 to 1)" in capsys.readouterr().err


def test_a_time_lapse_of_z_stacks_is_linked_along_z_within_each_time_point(truth, rng,
                                                                          tmp_path):
    """(T, Z, Y, X): every plane labelled, planes linked along Z in each time point, ids
    from 1 in each; the same through relabel(), from Dask, and on the command line."""
    import dask.array as da
    import tifffile

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.cli import main
    from napari_unet.predict import relabel

    fg = truth > 0
    fg[:, 60:, :] = True  # a bar through every plane: no plane is noise alone
    stacks = np.stack([fg, fg[:, :, ::-1]])  # two time points, the cells moved
    image = stacks.astype(np.float32) + rng.normal(0, 0.05, stacks.shape).astype(np.float32)
    cfg = PredictConfig(device="cpu", precision="fp32", tile_size=64, min_size=0,
                        instance_method="components", link_planes=0.25)
    model = thresholding_model()
    result = run(predict(model, image, cfg))
    assert result.labels.shape == stacks.shape
    assert result.probabilities.shape == (2, 24, 2, 64, 80)
    each = [run(predict(model, image[t], cfg)).labels for t in range(2)]
    np.testing.assert_array_equal(result.labels, np.stack(each))
    assert len(np.unique(result.labels[1, :, 60:, :])) == 1  # the bar: one id through Z
    apart = run(predict(model, image, cfg.replace(link_planes=0))).labels
    np.testing.assert_array_equal(apart, np.stack([run(predict(model, image[t], cfg.replace(
        link_planes=0))).labels for t in range(2)]))
    np.testing.assert_array_equal(run(relabel(model, result, cfg)).labels, result.labels)
    lazy = da.from_array(image, chunks=(1, 1, 32, 32))
    np.testing.assert_array_equal(run(predict(model, lazy, cfg)).labels, result.labels)
    # block by block into zarr arrays of its shape, as a lazy napari layer or a zarr input
    # is predicted: the same as each time point's z-stack written so
    labels, prob = zarr_outputs(model, lazy, tmp_path / "l.zarr", tmp_path / "p.zarr",
                                chunk=32)
    assert labels.shape == stacks.shape and prob.shape == (2, 24, 2, 64, 80)
    run(predict(model, lazy, cfg, out_labels=labels, out_probabilities=prob))
    for t in range(2):
        one, _ = zarr_outputs(model, image[t], tmp_path / f"{t}.zarr", chunk=32)
        run(predict(model, image[t], cfg, out_labels=one))
        np.testing.assert_array_equal(np.asarray(labels[t]), np.asarray(one[...]))
    np.testing.assert_allclose(np.asarray(prob[...]), result.probabilities, atol=1e-6)
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    tifffile.imwrite(tmp_path / "tz.tif", image, imagej=True, metadata={"axes": "TZYX"})
    assert main(["-q", "predict", str(path), str(tmp_path / "tz.tif"), "--out",
                 str(tmp_path / "out"), "--link-planes", "0.25", "--instance-method",
                 "components", "--min-size", "0", "--tile-size", "64"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "tz.tif"),
                                  result.labels)


def test_objects_are_followed_through_time_as_3d_objects(rng):
    """(T, Z, Y, X) z-stacks linked along Z, ids from 1 in each, in any order: followed
    through time, each ball keeps one id at every time point while it moves less than its
    size; one that jumps far, or appears, takes a new id; one that leaves is not given to
    another."""
    from napari_unet.stacks import iter_follow_time, iter_link_stacks

    shape = (12, 64, 96)
    centres = [(6, 16, 16), (6, 16, 30), (6, 44, 60)]  # 1 and 2 touch side by side
    truths = np.stack([
        balls(shape, centres, [6, 7, 8]),
        balls(shape, [(z, y, x + 3) for z, y, x in centres], [6, 7, 8]),
        balls(shape, [(z, y, x + 6) for z, y, x in centres[:2]] + [(6, 40, 85)],
              [6, 7, 6]),  # ball 3 leaves, a new one comes in at the right
        balls(shape, [(6, 46, 16), (6, 16, 36), (6, 40, 85)], [6, 7, 6]),  # 1 jumps
    ])
    for p in truths.reshape(-1, *shape[1:]):  # the poles' few pixels, as min_size drops
        ids, sizes = np.unique(p, return_counts=True)
        p[np.isin(p, ids[sizes < 30])] = 0
    labels = np.stack([per_plane(t, rng) for t in truths])
    list(iter_link_stacks(labels, 0.25))
    assert all(same_partition(labels[t], truths[t]) for t in range(4))
    assert list(iter_follow_time(labels, 0.25)) == [1, 2, 3, 4]
    assert all(same_partition(labels[t], truths[t]) for t in range(4))
    ids = {t: {i: int(labels[t][truths[t] == i].max()) for i in range(1, 4)} for t in range(4)}
    assert ids[0] == ids[1] and len(set(ids[0].values())) == 3
    assert ids[2][1] == ids[0][1] and ids[2][2] == ids[0][2]  # still followed
    assert ids[2][3] not in ids[0].values()  # came in: a new id, not the one that left
    assert ids[3][2] == ids[0][2] and ids[3][3] == ids[2][3]
    assert ids[3][1] not in {*ids[0].values(), *ids[2].values()}  # jumped: a new id
    with pytest.raises(InputError, match="time-lapse of z-stacks"):
        list(iter_follow_time(labels[0], 0.25))


def test_prediction_follows_a_time_lapse_of_z_stacks_through_time(truth, rng, tmp_path,
                                                                  capsys):
    """follow_time in predict(), relabel(), block by block into zarr, and on the command
    line (--follow-time): the same labels, and the objects counted through time."""
    import tifffile

    from napari_unet.checkpoint import save_checkpoint
    from napari_unet.cli import main
    from napari_unet.found import what_was_found
    from napari_unet.predict import relabel

    fg = truth > 0
    stacks = np.stack([fg, np.roll(fg, 2, axis=2), np.roll(fg, 4, axis=2)])
    stacks[:, :, 60:, :] = True  # a bar through every plane: no plane is noise alone
    image = stacks.astype(np.float32) + rng.normal(0, 0.05, stacks.shape).astype(np.float32)
    cfg = PredictConfig(device="cpu", precision="fp32", tile_size=64, min_size=0,
                        instance_method="components", link_planes=0.25)
    model = thresholding_model()
    apart = run(predict(model, image, cfg)).labels  # ids from 1 in each time point
    events = []
    result = run(predict(model, image, cfg.replace(follow_time=True)), events.append)
    assert all(same_partition(result.labels[t], apart[t]) for t in range(3))
    found = len(np.unique(apart[0])) - 1  # each time point's objects: the balls, the bar
    assert all(len(np.unique(a)) - 1 == found for a in apart)
    assert found >= 5 and len(np.unique(result.labels)) - 1 == found  # followed, each one
    assert any("following objects through time (3 of 3)" in e.message for e in events)
    assert what_was_found(result, True, followed=True) == \
        f"{found} objects followed through 3 time points of 24 planes"
    assert what_was_found(run(predict(model, image, cfg)), True) == \
        f"{3 * found} objects in 3 stacks, linked through their 24 planes"
    np.testing.assert_array_equal(
        run(relabel(model, result, cfg.replace(follow_time=True))).labels, result.labels)
    labels, _ = zarr_outputs(model, image, tmp_path / "l.zarr", chunk=32)
    run(predict(model, image, cfg.replace(follow_time=True), out_labels=labels))
    np.testing.assert_array_equal(np.asarray(labels[...]), result.labels)
    with pytest.raises(InputError, match="set link_planes too"):
        PredictConfig(follow_time=True)
    with pytest.raises(InputError, match="layer 'x' has 5 axes: leave following through"):
        run(predict(model, image[None], cfg.replace(follow_time=True), name="layer 'x'"))
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    tifffile.imwrite(tmp_path / "tz.tif", image, imagej=True, metadata={"axes": "TZYX"})
    assert main(["predict", str(path), str(tmp_path / "tz.tif"), "--out",
                 str(tmp_path / "out"), "--link-planes", "0.25", "--follow-time",
                 "--instance-method", "components", "--min-size", "0", "--tile-size",
                 "64"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "tz.tif"),
                                  result.labels)
    assert f"tz.tif: {found} objects followed through 3 time points of 24 planes" in \
        capsys.readouterr().out
