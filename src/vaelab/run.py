"""A run directory: the fixed set of files one training writes, and `load_run` to rebuild it.

    config.json      the resolved RunConfig, vaelab/Keras/backend versions, the data checksum
    checkpoint.npz   weights (and optimizer state, for --resume) after the last completed epoch
    history.csv      one row per completed epoch: loss, reconstruction_loss, kl_loss, their val_
                     (test set) counterparts, and the epoch's seconds
    metrics.json     final test-set figures; written when training completes

Every file is written atomically, so an interrupted run leaves its last completed epoch usable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from vaelab._files import atomic_path, write_json, write_text
from vaelab.config import PRESETS, RunConfig, TrainConfig
from vaelab.errors import VaelabError

CONFIG = "config.json"
CHECKPOINT = "checkpoint.npz"
HISTORY = "history.csv"
METRICS = "metrics.json"
RUN_FILES = (CONFIG, CHECKPOINT, HISTORY, METRICS)
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

    @property
    def name(self) -> str:
        return self.path.name

    def encode(self, x: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, 28, 28[, 1]) as uint8 or floats in [0, 1] -> (z_mean, z_log_var), each (n, latent_dim)."""
        from vaelab.data import scale_pixels

        x = np.asarray(x)
        x = scale_pixels(x) if x.dtype == np.uint8 else x.astype(np.float32).reshape(-1, 28, 28, 1)
        z_mean, z_log_var = self.encoder.predict(x, batch_size=batch_size, verbose=0)
        return np.asarray(z_mean), np.asarray(z_log_var)

    def decode(self, z: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Latent points (n, latent_dim) -> decoded images (n, 28, 28), floats in [0, 1]."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.config.model.latent_dim)
        return np.asarray(self.generator.predict(z, batch_size=batch_size, verbose=0)).reshape(-1, 28, 28)


def run_dir_name(config: RunConfig) -> str:
    """A run's directory name: the preset, then every setting that differs from the defaults."""
    parts = [config.preset]
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(config.train, f.name)
        if value != getattr(defaults, f.name):
            parts.append(f"{f.name.replace('_', '-')}{value}")
    if config.model.latent_dim != PRESETS[config.preset].latent_dim:
        parts.append(f"latent-dim{config.model.latent_dim}")
    return "-".join(parts)


def run_info(config: RunConfig, data_sha256: str) -> dict[str, Any]:
    """What config.json holds: the configuration plus what else determines the run's numbers."""
    import keras

    from vaelab import __version__

    return {
        "config": config.to_dict(),
        "data_sha256": data_sha256,
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
    info = read_info(path)
    config = RunConfig.from_dict(info["config"])
    models = build_models(config.model, seed=config.train.seed, binarize=config.train.binarize)
    epoch = load_checkpoint(path, models.vae) if (path / CHECKPOINT).exists() else 0
    return Run(
        path=path,
        config=config,
        info={k: v for k, v in info.items() if k != "config"},
        models=models,
        epoch=epoch,
        history=read_history(path)[:epoch],
        metrics=read_metrics(path),
    )


def save_checkpoint(path: Path, vae, optimizer, epoch: int) -> None:
    """Writes the VAE's variables, the optimizer's and the epoch count to checkpoint.npz, atomically."""
    arrays: dict[str, np.ndarray] = {"epoch": np.asarray(epoch)}
    arrays["model_paths"] = np.asarray([v.path for v in vae.variables])
    arrays.update({f"model/{i:03d}": np.asarray(v) for i, v in enumerate(vae.variables)})
    if optimizer is not None:
        arrays.update({f"optimizer/{i:03d}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    with atomic_path(path / CHECKPOINT, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_checkpoint(path: Path, vae, optimizer=None) -> int:
    """Loads checkpoint.npz into `vae` (and `optimizer`, when given); returns the epochs completed."""
    file = path / CHECKPOINT
    try:
        with np.load(file, allow_pickle=False) as saved:
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
