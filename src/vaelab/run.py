"""A run directory: the fixed set of files one training writes, and `load_run` to rebuild it.

    config.json      the resolved RunConfig, the run's id, vaelab/Keras/backend versions, the data checksum
    checkpoint.npz   weights (and optimizer state, for --resume) after the last completed epoch, the run's id
    history.csv      one row per completed epoch: loss, reconstruction_loss, kl_loss, their val_
                     (test set) counterparts, and the epoch's seconds
    metrics.json     final test-set figures, the run's id; written when training completes
    encoder.keras    the encoder, and the generator, in stock Keras layers that plain Keras opens
    generator.keras  (vaelab.export); written when training completes
    .lock            held (flock) by the one process writing the run; names it (vaelab._lock)

Every file is written atomically, so an interrupted run leaves its last completed epoch usable.
Only the holder of the lock writes; a reader checks that the files it read belong to one run (the
same id, enough history for the checkpoint's epochs) and reads again if a writer was in between.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vaelab._files import atomic_path, write_json, write_text
from vaelab._lock import is_locked
from vaelab.config import PRESETS, RunConfig, TrainConfig
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    from vaelab.data import Dataset

CONFIG = "config.json"
CHECKPOINT = "checkpoint.npz"
HISTORY = "history.csv"
METRICS = "metrics.json"
KERAS_FILES = ("encoder.keras", "generator.keras")
RUN_FILES = (CONFIG, CHECKPOINT, HISTORY, METRICS, *KERAS_FILES)
HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "reconstruction_loss",
    "kl_loss",
    "val_loss",
    "val_reconstruction_loss",
    "val_kl_loss",
    "seconds",
)


@dataclass
class Run:
    """A trained (or partly trained) network, rebuilt from its run directory."""

    path: Path
    config: RunConfig
    info: dict[str, Any]  # config.json's other entries: versions, data checksum
    models: Any  # vaelab.model.Models
    epoch: int  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def encoder(self):
        return self.models.encoder

    @property
    def generator(self):
        return self.models.generator

    @property
    def vae(self):
        return self.models.vae

    @property
    def complete(self) -> bool:
        return self.epoch >= self.config.train.epochs and bool(self.metrics)

    def load_data(self, dataset: str | None = None, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
        """The data this run was trained on (or `dataset`, which must hold the same arrays), verified."""
        return run_data(self.path, dataset, data_dir)

    def reconstruct(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Images -> their reconstructions (n, 28, 28): the decoded z_mean, the encoder's best guess of the code."""
        z_mean, _ = self.encode(x, batch_size)
        return self.decode(z_mean, batch_size)

    @property
    def name(self) -> str:
        return self.path.name

    def encode(self, x: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, 28, 28[, 1]) as uint8 or floats in [0, 1] -> (z_mean, z_log_var), each (n, latent_dim)."""
        from vaelab.data import IMAGE_SHAPE, scale_pixels

        x = np.asarray(x)
        x = scale_pixels(x) if x.dtype == np.uint8 else x.astype(np.float32).reshape(-1, *IMAGE_SHAPE)
        z_mean, z_log_var = self.encoder.predict(x, batch_size=batch_size, verbose=0)
        return np.asarray(z_mean), np.asarray(z_log_var)

    def decode(self, z: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Latent points (n, latent_dim) -> decoded images (n, 28, 28), floats in [0, 1]."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.config.model.latent_dim)
        return np.asarray(self.generator.predict(z, batch_size=batch_size, verbose=0))[..., 0]


def run_data(path: Path, dataset: str | None = None, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """The data the run in `path` was trained on (or `dataset`, which must hold the same arrays), verified."""
    from vaelab.data import load_dataset

    info = read_info(path)
    data = load_dataset(dataset or RunConfig.from_dict(info["config"]).dataset, data_dir)
    if data.sha256 != info.get("data_sha256", data.sha256):
        raise VaelabError(
            f"{path} was trained on other data than {data.title} ({data.source}); "
            "leave out --dataset to use the run's own"
        )
    return data


def run_dir_name(config: RunConfig) -> str:
    """A run's directory name: the dataset (unless MNIST), the preset, then every setting that differs from the
    defaults, e.g. `mlp-epochs2` or `fashion-mnist-conv`."""
    parts = [] if config.dataset == "mnist" else [Path(config.dataset).stem or "data"]
    parts.append(config.preset)
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(config.train, f.name)
        if value != getattr(defaults, f.name):
            parts.append(f"{f.name.replace('_', '-')}{value}")
    if config.model.latent_dim != PRESETS[config.preset].latent_dim:
        parts.append(f"latent-dim{config.model.latent_dim}")
    return "-".join(parts)


def new_run_info(config: RunConfig, data: Dataset) -> dict[str, Any]:
    """What config.json holds for a new run: its id, the configuration, what else determines its numbers."""
    import keras

    from vaelab import __version__

    return {
        "run_id": uuid.uuid4().hex,
        "config": config.to_dict(),
        "data_sha256": data.sha256,
        "data": data.record(),
        "machine": machine(),
        "versions": {
            "vaelab": __version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "backend_version": _backend_version(keras.backend.backend()),
        },
    }


def machine() -> str:
    """The CPU model and core count, so timings in a run can be read with the machine that made them."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def _backend_version(name: str) -> str:
    import importlib.metadata

    package = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch", "numpy": "numpy"}.get(name, name)
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_info(path: Path, info: dict[str, Any]) -> None:
    write_json(path / CONFIG, info)


def read_info(path: Path) -> dict[str, Any]:
    """config.json of the run in `path`, checked to be one."""
    if not path.is_dir():
        raise VaelabError(f"no run at {path}: not a directory; train one with `vaelab train --out {path}`")
    try:
        info = json.loads((path / CONFIG).read_text())
    except FileNotFoundError:
        raise VaelabError(
            f"no run at {path}: {CONFIG} is missing; train one with `vaelab train --out {path}`"
        ) from None
    except (OSError, ValueError) as err:
        raise VaelabError(f"{path / CONFIG} is unreadable ({err}); train the run again") from None
    if not isinstance(info, dict) or "config" not in info:
        raise VaelabError(f"{path / CONFIG} is not a vaelab run configuration")
    return info


def load_run(path: str | os.PathLike[str]) -> Run:
    """Rebuilds the encoder, generator and VAE of the run in `path`, with its saved weights."""
    from vaelab.model import build_models

    path = Path(path)
    for attempt in range(READ_ATTEMPTS):
        info = read_info(path)
        config = RunConfig.from_dict(info["config"])
        models = build_models(config.model, seed=config.train.seed, binarize=config.train.binarize)
        try:
            run_id = info.get("run_id")
            epoch = load_checkpoint(path, models.vae, run_id=run_id) if (path / CHECKPOINT).exists() else 0
            history = read_history(path)
            metrics = read_metrics(path)
            if len(history) < epoch:
                raise _Inconsistent(f"{path / HISTORY} holds {len(history)} epochs, {path / CHECKPOINT} {epoch}")
            if metrics and run_id and metrics.get("run_id", run_id) != run_id:
                raise _Inconsistent(f"{path / METRICS} belongs to another run than {path / CONFIG}")
        except _Inconsistent as err:
            if attempt + 1 == READ_ATTEMPTS or not is_locked(path):
                raise VaelabError(f"{err}: the run is damaged or was overwritten half-way; train it again") from None
            time.sleep(0.2 * (attempt + 1))  # a writer is at work and was between two files: read again
            continue
        return Run(
            path=path,
            config=config,
            info={k: v for k, v in info.items() if k != "config"},
            models=models,
            epoch=epoch,
            history=history[:epoch],
            metrics=metrics,
        )
    raise AssertionError("unreachable")


READ_ATTEMPTS = 5


class _Inconsistent(VaelabError):
    """The run's files belong to different runs or epochs: a writer was at work, or the run is damaged."""


def run_is_complete(path: Path) -> bool:
    """Whether the run in `path` finished all its epochs (metrics.json written), read without building it."""
    info = read_info(path)
    metrics = read_metrics(path)
    return bool(metrics) and metrics.get("epochs") == info["config"]["train"]["epochs"]


def save_checkpoint(path: Path, vae, optimizer, epoch: int, run_id: str | None = None) -> None:
    """Writes the VAE's variables, the optimizer's and the epoch count to checkpoint.npz, atomically."""
    arrays: dict[str, np.ndarray] = {"epoch": np.asarray(epoch), "run_id": np.asarray(run_id or "")}
    arrays["model_paths"] = np.asarray([v.path for v in vae.variables])
    arrays.update({f"model/{i:03d}": np.asarray(v) for i, v in enumerate(vae.variables)})
    if optimizer is not None:
        arrays.update({f"optimizer/{i:03d}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    with atomic_path(path / CHECKPOINT, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_checkpoint(path: Path, vae, optimizer=None, run_id: str | None = None) -> int:
    """Loads checkpoint.npz into `vae` (and `optimizer`, when given); returns the epochs completed.

    With `run_id`, a checkpoint of another run (an --overwrite in progress) is `_Inconsistent`.
    """
    file = path / CHECKPOINT
    try:
        with np.load(file, allow_pickle=False) as saved:
            saved_id = str(saved["run_id"]) if "run_id" in saved.files else ""
            if run_id and saved_id and saved_id != run_id:
                raise _Inconsistent(f"{file} belongs to another run than {path / CONFIG}")
            if [str(p) for p in saved["model_paths"]] != [v.path for v in vae.variables]:
                raise VaelabError(f"{file} holds the weights of another network than {path / CONFIG} describes")
            values = [saved[f"model/{i:03d}"] for i in range(len(vae.variables))]
            opt_values = [saved[k] for k in sorted(saved.files) if k.startswith("optimizer/")]
            epoch = int(saved["epoch"])
    except (OSError, KeyError, ValueError, EOFError) as err:
        raise VaelabError(f"{file} is unreadable ({err}); train the run again") from None
    for variable, value in zip(vae.variables, values, strict=True):
        variable.assign(value)
    if optimizer is not None:
        if len(opt_values) != len(optimizer.variables):
            raise VaelabError(f"{file} holds no matching optimizer state; train the run again without --resume")
        for variable, value in zip(optimizer.variables, opt_values, strict=True):
            variable.assign(value)
    return epoch


def read_history(path: Path) -> list[dict[str, float]]:
    try:
        text = (path / HISTORY).read_text()
    except FileNotFoundError:
        return []
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows]


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (row[k] if k == "epoch" else f"{row[k]:.6f}") for k in HISTORY_COLUMNS})
    write_text(path / HISTORY, out.getvalue())


def read_metrics(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / METRICS).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise VaelabError(f"{path / METRICS} is unreadable ({err}); run `vaelab train --resume {path}`") from None


def update_metrics(path: Path, **entries: Any) -> dict[str, Any]:
    """Merges `entries` into metrics.json (training writes `test`; evaluation adds its own)."""
    metrics = {**read_metrics(path), **entries}
    write_json(path / METRICS, metrics)
    return metrics
