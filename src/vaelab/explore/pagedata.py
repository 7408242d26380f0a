"""What the pages get about a run: its summary, its latent map, and its networks for the JavaScript.

The served explorer sends these as JSON from its API; the exported explorer and the report embed the
same dictionaries in the page. Nothing in the pages is specific to digits: class names, the word for
a class and the colours travel with the data (none for unlabelled data), and image shapes come from
the model.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from vaelab import analysis, webmodel
from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.plots import class_colors
from vaelab.run import METRICS, Run, damaged


def image_shape(run: Run) -> list[int]:
    """(height, width, channels) of the run's images, as its encoder reads them."""
    return [int(d) for d in run.encoder.inputs[0].shape[1:]]


def check_run(run: Run) -> None:
    """A one-line error, naming the file, when what the pages read from the run is missing or damaged."""
    if run.epoch == 0:
        raise VaelabError(f"{run.path} has no completed epoch yet; train it first")
    if run.config.model.conditional:
        raise VaelabError(
            f"{run.path} is a {run.config.model.family}: its codes depend on the label, which the explorer does not "
            f"give yet; use `vaelab generate {run.path} --label C`"
        )
    if run.config.model.family == "vqvae":
        raise VaelabError(
            f"{run.path} is a vqvae: its codes are codebook indices, not a plane the explorer can draw yet; use "
            f"`vaelab generate {run.path} --samples N` or `vaelab evaluate {run.path}`"
        )
    if "test" in run.metrics and not _is_number(_get(run.metrics["test"], "loss")):
        raise damaged(run.path / METRICS, 'its "test" entry holds no numeric "loss"')


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run_info(run_id: str, run: Run) -> dict[str, Any]:
    """The run as the page's run selector shows it."""
    config = run.config
    loss = _get(run.metrics.get("test"), "loss")
    return {
        "id": run_id,
        "name": run.name,
        "preset": config.preset,
        "arch": config.model.arch,
        "variance": config.model.variance,
        "latent_dim": config.model.latent_dim,
        "epochs": run.epoch,
        "test_loss": float(loss) if _is_number(loss) and np.isfinite(loss) else None,  # NaN is not JSON
    }


def image_b64(image: np.ndarray) -> str:
    """An image of values in [0, 1] as base64 bytes (0-255), row by row, channels last."""
    return base64.b64encode(np.clip(np.rint(np.asarray(image) * 255), 0, 255).astype(np.uint8).tobytes()).decode()


def latent_map(
    run_id: str, run: Run, codes: analysis.LatentCodes, table: list[analysis.ClassRow], data: Dataset
) -> dict[str, Any]:
    """The test set's codes in the drawn plane, their classes, and the one-image-per-class table
    (`labels`, `class_names`, `colors` and `table` are empty for unlabelled data)."""
    names = list(data.class_names or ()) if codes.labels is not None else []
    return {
        "run": run_info(run_id, run),
        "axis_labels": list(codes.axis_labels),
        "is_pca": codes.is_pca,
        "plane_mean": codes.plane_mean.tolist(),
        "plane_axes": codes.plane_axes.tolist(),
        "coords": codes.coords.round(4).tolist(),
        "labels": codes.labels.tolist() if names else [],
        "class_names": names,
        "label_name": data.class_word,
        "colors": class_colors(len(names)),
        "image_shape": image_shape(run),
        "table": [
            {
                "label": row.label,
                "index": row.index,
                "z_mean": list(row.z_mean),
                "sigma": list(row.sigma) if row.sigma else None,
                "coords": codes.project(np.array([row.z_mean]))[0].round(5).tolist(),
                "image": image_b64(data.x_test[row.index] / 255.0),
            }
            for row in (table if names else [])
        ],
    }


def models(run: Run, *, dtype: str = "float32", encoder: bool = True) -> dict[str, Any]:
    """The run's generator (and encoder) described for the page's JavaScript network (webmodel)."""
    described = {"generator": webmodel.describe(run.generator, dtype=dtype)}
    if encoder:
        described["encoder"] = webmodel.describe(run.encoder, dtype=dtype)
    return described
