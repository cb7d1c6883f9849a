"""The training report shown in the README: fine-tune the shipped nuclei model on the 30
DSB 2018 images of ``fewshot30.txt`` for 150 s through the command line, and copy the
report it writes beside the model to ``docs/images/training_report.png``.

    python docs/make_training_report.py        # needs ../shared/data
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from napari_unet.cli import main

ROOT = Path(__file__).resolve().parents[1]
DSB = ROOT / ".." / "shared" / "data" / "dsb2018_fluo"

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    for sub in ("images", "labels"):
        (tmp / sub).mkdir()
    for name in (DSB / "fewshot30.txt").read_text().split():
        (tmp / "images" / f"{name}.png").symlink_to(DSB / "train" / "images" / f"{name}.png")
        (tmp / "labels" / f"{name}.tif").symlink_to(DSB / "train" / "labels" / f"{name}.tif")
    model = tmp / "nuclei_finetuned.safetensors"
    main(["-q", "train", str(tmp / "images"), str(tmp / "labels"), "--from", "nuclei",
          "--out", str(model), "--time-budget", "150", "--lr", "3e-4", "--val-fraction", "0.2"])
    shutil.copy(tmp / "nuclei_finetuned.report.png", ROOT / "docs" / "images" /
                "training_report.png")
