"""Measurements of each object of a segmentation (``napari_unet.measure``), checked against
scikit-image's ``regionprops_table``, and written beside the label files."""

import csv

import numpy as np
import pytest
import tifffile
import zarr
from _models import thresholding_model
from skimage.measure import regionprops_table

import napari_unet.measure as measuring
from napari_unet.batch import predict_files
from napari_unet.config import PredictConfig
from napari_unet.errors import NapariUNetError
from napari_unet.measure import measure, measured, tiff_pixel_size, write_csv
from napari_unet.predict import predict
from napari_unet.progress import run
from napari_unet.synthetic import touching_cells


def _labels(shape, seed=0, top=40):
    """Random blobs numbered sparsely (some numbers unused), with background."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.random(shape), 2)
    blobs, n = ndi.label(noise > np.percentile(noise, 60))
    lut = np.concatenate([[0], rng.choice(np.arange(1, top * 10), n, replace=False)])
    return lut[blobs].astype(np.uint32)


def _skimage(labels, image=None):
    props = ["label", "area", "centroid"] + (["intensity_mean"] if image is not None else [])
    return regionprops_table(labels, image, properties=props)


@pytest.mark.parametrize("shape", [(57, 83), (3, 40, 31)])
@pytest.mark.parametrize("channels", [None, 0, 2])
def test_measurements_are_those_of_scikit_image(shape, channels):
    labels = _labels(shape)
    rng = np.random.default_rng(1)
    image = None if channels is None else rng.random(shape + ((channels,) if channels else ()))
    ours, theirs = measure(labels, image), _skimage(labels, image)
    np.testing.assert_array_equal(ours["index"], theirs["label"])
    np.testing.assert_array_equal(ours["area"], theirs["area"])
    for axis in range(len(shape)):
        np.testing.assert_allclose(ours[f"centroid-{axis}"], theirs[f"centroid-{axis}"])
    if channels == 0:
        np.testing.assert_allclose(ours["mean_intensity"], theirs["intensity_mean"])
    for c in range(channels or 0):
        np.testing.assert_allclose(ours[f"mean_intensity-{c}"], theirs[f"intensity_mean-{c}"])
    assert ("mean_intensity" in ours) == (channels == 0)
    assert ("equivalent_diameter" in ours) == (len(shape) == 2)
    if len(shape) == 2:
        np.testing.assert_allclose(ours["equivalent_diameter"],
                                   2 * np.sqrt(theirs["area"] / np.pi))
        shape_of = regionprops_table(labels, properties=(
            "axis_major_length", "axis_minor_length", "eccentricity", "perimeter",
            "solidity"))
        for key, column in shape_of.items():
            np.testing.assert_allclose(ours[key], column, atol=1e-4)


def test_arrays_read_block_by_block_give_the_same_measurements(monkeypatch):
    """A zarr array is read chunk by chunk, a numpy array band by band; labels numbered far
    beyond the pixels of a block (a slide's millions) are counted over those it holds."""
    labels = _labels((150, 130), seed=2)
    image = np.random.default_rng(2).random(labels.shape)
    whole = measure(labels, image)
    on_disk = zarr.create_array(store={}, shape=labels.shape, chunks=(32, 45),
                                dtype=labels.dtype)
    on_disk[:] = labels
    monkeypatch.setattr(measuring, "BAND_PIXELS", 500)
    sparse = labels.astype(np.int64) * 1000  # numbers far beyond a block's pixels
    for table, scale in ((measure(on_disk, image), 1), (measure(labels, image), 1),
                         (measure(sparse, image), 1000)):
        np.testing.assert_array_equal(table["index"], whole["index"] * scale)
        for key in ("area", "centroid-0", "centroid-1", "mean_intensity", "perimeter",
                    "solidity"):
            np.testing.assert_allclose(table[key], whole[key])


def test_outlines_read_block_by_block_are_those_of_scikit_image(monkeypatch):
    """Perimeter and solidity across bands of a few rows and zarr chunks smaller than the
    objects (each block read with its margin, a chunk's from the edges of the chunks
    beside it), of objects with holes, touching the edges of the plane, and of a single
    pixel."""
    labels = _labels((120, 110), seed=5)
    labels[np.random.default_rng(5).random(labels.shape) < 0.02] = 0  # holes
    labels[0, 0], labels[119, 60:] = 99999, 88888  # a pixel in a corner, a line on an edge
    theirs = regionprops_table(labels, properties=("label", "perimeter", "solidity"))
    stores = []
    for chunks in ((7, 9), (1, 50)):  # margins from the chunks' edges; from thin chunks
        stores.append(zarr.create_array(store={}, shape=labels.shape, chunks=chunks,
                                        dtype=labels.dtype))
        stores[-1][:] = labels
    monkeypatch.setattr(measuring, "BAND_PIXELS", 3 * 110)
    for table in (measure(labels), *map(measure, stores)):
        np.testing.assert_array_equal(table["index"], theirs["label"])
        np.testing.assert_allclose(table["perimeter"], theirs["perimeter"])
        np.testing.assert_allclose(table["solidity"], theirs["solidity"])


def test_solidity_tells_two_touching_nuclei_taken_as_one_from_a_single_one():
    yy, xx = np.mgrid[:60, :80]
    one = ((yy - 30) ** 2 + (xx - 25) ** 2 <= 12**2).astype(np.int32)  # a disc
    two = one | ((yy - 30) ** 2 + (xx - 47) ** 2 <= 12**2)  # and another, merged with it
    single, merged = measure(one), measure(two.astype(np.int32))
    assert single["solidity"][0] > 0.94  # the hull's pixels at its rim: not quite 1
    assert merged["solidity"][0] < 0.87
    assert merged["perimeter"][0] > 1.6 * single["perimeter"][0]
    np.testing.assert_allclose(single["perimeter"], 2 * np.pi * 12, rtol=0.04)


def test_classes_are_measured_without_centres_and_no_object_gives_empty_columns():
    classes = np.zeros((20, 30), np.uint8)
    classes[:, 10:] = 1
    classes[5:8, 20:25] = 2
    table = measure(classes, np.ones((20, 30)), classes=True)
    assert list(table) == ["index", "area", "mean_intensity"]
    np.testing.assert_array_equal(table["index"], [1, 2])
    np.testing.assert_array_equal(table["area"], [20 * 20 - 15, 15])
    empty = measure(np.zeros((8, 8), np.uint16), np.zeros((8, 8, 3)))
    assert all(len(column) == 0 for column in empty.values())
    assert list(empty) == ["index", "area", "centroid-0", "centroid-1",
                           "equivalent_diameter", "axis_major_length", "axis_minor_length",
                           "eccentricity", "perimeter", "solidity", "on_border",
                           "mean_intensity-0",
                           "mean_intensity-1", "mean_intensity-2"]


def test_an_image_that_does_not_fit_the_labels_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        measure(np.ones((8, 8), int), np.ones((8, 9)))


def test_the_area_in_the_unit_of_the_pixel_size():
    labels = np.zeros((10, 10), np.int32)
    labels[2:5, 2:6] = 7
    table = measure(labels, pixel_size=(0.5, 0.25), unit="µm")
    np.testing.assert_allclose(table["area (um^2)"], [12 * 0.125])
    assert "area (pixel^2)" not in measure(labels, pixel_size=(1, 1), unit="pixel")
    assert not any(k.startswith("area (") for k in measure(labels[None], pixel_size=(1, 1),
                                                           unit="µm"))  # a stack: pixels


def test_the_pixel_size_of_a_tiff(tmp_path):
    image = np.zeros((16, 16), np.uint8)
    tifffile.imwrite(tmp_path / "ij.tif", image, imagej=True, resolution=(1 / 0.65, 1 / 0.5),
                     metadata={"unit": "micron"})
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(2e4, 1e4), resolutionunit=3)
    tifffile.imwrite(tmp_path / "dpi.tif", image, resolution=(72, 72), resolutionunit=2)
    from napari_unet.io import tiff_metadata

    size, unit = tiff_pixel_size(tiff_metadata(tmp_path / "ij.tif"))
    assert unit == "µm"
    np.testing.assert_allclose(size, (0.5, 0.65))
    size, unit = tiff_pixel_size(tiff_metadata(tmp_path / "cm.tif"))
    assert unit == "µm"
    np.testing.assert_allclose(size, (1.0, 0.5))
    assert tiff_pixel_size(tiff_metadata(tmp_path / "dpi.tif")) is None
    assert tiff_pixel_size({}) is None


def test_a_table_written_as_csv_reads_back(tmp_path):
    table = measure(_labels((40, 40)), np.random.default_rng(0).random((40, 40)))
    path = write_csv(tmp_path / "t.csv", table)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(table)
    assert len(rows) == 1 + len(table["index"])
    assert [int(r[0]) for r in rows[1:]] == table["index"].tolist()
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], table["centroid-0"],
                               rtol=1e-5)
    assert not list(tmp_path.glob(".*part"))


def test_a_prediction_measured_carries_its_objects_measurements():
    image, _ = touching_cells((96, 96), n_cells=6, seed=0)
    model = thresholding_model()
    result = run(measured(predict(model, image, PredictConfig(min_size=0)), image))
    expected = measure(result.labels, image)
    assert set(result.features) == set(expected) and len(expected["index"]) > 0
    for key, column in expected.items():
        np.testing.assert_allclose(result.features[key], column)
    other = run(measured(predict(model, image, PredictConfig(min_size=0)), image[:50]))
    assert "mean_intensity" not in other.features  # an image not laid out as its labels
    np.testing.assert_array_equal(other.features["area"], expected["area"])


def test_files_segmented_with_measure_get_a_csv_of_their_objects(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image, _ = touching_cells((96, 96), n_cells=6, seed=0)
    tifffile.imwrite(folder / "a.tif", image, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "micron"})
    model = thresholding_model()
    run(predict_files(model, [folder / "a.tif"], tmp_path / "out", PredictConfig(min_size=0),
                      measure=True))
    labels = tifffile.imread(tmp_path / "out" / "a.tif")
    with open(tmp_path / "out" / "a.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(1, labels.max() + 1))
    assert [int(r["area"]) for r in rows] == np.bincount(labels.ravel())[1:].tolist()
    np.testing.assert_allclose([float(r["area (um^2)"]) for r in rows],
                               np.bincount(labels.ravel())[1:] * 0.25, rtol=1e-5)
    with open(tmp_path / "out" / "objects_per_image.csv", newline="", encoding="utf-8") as f:
        summary = list(csv.DictReader(f))  # a row per image
    assert [r["image"] for r in summary] == ["a.tif"]
    assert int(summary[0]["objects"]) == labels.max()
    assert int(summary[0]["objects_on_border"]) == sum(r["on_border"] == "True" for r in rows)
    assert float(summary[0]["median area"]) == np.median([int(r["area"]) for r in rows])
    assert "median area (um^2)" in summary[0] and "median mean_intensity" in summary[0]
    assert float(summary[0]["median solidity"]) == pytest.approx(
        np.median([float(r["solidity"]) for r in rows]), rel=1e-5)
    run(predict_files(model, [folder / "a.tif"], tmp_path / "plain", PredictConfig()))
    assert not list((tmp_path / "plain").glob("*.csv"))  # only when asked
    tifffile.imwrite(folder / "objects_per_image.tif", image)  # an image named as the summary
    with pytest.raises(NapariUNetError, match="would have its measurements written over"):
        predict_files(model, [folder / "objects_per_image.tif"], tmp_path / "o", PredictConfig(),
                      measure=True)

    tifffile.imwrite(folder / "z.tif", np.stack([image, image[::-1]]))  # a z-stack
    for link, first in ((0.0, "plane"), (0.25, "index")):  # planes apart, or linked
        out = tmp_path / f"z{link}"
        run(predict_files(model, [folder / "z.tif"], out,
                          PredictConfig(min_size=0, link_planes=link), measure=True))
        header = (out / "z.csv").read_text(encoding="utf-8").splitlines()[0]
        assert header.startswith(f"{first},") and ("centroid-2" in header) == bool(link)


def test_stacks_labelled_apart_are_measured_plane_by_plane_or_time_point_by_time_point():
    """Planes labelled apart all have a label 1: each plane (of a time-lapse of z-stacks,
    each plane, or each time point once its planes are linked) is measured on its own,
    its rows led by where it is."""
    from napari_unet.measure import apart

    assert [apart(2, False), apart(3, False), apart(3, True), apart(4, False),
            apart(4, True), apart(3, False, "semantic")] == [0, 1, 0, 2, 1, 0]
    planes = np.stack([_labels((30, 40), seed=k) for k in range(3)])
    image = np.random.default_rng(4).random(planes.shape)
    table = measure(planes, image, apart=1)
    assert list(table)[:2] == ["plane", "index"]
    for k in range(3):
        alone = measure(planes[k], image[k])
        rows = table["plane"] == k
        for key, column in alone.items():
            np.testing.assert_allclose(table[key][rows], column)
    lapse = np.stack([planes, planes[::-1]])  # (T, Z, H, W)
    by_plane = measure(lapse, np.stack([image, image[::-1]]), apart=2)
    assert list(by_plane)[:3] == ["time", "plane", "index"]
    assert len(by_plane["index"]) == 2 * len(table["index"])
    by_time = measure(lapse, apart=1)
    assert list(by_time)[:2] == ["time", "index"] and "centroid-2" in by_time
    np.testing.assert_array_equal(by_time["index"][by_time["time"] == 1],
                                  measure(lapse[1])["index"])


def test_labels_numbered_beyond_their_pixels_or_below_zero_are_measured(monkeypatch):
    """A label 10**12 (painted in napari, which allows it) is counted over the values
    present, not over every number up to it; labels below 0 are background."""
    labels = _labels((40, 50), seed=5).astype(np.int64)
    image = np.random.default_rng(5).random(labels.shape)
    whole = measure(labels, image)
    huge = np.where(labels == labels.max(), 10**12, labels)
    table = measure(huge, image)
    np.testing.assert_array_equal(table["index"],
                                  np.r_[whole["index"][:-1], 10**12])
    for key in ("area", "centroid-0", "mean_intensity"):
        np.testing.assert_allclose(table[key], whole[key])
    monkeypatch.setattr(measuring, "BAND_PIXELS", 300)  # bands of 6 rows
    negative = np.where(labels == whole["index"][0], -3, labels)
    table = measure(negative, image)
    np.testing.assert_array_equal(table["index"], whole["index"][1:])
    np.testing.assert_allclose(table["area"], whole["area"][1:])
    table = measure(negative * 1000, image)  # a block's labels counted over its own
    np.testing.assert_array_equal(table["index"], whole["index"][1:] * 1000)
    np.testing.assert_allclose(table["mean_intensity"], whole["mean_intensity"][1:])


def test_objects_on_the_border_of_their_plane_are_marked():
    """Objects cut off by the image's edge (of any plane, for an object through a linked
    stack) are marked, to be left out of sizes and counts; nothing inside is."""
    labels = np.zeros((2, 20, 30), np.int32)
    labels[0, 0:3, 5:8] = 1  # top row
    labels[0, 8:12, 8:12] = 2  # inside
    labels[1, 8:12, 26:30] = 3  # last column, second plane
    labels[0, 8:12, 20:24] = 4  # inside in one plane ...
    labels[1, 17:20, 20:24] = 4  # ... on the last row of the next
    table = measure(labels)
    np.testing.assert_array_equal(table["index"], [1, 2, 3, 4])
    np.testing.assert_array_equal(table["on_border"], [True, False, True, True])
    assert table["on_border"].dtype == bool
    plane = measure(labels[0])
    np.testing.assert_array_equal(plane["on_border"], [True, False, False])
    by_plane = measure(labels, apart=1)
    np.testing.assert_array_equal(by_plane["on_border"], [True, False, False, True, True])
    assert "on_border" not in measure(labels[0], classes=True)
