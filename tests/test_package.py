"""The package around the engine: manifest, sample data, README and CI in step."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_cmd = [b for b in blocks if "pytest" in b]
    assert len(test_cmd) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd[0].strip() in ci.splitlines()


def test_manifest_and_sample_data():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-unet")
    assert manifest.name == "napari-unet"
    keys = [s.key for s in manifest.contributions.sample_data]
    assert "touching_cells" in keys
    from napari_unet._sample_data import touching_cells_sample

    (image, _, kind_i), (labels, _, kind_l) = touching_cells_sample()
    assert (kind_i, kind_l) == ("image", "labels")
    assert image.shape == labels.shape == (256, 256)
    assert labels.max() == 40 and np.issubdtype(labels.dtype, np.integer)


def test_the_code_passes_ruff():
    """The rules named in pyproject.toml hold for the package, its tests and benchmarks."""
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python section, run as written on small synthetic images (its 10-minute
    time budgets cut to two steps), so that it stays true to the API."""
    from napari_unet.synthetic import touching_cells

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Python\n\n```python\n(.*?)\n```", readme, re.S).group(1)
    assert code.count("time_budget=600") == 2
    code = code.replace("time_budget=600", "epochs=1, steps_per_epoch=2, patch_size=48")
    pairs = [touching_cells((96, 96), n_cells=8, radius=8, seed=s) for s in range(2)]
    image = pairs[0][0]
    scope = {"images": [p[0] for p in pairs], "labels": [p[1] for p in pairs],
             "image": image, "big_image": np.kron(image, np.ones((3, 3), image.dtype)),
             "zstack": np.stack([image, image]),
             "painted": [np.ones(image.shape, bool)] * 2}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plate").mkdir()
    for k, (picture, _) in enumerate(pairs):
        tifffile.imwrite(tmp_path / "plate" / f"well{k}.tif", picture)
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    assert (tmp_path / "model.safetensors").is_file()
    assert scope["masks"].shape == image.shape and scope["masks"].max() > 0
    assert scope["done"].written == [Path("segmented/well0.tif"), Path("segmented/well1.tif")]
    assert all(tifffile.imread(f).max() > 0 for f in scope["done"].written)
    assert all(f.with_suffix(".csv").is_file() for f in scope["done"].written)
    assert scope["done"].summary == Path("segmented/objects_per_image.csv")
    assert len(scope["table"]["index"]) == len(np.unique(scope["masks"])) - 1
    assert "area (um^2)" in (tmp_path / "objects.csv").read_text(encoding="utf-8")
