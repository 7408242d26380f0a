"""A learned prior over a vqvae's codes, p(z) = prod_i p(c_i | c_<i): an autoregressive network over the L positions.

van den Oord et al. fit a PixelCNN over the codes after training the VQ-VAE; vaelab's codes are L positions in a
row (no image grid), so the network is a MADE (Germain et al., 2015) over them: at position i it reads the
embeddings of the codes before i (the others masked to zero) and the position, through two dense ReLU layers, to
K logits. Training and scoring compute all L positions in one pass; sampling draws them one position at a time.
It trains after the vqvae (`vaelab train-prior RUN`), on the codes of the run's training images, a tenth of them
held out to stop training where their likelihood is best (`vaelab.config.PriorConfig`).

q(z|x) stays a point mass on z_q(x), so with this prior

    log p(x) >= log p(x|z_q(x)) + log p(z_q(x))

beside the uniform prior's log p(x|z_q(x)) - L log K: the two differ by how much better than uniform the prior
predicts the test images' codes (`vaelab.analysis.evaluate_codes`).

The run directory holds it as one file, written atomically:

    code_prior.npz   config (PriorConfig as JSON), run_id (of the vqvae run it belongs to: a prior of a run
                     trained again over it is refused), history (JSON: per epoch the codes' negative
                     log-likelihood in nats per image, on the training codes and the held-out ones), and the
                     network's variables: paths (their names) and weights/000, weights/001, ... (their values)
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import layers, ops

from vaelab._files import atomic_path
from vaelab._lock import DirectoryLock
from vaelab.config import PriorConfig
from vaelab.errors import VaelabError
from vaelab.run import CODE_PRIOR

if TYPE_CHECKING:
    from vaelab.data import Dataset
    from vaelab.run import Run

PRIOR_FILE = CODE_PRIOR  # (vaelab.run lists the run directory's files)


@keras.saving.register_keras_serializable(package="vaelab")
class PrecedingCodes(layers.Layer):
    """Embedded codes (b, L, E) -> (b, L, L*E + L): at position i the embeddings of positions before i, those at i
    and after zeroed, and the position one-hot: what p(c_i | c_<i) may read."""

    def call(self, embedded):
        length, width = embedded.shape[1], embedded.shape[2]
        before = np.tril(np.ones((length, length), np.float32), k=-1)  # [i, j] = 1 where j < i
        mask = np.repeat(before, width, axis=1)  # (L, L*E)
        flat = ops.reshape(embedded, (-1, 1, length * width))
        position = ops.zeros_like(embedded[..., :1]) + ops.eye(length, dtype=embedded.dtype)  # (b, L, L)
        return ops.concatenate([flat * ops.cast(mask, embedded.dtype), position], axis=-1)


def build_prior_network(length: int, codes: int, config: PriorConfig) -> keras.Model:
    """codes (b, L) int32 -> logits (b, L, K) of p(c_i | c_<i) at every position i."""
    init = keras.initializers.GlorotUniform(seed=config.seed)
    inputs = keras.Input(shape=(length,), dtype="int32", name="codes")
    embedded = layers.Embedding(codes, config.embedding, embeddings_initializer="uniform", name="embedding")(inputs)
    h = PrecedingCodes(name="preceding")(embedded)
    for i in range(2):
        h = layers.Dense(config.hidden, activation="relu", kernel_initializer=init, name=f"hidden_{i}")(h)
    logits = layers.Dense(codes, kernel_initializer=init, name="logits")(h)
    return keras.Model(inputs, logits, name="code_prior")


class CodePrior:
    """A trained prior over the L codes of a vqvae with K codebook vectors: `log_prob` and `sample`."""

    def __init__(self, network: keras.Model, config: PriorConfig, history: list[dict[str, float]], run_id: str):
        self.network, self.config, self.history, self.run_id = network, config, history, run_id
        self.length, self.codes = network.input_shape[1], network.output_shape[-1]

    def log_prob(self, codes: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """log p(z) of each row of codes (n, L), in nats: (n,) float64."""
        codes = np.asarray(codes, np.int32).reshape(-1, self.length)
        logits = np.asarray(self.network.predict(codes, batch_size=batch_size, verbose=0), np.float64)
        log_p = logits - _logsumexp(logits)
        return np.take_along_axis(log_p, codes[..., None], axis=-1)[..., 0].sum(axis=1)

    def sample(self, count: int, seed: int = 0) -> np.ndarray:
        """`count` draws from the prior, position after position: (count, L) int32."""
        rng = np.random.default_rng(seed)
        codes = np.zeros((count, self.length), np.int32)
        for i in range(self.length):  # position i reads only the codes before it: the others may be anything
            logits = np.asarray(self.network.predict(codes, batch_size=1000, verbose=0), np.float64)[:, i]
            gumbel = -np.log(-np.log(rng.uniform(size=logits.shape)))
            codes[:, i] = np.argmax(logits + gumbel, axis=-1)  # a draw from softmax(logits): the Gumbel-max trick
        return codes

    def save(self, path: Path) -> None:
        """Writes code_prior.npz into the run directory `path`, atomically (the module docstring's contents)."""
        arrays = {
            "config": np.asarray(json.dumps(asdict(self.config))),
            "run_id": np.asarray(self.run_id),
            "history": np.asarray(json.dumps(self.history)),
            "paths": np.asarray([v.path for v in self.network.weights]),
        }
        arrays.update({f"weights/{i:03d}": np.asarray(v) for i, v in enumerate(self.network.weights)})
        with atomic_path(path / PRIOR_FILE, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=-1, keepdims=True)
    return top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


def train_prior(run: Run, data: Dataset, config: PriorConfig | None = None, *, verbose: int | str = 0) -> CodePrior:
    """Trains a prior over the codes of the vqvae `run`'s training images (its training subset) and saves it in the
    run directory; returns it."""
    config = config or PriorConfig()
    config.validate()
    model = run.config.model
    if not model.member.code_prior:
        raise VaelabError(
            f"{run.name} is a {model.family}: its prior is fixed; train-prior fits a prior over a vqvae's codes "
            "(train one with --model vqvae)"
        )
    codes = run.codes(data.x_train[: run.config.train.train_subset])
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(codes))
    held = max(1, round(config.held_out * len(codes)))
    fit_codes, held_codes = codes[order[held:]], codes[order[:held]]
    keras.utils.set_random_seed(config.seed)
    network = build_prior_network(model.latent_dim, model.codebook_size, config)
    network.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    fitted = network.fit(
        fit_codes,
        fit_codes,
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(held_codes, held_codes),
        callbacks=[stop],
        verbose=verbose,
    )
    length = model.latent_dim  # Keras averages the cross-entropy over the positions: per image it is L times that
    history = [
        {"epoch": i + 1, "nll": length * loss, "val_nll": length * val}
        for i, (loss, val) in enumerate(zip(fitted.history["loss"], fitted.history["val_loss"], strict=True))
    ]
    prior = CodePrior(network, config, history, str(run.info.get("run_id", "")))
    with DirectoryLock(run.path, "training a prior over codes"):  # no training or evaluation writes meanwhile
        prior.save(run.path)
    return prior


def ensure_prior(run: Run, data: Dataset, log=None) -> bool:
    """Trains the vqvae `run`'s prior over codes unless it has one of this run; whether it trained one now."""
    try:
        if load_prior(run) is not None:
            return False
    except VaelabError:  # a damaged prior, or one of an earlier run trained in the same directory: fit it again
        pass
    if log is not None:
        log(f"vaelab: training a prior over the codes of {run.path}")
    train_prior(run, data)
    return True


def load_prior(run: Run) -> CodePrior | None:
    """The prior over codes saved in the vqvae `run`'s directory, or None where there is none."""
    file = run.path / PRIOR_FILE
    if not run.config.model.member.code_prior or not file.exists():
        return None
    todo = f"train it again with `vaelab train-prior {run.path}`"
    try:
        with np.load(file, allow_pickle=False) as saved:
            config = PriorConfig(**json.loads(str(saved["config"])))
            run_id, history = str(saved["run_id"]), json.loads(str(saved["history"]))
            paths = [str(p) for p in saved["paths"]]
            values = [saved[f"weights/{i:03d}"] for i in range(len(paths))]
    except OSError as err:
        raise VaelabError(f"{file} is unreadable ({err.strerror or err}); check its permissions") from None
    except (KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise VaelabError(f"{file} is damaged ({type(err).__name__}: {err}); {todo}") from None
    if run_id != str(run.info.get("run_id", "")):
        raise VaelabError(f"{file} belongs to an earlier run trained in {run.path}; {todo}")
    network = build_prior_network(run.config.model.latent_dim, run.config.model.codebook_size, config)
    if paths != [v.path for v in network.weights] or any(
        tuple(v.shape) != value.shape for v, value in zip(network.weights, values, strict=True)
    ):
        raise VaelabError(f"{file} holds another network than this run's codes need; {todo}")
    for variable, value in zip(network.weights, values, strict=True):
        variable.assign(value)
    return CodePrior(network, config, history, run_id)


def uniform_nll(run: Run) -> float:
    """-log p(z) of any codes under the uniform prior, L log K nats: what a learned prior is compared with."""
    return run.config.model.latent_dim * math.log(run.config.model.codebook_size)
