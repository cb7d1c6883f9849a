"""Image files segmented into result files (``napari_unet.batch``): the loop of the command
line's ``predict`` and of the Predict widget's *Segment image files…*."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from _models import thresholding_model

from napari_unet.batch import FileEvent, predict_files
from napari_unet.config import PredictConfig
from napari_unet.errors import NapariUNetError
from napari_unet.predict import predict
from napari_unet.progress import run
from napari_unet.synthetic import touching_cells

CFG = PredictConfig(min_size=0)


def _files(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir()
    files = []
    for k in range(n):
        image, _ = touching_cells((96, 96), n_cells=6, seed=k)
        tifffile.imwrite(folder / f"img{k}.tif", image)
        files.append(folder / f"img{k}.tif")
    return files


def test_each_file_is_written_as_predict_segments_it(tmp_path):
    model = thresholding_model()
    files = _files(tmp_path / "in")
    events: list[FileEvent] = []
    result = run(predict_files(model, files, tmp_path / "out", CFG, probabilities=True),
                 events.append)
    assert result.written == [tmp_path / "out" / "img0.tif", tmp_path / "out" / "img1.tif"]
    assert result.skipped == []
    total = 0
    for f, written in zip(files, result.written):
        expected = run(predict(model, tifffile.imread(f), CFG))
        assert np.array_equal(tifffile.imread(written), expected.labels)
        assert tifffile.imread(written.with_name(f"{f.stem}_prob.tif")).shape == (2, 96, 96)
        total += int(expected.labels.max())
    assert result.objects == total > 0
    finished = [e for e in events if e.finished]
    assert [(e.index, e.total, e.name) for e in finished] == [(0, 2, "img0.tif"),
                                                              (1, 2, "img1.tif")]
    assert all(e.found.endswith("objects") for e in finished)
    assert any(e.tiles is not None and e.tiles.total for e in events)  # tile progress


def test_a_bad_file_is_skipped_and_named_or_ends_the_run(tmp_path):
    model = thresholding_model()
    files = _files(tmp_path / "in", 3)
    colour = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    tifffile.imwrite(files[1], colour)  # in colour, for a model of grey images
    result = run(predict_files(model, files, tmp_path / "out", CFG, skip_bad=True))
    assert [p.name for p in result.written] == ["img0.tif", "img2.tif"]
    assert len(result.skipped) == 1 and result.skipped[0][0] == "img1.tif"
    assert result.skipped[0][1].startswith("img1.tif has 3 channels (colour samples), and the "
                                           "model reads one: choose the channel")

    with pytest.raises(NapariUNetError, match="img1.tif"):
        run(predict_files(model, files, tmp_path / "out2", CFG))
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["img0.tif"]


def test_cancelled_in_a_file_leaves_it_unwritten_and_keeps_those_before(tmp_path):
    model = thresholding_model()
    files = _files(tmp_path / "in", 3)
    gen = predict_files(model, files, tmp_path / "out", CFG)
    for event in gen:  # Cancel at the second file's first tile
        if event.index == 1 and event.tiles is not None:
            break
    gen.close()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["img0.tif"]


@pytest.mark.parametrize("folder", ["--out folder", "folder for the results"])
def test_a_result_that_would_replace_an_input_is_refused_before_any_work(tmp_path, folder):
    files = _files(tmp_path / "in")
    with pytest.raises(NapariUNetError, match=f"would replace the input .*choose another "
                                              f"{folder}"):
        next(predict_files(thresholding_model(), files, tmp_path / "in", CFG, folder=folder))
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["img0.tif", "img1.tif"]
