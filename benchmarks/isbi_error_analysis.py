"""Where the ISBI 2012 pixel error of trained models comes from, on slices 25-29.

For each model file (made by ``isbi_membrane.py --model-out``), at its calibrated threshold:
the pixel error split into false membrane and false cell interior, the share of the wrong
pixels more than 3 px from the true membrane edge (what is not an edge disagreement), each
slice's true and predicted membrane area; then, for the first model, the error at the best
threshold per slice and over all slices chosen *on the test labels* (an oracle, a bound on
what any threshold calibration could do), and the error of the models' averaged
probabilities (does averaging away the training's randomness help?).

    python benchmarks/isbi_error_analysis.py A.safetensors [B.safetensors ...] --out X.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).parent))
from _common import command, emit, machine  # noqa: E402
from isbi_membrane import load  # noqa: E402

from napari_unet.checkpoint import load_checkpoint  # noqa: E402
from napari_unet.config import PredictConfig  # noqa: E402
from napari_unet.metrics import pixel_error  # noqa: E402
from napari_unet.predict import predict  # noqa: E402
from napari_unet.progress import run  # noqa: E402

GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
FAR = 3  # px from the true membrane edge


def breakdown(interior: np.ndarray, pred: np.ndarray) -> dict:
    false_mem, false_int = interior & ~pred, pred & ~interior
    to_membrane = ndi.distance_transform_edt(interior)  # of interior pixels
    to_interior = ndi.distance_transform_edt(~interior)  # of membrane pixels
    return {"pixel_error": pixel_error(interior, pred),
            "false_membrane": float(false_mem.mean()),
            "false_interior": float(false_int.mean()),
            f"wrong_over_{FAR}px_from_edge": float(((false_mem & (to_membrane > FAR))
                                                    | (false_int & (to_interior > FAR))).mean()),
            "true_membrane_area": float((~interior).mean()),
            "predicted_membrane_area": float((~pred).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    images, labels = load(range(25, 30))
    truth = [y > 127 for y in labels]
    checkpoints = [load_checkpoint(p) for p in args.models]
    probs = [[run(predict(c, x, PredictConfig(), labels=False)).probabilities[1]
              for x in images] for c in checkpoints]

    models = []
    for path, ck, ps in zip(args.models, checkpoints, probs):
        rows = [breakdown(t, p > ck.threshold) for t, p in zip(truth, ps)]
        models.append({"model": str(path), "threshold": ck.threshold,
                       "mean": {k: float(np.mean([r[k] for r in rows])) for k in rows[0]},
                       "slices": {25 + i: r for i, r in enumerate(rows)}})

    errors = np.array([[pixel_error(t, p > g) for g in GRID] for t, p in zip(truth, probs[0])])
    oracle = {"per_slice_threshold": [GRID[j] for j in errors.argmin(1)],
              "per_slice_pixel_error": float(errors.min(1).mean()),
              "one_threshold": GRID[int(errors.mean(0).argmin())],
              "one_threshold_pixel_error": float(errors.mean(0).min())}
    report = {"benchmark": "isbi_error_analysis", "command": command(), "machine": machine(),
              "test": {"slices": "25-29"}, "models": models,
              "oracle_thresholds_of_first_model": oracle}
    if len(checkpoints) > 1:
        mean_p = [np.mean(ps, axis=0) for ps in zip(*probs)]
        report["averaged_probabilities"] = {
            str(g): float(np.mean([pixel_error(t, p > g) for t, p in zip(truth, mean_p)]))
            for g in (0.45, 0.5, 0.55)}
    emit(report, args.out)


if __name__ == "__main__":
    main()
