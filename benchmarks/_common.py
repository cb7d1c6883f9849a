"""Shared helpers for the benchmarks: where the data is, what machine ran them."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

_DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATA = Path(os.environ.get("NAPARI_UNET_DATA", _DEFAULT)).resolve()


def machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def command() -> str:
    return " ".join(["python", *sys.argv])


def emit(report: dict, out=None) -> None:
    """Print the report as JSON and, if ``out`` is given, write it there too."""
    import json

    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
