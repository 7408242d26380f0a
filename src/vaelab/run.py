"""A run directory: the fixed set of files one training writes, and `load_run` to rebuild it.

    config.json      the resolved RunConfig, the run's id, vaelab/Keras/backend versions, the data checksum,
                     where it trained last (platform, processes, devices per process: vaelab.training.distribute)
    checkpoint.npz   weights (and optimizer state, for --resume) after the last completed epoch, the run's id; a
                     finished run published without the optimizer's state (`drop_optimizer_state`) no longer resumes
    history.csv      one row per completed epoch: loss (the objective, reconstruction + w * KL),
                     reconstruction_loss, kl_loss, elbo_loss (reconstruction + KL, the negative ELBO),
                     kl_weight (w), the val_ (test set) counterparts of the losses, the epoch's seconds; a betatc's
                     also mutual_information, total_correlation, dimension_kl, its KL's three terms; a vqvae's
                     has no kl_loss or kl_weight (its objective has no KL term), and has commitment_loss and
                     perplexity (codebook_loss too, before vaelab's EMA codebook; each with its val_ counterpart,
                     before seconds)
    metrics.json     final test-set figures (the same names), the run's id; written when training
                     completes; `evaluation` (ELBO, IWAE bound, latent diagnostics) once evaluated;
                     `disentanglement` (MIG, DCI, FactorVAE score, SAP: vaelab.analysis.disentanglement) once scored
                     against data with known factors; those two are removed when training trains on
    encoder.keras    the encoder, and the generator, in stock Keras layers that plain Keras opens
    generator.keras  (vaelab.training.export); written when training completes
    snapshots.npz    per recorded epoch (every one of the first 100, then fewer): fixed test images reconstructed,
                     fixed prior draws decoded (vaelab.training.snapshots)
    snapshots/       epoch-0001.png, ...: the same, one small picture per recorded epoch
    gmm.npz          after training, where asked for (`--sampler gmm`): a Gaussian mixture fitted to the training
                     images' codes, with the run id and epoch it was fitted at (vaelab.analysis.samplers); not in
                     RUN_FILES
    code_prior.npz   a vqvae's learned prior over its codes, written by `vaelab train-prior` (its contents:
                     vaelab.analysis.code_prior); removed with the rest when the run is trained again over itself
    .lock            held (flock) by the one process writing the run (process 0 of several); names it
                     (vaelab._lock)

Every file is written atomically, so an interrupted run leaves its last completed epoch usable.
Only the holder of the lock writes; a reader checks that the files it read belong to one run (the
same id, enough history for the checkpoint's epochs) and reads again if a writer was in between.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vaelab._files import atomic_path, write_json, write_text
from vaelab._lock import DirectoryLock, is_locked
from vaelab.config import PRESETS, TERMS, ModelConfig, RunConfig, TrainConfig, default_likelihood  # noqa: F401
from vaelab.errors import VaelabError
from vaelab.family import VQ_METRICS, all_terms  # noqa: F401 (TERMS, VQ_METRICS: still vaelab.run's names)

if TYPE_CHECKING:
    from vaelab.data import Dataset

CONFIG = "config.json"
CHECKPOINT = "checkpoint.npz"
HISTORY = "history.csv"
METRICS = "metrics.json"
KERAS_FILES = ("encoder.keras", "generator.keras")
SNAPSHOTS = "snapshots.npz"
SNAPSHOT_DIR = "snapshots"
RUN_FILES = (CONFIG, CHECKPOINT, HISTORY, METRICS, *KERAS_FILES, SNAPSHOTS)
RUN_DIRS = (SNAPSHOT_DIR,)
GMM_FILE = "gmm.npz"  # a Gaussian-latent run's mixture over its codes (vaelab.analysis.samplers)
CODE_PRIOR = "code_prior.npz"  # a vqvae's learned prior over its codes (vaelab.analysis.code_prior)
LATER_FILES = (GMM_FILE, CODE_PRIOR)  # written after training by the commands that need them; --overwrite too
LOSSES = ("loss", "reconstruction_loss", "kl_loss", "elbo_loss")  # logged for training and (val_) the test set
HISTORY_COLUMNS = ("epoch", *LOSSES, "kl_weight", *(f"val_{k}" for k in LOSSES), "seconds")
KL_COLUMNS = ("kl_loss", "kl_weight", "val_kl_loss")  # of HISTORY_COLUMNS, those a model without a KL term lacks


def optional_columns() -> tuple[str, ...]:
    """The columns history.csv has where the model logs them: every member's terms (`Family.terms`: the betatc's
    TERMS, the vqvae's VQ_METRICS, a registered member's) and their val_."""
    return tuple(k for m in all_terms() for k in (m, f"val_{m}"))


OPTIONAL_COLUMNS = optional_columns()  # the built-in members'


def history_columns(row: dict[str, float]) -> tuple[str, ...]:
    """history.csv's columns for rows like `row`: HISTORY_COLUMNS (less the KL_COLUMNS a vqvae's row lacks), with
    the OPTIONAL_COLUMNS it has before seconds."""
    kept = (k for k in HISTORY_COLUMNS[:-1] if k in row or k not in KL_COLUMNS)
    return (*kept, *(k for k in optional_columns() if k in row), HISTORY_COLUMNS[-1])


@dataclass
class Run:
    """A trained (or partly trained) network, rebuilt from its run directory."""

    path: Path
    config: RunConfig
    info: dict[str, Any]  # config.json's other entries: versions, data checksum
    models: Any  # vaelab.models.Models
    epoch: int  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    label: int | None = None  # the class a conditional model's `decode` draws when given no labels (generate --label)

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

    def require_trained(self) -> Run:
        """This run, if it has completed an epoch (weights to analyse, export or draw from); else a one-line error
        saying how to train it."""
        if self.epoch == 0:
            raise VaelabError(
                f"{self.path} has no completed epoch yet; train it with `vaelab train --resume {self.path}`"
            )
        return self

    def with_label(self, label: int | None, class_names: tuple[str, ...] = ()) -> Run:
        """This run, set to generate class `label` (`decode` draws it where given no labels); a one-line error for
        a run that reads no labels, or a label it cannot take (`class_names`, the data's, name the choices)."""
        from vaelab.data.dataset import class_range

        model = self.config.model
        if not model.conditional:
            raise VaelabError(
                f"--label picks the class a cvae generates; {self.name} (--model {model.family}) has no labels"
            )
        if label is None:
            names = f" ({class_range(class_names)})" if class_names else ""
            raise VaelabError(f"{self.name} is a {model.family}: say which class to generate with --label C{names}")
        if isinstance(label, bool) or not isinstance(label, int | np.integer) or not 0 <= label < model.classes:
            raise VaelabError(f"--label must be a class from 0 to {model.classes - 1}, got {label}")
        return dataclasses.replace(self, label=int(label))

    def load_data(self, dataset: str | None = None, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
        """The data this run was trained on (or `dataset`, which must hold the same arrays), verified."""
        return run_data(self.path, dataset, data_dir)

    def reconstruct(self, x: np.ndarray, batch_size: int = 1000, labels: np.ndarray | None = None) -> np.ndarray:
        """Images -> their reconstructions, as `decode` gives them: the decoded z_mean, the encoder's best guess of
        the code (a conditional model's with each image's label, `labels`, on both sides; a vqvae's: its codes)."""
        if not self.config.model.member.gaussian_latent:
            return self.decode(self.codes(x, batch_size), batch_size)
        z_mean, _ = self.encode(x, batch_size, labels=labels)
        return self.decode(z_mean, batch_size, labels=labels)

    @property
    def name(self) -> str:
        return self.path.name

    def encode(
        self, x: np.ndarray, batch_size: int = 1000, labels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, H, W[, C]) as uint8 or floats in [0, 1] -> (z_mean, z_log_var), each (n, latent_dim).

        A conditional model (cvae) encodes each image with its integer label, `labels` (n,)."""
        if not self.config.model.member.gaussian_latent:
            raise VaelabError(
                f"{self.name} is a {self.config.model.family}: its codes are codebook indices, not a Gaussian; "
                "use Run.codes"
            )
        z_mean, z_log_var = predict_padded(self.encoder, self._conditioned(self._images(x), labels), batch_size)
        return z_mean, z_log_var

    def codes(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """A vqvae's images -> their codes (n, L) int32: at each of the L positions the index of the nearest
        codebook vector. `decode` takes them back to images."""
        return predict_padded(self.encoder, self._images(x), batch_size)

    def _images(self, x: np.ndarray) -> np.ndarray:
        """Images (n, H, W[, C]) as uint8 or floats in [0, 1] -> floats (n, H, W, C), as the encoder reads them."""
        from vaelab.data import scale_pixels

        x = np.asarray(x)
        shape = self.config.model.input_shape
        return scale_pixels(x) if x.dtype == np.uint8 else x.astype(np.float32).reshape(-1, *shape)

    def decode(self, z: np.ndarray, batch_size: int = 1000, labels: np.ndarray | None = None) -> np.ndarray:
        """Latent points (n, latent_dim) -> decoded images, floats in [0, 1]: (n, H, W) grey, (n, H, W, C) colour.
        A vqvae's points are its codes (n, L), codebook indices (`codes`). Each pixel is the decoder's mean, or for
        the discretised logistic its location clipped to [0, 1]: the level its distribution is centred on; with black's
        own mass (logistic-black) that times pi (`vaelab.models.likelihoods.image`).

        A conditional model (cvae) decodes point i as class `labels[i]` (default: every point as `label`)."""
        from vaelab.data.dataset import as_stored
        from vaelab.models.likelihoods import image

        z = np.asarray(z, dtype=np.float32).reshape(-1, self.config.model.latent_dim)
        if labels is None and self.label is not None:
            labels = np.full(len(z), self.label)
        decoded = predict_padded(self.generator, self._conditioned(z, labels), batch_size)
        return as_stored(image(self.config.model.pixel_likelihood, decoded))

    def _conditioned(self, inputs: np.ndarray, labels: np.ndarray | None):
        """A network's input: `inputs`, and for a conditional model their one-hot `labels` (a one-line error
        without them); labels for a model that reads none are refused too."""
        from vaelab.data.batches import one_hot

        model = self.config.model
        if not model.conditional:
            if labels is not None:
                raise VaelabError(f"{self.name} (--model {model.family}) was trained without labels; leave out --label")
            return inputs
        if labels is None:
            raise VaelabError(f"{self.name} is a {model.family}: it encodes and decodes with a label; give --label")
        labels = np.asarray(labels)
        if labels.shape != (len(inputs),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= model.classes:
            raise VaelabError(f"{self.name}'s labels are integers from 0 to {model.classes - 1}, one per input")
        return [inputs, one_hot(labels, model.classes)]


def run_data(path: Path, dataset: str | None = None, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """The data the run in `path` was trained on (or `dataset`, which must hold the same arrays), verified, read
    with the run's `image_size` and `grey`."""
    from vaelab.data import BUILTIN, load_dataset

    info = read_info(path)
    config = RunConfig.from_dict(info["config"])
    name = dataset or config.dataset
    # The run's images are read as it read them; another built-in is read as it is (and refused below).
    options = (
        {} if name in BUILTIN and name != config.dataset else {"image_size": config.image_size, "grey": config.grey}
    )
    data = load_dataset(name, data_dir, **options)
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
    if config.image_size is not None:
        parts.append("x".join(str(d) for d in config.image_size))
    if config.grey:
        parts.append("grey")
    parts.append(config.preset)
    k = f"-k{config.model.k}" if config.model.k is not None else ""  # the iwae's or the vae's codes per image
    if config.model.family != ModelConfig.family:  # the member, and its K or the vamp's pseudo-inputs where given
        parts.append(config.model.family + k)
        if config.model.pseudo_inputs is not None:
            parts.append(f"pseudo-inputs{config.model.pseudo_inputs}")
    elif k:
        parts.append(k[1:])
    if config.model.codes is not None:
        parts.append(f"codes{config.model.codes}")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(config.train, f.name)
        if value != getattr(defaults, f.name):
            parts.append(f"{f.name.replace('_', '-')}{value}")
    preset = PRESETS[config.preset]
    if config.model.latent_dim != preset.latent_dim:
        parts.append(f"latent-dim{config.model.latent_dim}")
    if config.model.hidden is not None:
        parts.append("hidden" + "x".join(str(w) for w in config.model.hidden))
    if config.model.activation != preset.activation:
        parts.append(config.model.activation)
    if config.model.pixel_likelihood != default_likelihood(config.model.input_shape):
        parts.append(config.model.likelihood)
    if config.model.scale != preset.scale:
        parts.append(f"{config.model.scale}-scale")
    if config.model.filters is not None:
        parts.append("filters" + "x".join(str(w) for w in config.model.filters))
    return "-".join(parts)


def epochs_in_words(count: int) -> str:
    """`count` epochs in words: "1 epoch", "3 epochs"."""
    return f"{count} epoch{'' if count == 1 else 's'}"


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
    """config.json of the run in `path`, checked to be one (its configuration valid, its data checksum there)."""
    if not path.is_dir():
        raise VaelabError(f"no run at {path}: not a directory; train one with `vaelab train --out {path}`")
    file = path / CONFIG
    try:
        info = json.loads(file.read_bytes())
    except FileNotFoundError:
        raise VaelabError(
            f"no run at {path}: {CONFIG} is missing; train one with `vaelab train --out {path}`"
        ) from None
    except OSError as err:
        raise VaelabError(f"{file} is unreadable ({err.strerror}); check its permissions") from None
    except ValueError as err:
        raise damaged(file, f"not JSON: {err}") from None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise damaged(file, "no run configuration in it")
    if not isinstance(info.get("data_sha256"), str):
        raise damaged(file, "the data checksum is missing")
    try:
        RunConfig.from_dict(info["config"])
    except VaelabError as err:
        raise damaged(file, str(err)) from None
    return info


def damaged(file: Path, what: str) -> VaelabError:
    """The error for a run file that exists but does not hold what it should: which file, what to do."""
    if file.name == CHECKPOINT:
        todo = f"its weights are lost: train the run again (`vaelab train --out {file.parent} --overwrite`)"
    elif file.name == METRICS:
        todo = f"the weights are intact: `vaelab train --resume {file.parent}` writes it again"
    else:
        todo = f"train the run again (`vaelab train --out {file.parent} --overwrite`)"
    return VaelabError(f"{file} is damaged ({what}); {todo}")


# Rows per compiled predict call: a call of any length goes through in batches of this many, the last one padded
PREDICT_ROWS = 256  # a 15 x 15 latent grid in one batch; the padding of a few points costs less than a compilation


def predict_padded(model, inputs, batch_size: int = 1000):
    """`model.predict(inputs)` as NumPy arrays, in batches of `PREDICT_ROWS` (or `batch_size`, if fewer) rows, the
    last padded with zeros to that length and its padding's outputs dropped: Keras compiles the network anew for
    every batch length it meets, and figures ask for many lengths; now one compilation serves them all. Rows do
    not mix, so each row's output is the same in a call of any length."""
    arrays = inputs if isinstance(inputs, list) else [inputs]
    n, size = len(arrays[0]), min(batch_size, PREDICT_ROWS)
    if n == 0:
        return model.predict(inputs, batch_size=batch_size, verbose=0)
    parts = []
    for start in range(0, n, size):
        batch = [np.asarray(a[start : start + size]) for a in arrays]
        rows = len(batch[0])
        padded = [np.concatenate([b, np.zeros((size - rows, *b.shape[1:]), b.dtype)]) for b in batch]
        out = model.predict_on_batch(padded if isinstance(inputs, list) else padded[0])
        parts.append([np.asarray(o)[:rows] for o in (out if isinstance(out, list | tuple) else [out])])
    outputs = [np.concatenate(column) for column in zip(*parts, strict=True)]
    return outputs if len(outputs) > 1 else outputs[0]


def load_run(path: str | os.PathLike[str]) -> Run:
    """Rebuilds the encoder, generator and VAE of the run in `path`, with its saved weights."""
    from vaelab.models import build_models

    path = Path(path)
    for attempt in range(READ_ATTEMPTS):
        info = read_info(path)
        config = RunConfig.from_dict(info["config"])
        saved = (path / CHECKPOINT).exists()  # its weights replace the initial ones: no need to compute those
        models = build_models(
            config.model, seed=config.train.seed, binarize=config.train.binarize, initialize=not saved
        )
        try:
            run_id = info.get("run_id")
            epoch = load_checkpoint(path, models.vae, run_id=run_id) if saved else 0
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


# Variables a checkpoint may lack (older vaelab): the KL weight, a vqvae's codebook statistics (before its EMA codebook)
OPTIONAL_VARIABLES = ("kl_weight", "codebook/usage", "codebook/sums", "restarts/seed_generator_state")


def save_checkpoint(path: Path, vae, optimizer, epoch: int, run_id: str | None = None) -> None:
    """Writes the VAE's variables, the optimizer's and the epoch count to checkpoint.npz, atomically."""
    arrays: dict[str, np.ndarray] = {"epoch": np.asarray(epoch), "run_id": np.asarray(run_id or "")}
    arrays["model_paths"] = np.asarray([v.path for v in vae.variables])
    arrays.update({f"model/{i:03d}": np.asarray(v) for i, v in enumerate(vae.variables)})
    if optimizer is not None:
        arrays.update({f"optimizer/{i:03d}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    with atomic_path(path / CHECKPOINT, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def drop_optimizer_state(path: Path) -> int:
    """Rewrites a finished run's checkpoint.npz without the optimizer's state, atomically, to publish it: Adam's two
    slots per weight make up two thirds of the file. Returns how many arrays it dropped.

    The run loads, evaluates, generates and explores as before; what it can no longer do is resume its training.
    """
    with DirectoryLock(path, "dropping the optimizer's state"):  # no training may be writing it meanwhile
        if not run_is_complete(path):
            raise VaelabError(f"{path} has not finished its epochs; its optimizer's state is what resumes it")
        file = path / CHECKPOINT
        with np.load(file, allow_pickle=False) as saved:
            kept = {name: saved[name] for name in saved.files if not name.startswith("optimizer/")}
            dropped = len(saved.files) - len(kept)
        if dropped:
            with atomic_path(file, suffix=".npz") as tmp:
                np.savez(tmp, **kept)
    return dropped


def has_optimizer_state(path: Path) -> bool:
    """Whether the run's checkpoint.npz holds its optimizer's state, which resumes its training (a run published with
    `drop_optimizer_state` has none)."""
    try:
        with np.load(path / CHECKPOINT, allow_pickle=False) as saved:
            return any(name.startswith("optimizer/") for name in saved.files)
    except (OSError, ValueError, zipfile.BadZipFile):
        return True  # load_checkpoint names what is wrong with the file


def load_checkpoint(path: Path, vae, optimizer=None, run_id: str | None = None) -> int:
    """Loads checkpoint.npz into `vae` (and `optimizer`, when given); returns the epochs completed.

    With `run_id`, a checkpoint of another run (an --overwrite in progress) is `_Inconsistent`. A file
    that is truncated, altered, or holds arrays that do not fit the network is `damaged`.
    """
    file = path / CHECKPOINT
    try:
        with np.load(file, allow_pickle=False) as saved:
            saved_id = str(saved["run_id"]) if "run_id" in saved.files else ""
            if run_id and saved_id and saved_id != run_id:
                raise _Inconsistent(f"{file} belongs to another run than {path / CONFIG}")
            saved_paths = [str(p) for p in saved["model_paths"]]
            # Checkpoints made before the KL weight existed lack it; it is set per epoch anyway (1 for them). A
            # vqvae's made before its EMA codebook lack the codebook's statistics, which only training reads.
            variables = [v for v in vae.variables if v.path in saved_paths or v.path not in OPTIONAL_VARIABLES]
            if saved_paths != [v.path for v in variables]:
                raise damaged(file, f"it holds the weights of another network than {CONFIG} describes")
            opt_names = sorted(k for k in saved.files if k.startswith("optimizer/"))
            expected = {"epoch", "run_id", "model_paths", *(f"model/{i:03d}" for i in range(len(variables)))}
            strays = set(saved.files) - expected - set(opt_names)
            if strays or opt_names != [f"optimizer/{i:03d}" for i in range(len(opt_names))]:
                odd = sorted(strays) or [n for i, n in enumerate(opt_names) if n != f"optimizer/{i:03d}"]
                raise damaged(file, f"an entry named {odd[0]!r}, which vaelab never writes")
            values = [saved[f"model/{i:03d}"] for i in range(len(variables))]
            opt_values = [saved[k] for k in opt_names]
            epoch = int(saved["epoch"])
    except FileNotFoundError:
        raise damaged(file, "missing") from None
    except OSError as err:
        raise VaelabError(f"{file} is unreadable ({err.strerror}); check its permissions") from None
    except (KeyError, ValueError, EOFError, TypeError, zipfile.BadZipFile, zlib.error) as err:
        raise damaged(file, f"{type(err).__name__}: {err}") from None
    if optimizer is not None and len(opt_values) != len(optimizer.variables):
        raise VaelabError(f"{file} holds no matching optimizer state; train the run again without --resume")
    pairs = list(zip(variables, values, strict=True))
    if optimizer is not None:
        pairs += list(zip(optimizer.variables, opt_values, strict=True))
    for variable, value in pairs:  # all checked before any is loaded
        if tuple(value.shape) != tuple(variable.shape) or not np.all(np.isfinite(value)):
            raise damaged(file, f"{variable.path} has shape {list(value.shape)}, or values that are not finite")
    for variable, value in pairs:
        variable.assign(value)
    if epoch < 1:
        raise damaged(file, f"epoch count {epoch}")
    return epoch


def read_history(path: Path) -> list[dict[str, float]]:
    """history.csv's rows (epochs 1, 2, ... in order, every value a finite number); [] when there is none.

    Rows of runs made before β existed get their kl_weight (1) and elbo_loss (reconstruction + KL) filled in.
    """
    file = path / HISTORY
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return []
    except OSError as err:
        raise VaelabError(f"{file} is unreadable ({err.strerror}); check its permissions") from None
    except UnicodeDecodeError:
        raise damaged(file, "not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or "epoch" not in header or not set(header) <= {*HISTORY_COLUMNS, *optional_columns()}:
        raise damaged(file, f"unexpected columns {header}")
    rows = []
    for line, values in enumerate(reader, 2):
        try:
            if len(values) != len(header):
                raise ValueError(f"{len(values)} values for {len(header)} columns")
            row = {k: float(v) for k, v in zip(header, values, strict=True)}
            if not all(math.isfinite(v) for v in row.values()) or row["epoch"] != len(rows) + 1:
                raise ValueError("not the next epoch, or not a finite number")
        except ValueError as err:
            raise damaged(file, f"line {line}: {err}") from None
        rows.append(_complete_row({**row, "epoch": int(row["epoch"])}))
    return rows


def _complete_row(row: dict[str, float]) -> dict[str, float]:
    if "kl_loss" in row:  # (a vqvae's rows have no KL, and no weight of it)
        row.setdefault("kl_weight", 1.0)
    for prefix in ("", "val_"):
        if f"{prefix}reconstruction_loss" in row and f"{prefix}kl_loss" in row:
            row.setdefault(f"{prefix}elbo_loss", row[f"{prefix}reconstruction_loss"] + row[f"{prefix}kl_loss"])
    return row


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    out = io.StringIO()
    columns = history_columns(rows[0] if rows else {})
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (row[k] if k == "epoch" else f"{row[k]:.6f}") for k in columns})
    write_text(path / HISTORY, out.getvalue())


def read_metrics(path: Path) -> dict[str, Any]:
    """metrics.json, checked to hold a mapping whose `test` and `evaluation` (where present) are mappings of numbers
    (or lists of numbers: the evaluation's per-dimension diagnostics; besides them the evaluation's `binarized` flag
    and `likelihood` name, and the `bound` the figures are of, "log p(x)" or a cvae's "log p(x|y)")."""
    file = path / METRICS
    try:
        metrics = json.loads(file.read_bytes())
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise VaelabError(f"{file} is unreadable ({err.strerror}); check its permissions") from None
    except ValueError as err:
        raise damaged(file, f"not JSON: {err}") from None
    if not isinstance(metrics, dict):
        raise damaged(file, "not a mapping")
    for key in ("test", "evaluation"):
        entry = metrics.get(key, {})
        numbers = {k: v for k, v in entry.items() if k not in _NOT_NUMBERS} if isinstance(entry, dict) else None
        if numbers is None or not all(_is_number(v) or _is_numbers(v) for v in numbers.values()):
            raise damaged(file, f"its {key!r} entry is not a mapping of numbers")
        if not all(isinstance(entry.get(k, ""), str) for k in ("likelihood", "bound")):
            raise damaged(file, f"its {key!r} entry is not a mapping of numbers")
    tangle = metrics.get("disentanglement", {})
    if not isinstance(tangle, dict) or not all(_is_number(tangle.get(k, 0)) for k in _SCORES):
        raise damaged(file, "its 'disentanglement' entry is not a mapping of numbers")
    return metrics


_SCORES = ("images", "mig", "dci_disentanglement", "dci_completeness", "factorvae_score", "sap")  # read by the pages


_NOT_NUMBERS = ("binarized", "likelihood", "bound")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_numbers(value: Any) -> bool:
    return isinstance(value, list) and all(_is_number(v) for v in value)


# metrics.json's figures computed from a run's weights: stale once training changes them
WEIGHT_FIGURES = ("evaluation", "disentanglement")


def update_metrics(path: Path, *, drop: tuple[str, ...] = (), **entries: Any) -> dict[str, Any]:
    """Merges `entries` into metrics.json (training writes `test`; evaluation adds its own), without the entries
    named in `drop` (training drops `WEIGHT_FIGURES` when it has trained on).

    A damaged metrics.json is replaced: everything in it can be computed again.
    """
    try:
        old = read_metrics(path)
    except VaelabError:
        old = {}
    metrics = {**{k: v for k, v in old.items() if k not in drop}, **entries}
    write_json(path / METRICS, metrics)
    return metrics
