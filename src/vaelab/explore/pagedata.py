"""What the pages get about a run: its summary, its latent map, and its networks for the JavaScript.

The served explorer sends these as JSON from its API; the exported explorer and the report embed the
same dictionaries in the page. Nothing in the pages is specific to digits: class names, the word for
a class and the colours travel with the data (none for unlabelled data), and image shapes come from
the model.

A cvae's map is its test set encoded each with its own label, and its networks take the class the page
chooses (webmodel's "classes"); a vqvae has no plane to draw and gets a code grid instead (`code_grid`:
test images' codes, which the page edits and decodes).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from vaelab.analysis import latent as analysis
from vaelab.analysis.plots import class_colors
from vaelab.config import DEFAULT_FAMILY
from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.explore import webmodel
from vaelab.run import METRICS, Run, damaged

GRID_IMAGES = 10  # test images the code grid offers where the data have no classes (else one per class)
BACKGROUND_IMAGES = 1000  # test images whose borders give the data's background: a median steady to a few levels


def image_shape(run: Run) -> list[int]:
    """(height, width, channels) of the run's images, as its encoder reads them."""
    return [int(d) for d in run.encoder.inputs[0].shape[1:]]


def is_vqvae(run: Run) -> bool:
    """Whether the run's codes are codebook indices (a code grid on the page) rather than points of a plane."""
    return not run.config.model.member.gaussian_latent


def check_run(run: Run) -> None:
    """A one-line error, naming the file, when what the pages read from the run is missing or damaged."""
    if run.epoch == 0:
        raise VaelabError(f"{run.path} has no completed epoch yet; train it first")
    if "test" in run.metrics and not _is_number(_get(run.metrics["test"], "loss")):
        raise damaged(run.path / METRICS, 'its "test" entry holds no numeric "loss"')


def _family_note(model) -> str:
    """Beside the preset's name: the member of the family, where not the exercise's vae, or a vae's K codes."""
    if model.family != DEFAULT_FAMILY:
        return f" ({model.family})"
    return f" (k = {model.samples})" if model.samples > 1 else ""


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run_info(run_id: str, run: Run) -> dict[str, Any]:
    """The run as the page's run selector shows it."""
    config = run.config
    # A vqvae's objective adds a squared distance to nats: its page shows the negative ELBO, nats as a VAE's loss is.
    loss = _get(run.metrics.get("test"), "elbo_loss" if is_vqvae(run) else "loss")
    return {
        "id": run_id,
        "name": run.name,
        "preset": config.preset,
        "family": config.model.family,
        "family_note": _family_note(config.model),
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
        "kind": "map",
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
        "background": background(data.x_test),
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


def background(images: np.ndarray) -> list[float]:
    """The images' background colour, per channel in [0, 1]: the median of the border pixels of the first
    BACKGROUND_IMAGES (MNIST's and the shapes' 0, black). The drawing pad draws its ink on this paper."""
    x = images[:BACKGROUND_IMAGES]
    x = x[..., None] if x.ndim == 3 else x
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)  # (n, 2 * (height + width), C)
    return (np.median(border.reshape(-1, x.shape[-1]), axis=0) / 255).round(3).tolist()


def code_grid(run_id: str, run: Run, data: Dataset) -> dict[str, Any]:
    """A vqvae's page in place of the latent map: test images (one per class, or the first GRID_IMAGES of
    unlabelled data) with their L code indices, each of 0..codebook_size-1, for the page's code grid."""
    if data.labelled:
        picks = analysis.default_picks(data.y_test)
        indices = [picks[c] for c in sorted(picks)]
    else:
        indices = list(range(min(GRID_IMAGES, len(data.x_test))))
    codes = run.codes(data.x_test[indices])
    names = list(data.class_names or ()) if data.labelled else []
    return {
        "kind": "codes",
        "run": run_info(run_id, run),
        "codebook_size": run.config.model.codebook_size,
        "code_length": run.config.model.latent_dim,
        "class_names": names,
        "label_name": data.class_word,
        "image_shape": image_shape(run),
        "images": [
            {
                "index": index,
                "label": int(data.y_test[index]) if names else None,
                "codes": codes[k].tolist(),
                "image": image_b64(data.x_test[index] / 255.0),
            }
            for k, index in enumerate(indices)
        ],
    }


def page_map(run_id: str, run: Run, data: Dataset) -> dict[str, Any]:
    """What the page draws for the run: its latent map, or a vqvae's code grid."""
    if is_vqvae(run):
        return code_grid(run_id, run, data)
    codes = analysis.encode_test_set(run, data)
    table = analysis.class_table(run, data) if data.labelled else []
    return latent_map(run_id, run, codes, table, data)


def models(run: Run, *, dtype: str = "float32", encoder: bool = True) -> dict[str, Any]:
    """The run's generator (and encoder) described for the page's JavaScript network (webmodel); a vqvae's
    generator alone (its page edits codes and draws nothing)."""
    likelihood = run.config.model.pixel_likelihood  # the generator's image, as `Run.decode` shows it
    described = {"generator": webmodel.describe(run.generator, dtype=dtype, likelihood=likelihood)}
    if encoder and not is_vqvae(run):
        described["encoder"] = webmodel.describe(run.encoder, dtype=dtype)
    return described
