"""Training snapshots: after each recorded epoch, fixed test images reconstructed and fixed prior draws decoded.

The recorded epochs (`recorded`) are every one of the first 100, then every 10th up to 1,000, every 100th up to
10,000, and so on, and the last epoch of each training: a paper's schedule of 3,280 epochs keeps 213 snapshots, not
3,280 (its .npz would otherwise grow to about 50 MB, rewritten after every epoch).

Two records in the run directory, written atomically after each recorded epoch (the .npz in the background,
while the next epoch trains; a run killed outright may miss its last epoch there, never in the PNGs):

    snapshots.npz             epoch (E,) the epochs recorded; index (n,) the test images' positions;
                              inputs (n, H, W[, C]); z (m, latent_dim) the prior draws, float32 (a vamp's: their
                              standard-normal noise, taken through the epoch's VampPrior);
                              reconstructions (E, n, H, W[, C]) and samples (E, m, H, W[, C]): decoded
                              pixels; every image stored as uint8 (level x 255, rounded; C for colour)
    snapshots/epoch-0001.png  one per recorded epoch, 3 rows: the inputs, their reconstructions, the prior draws decoded

The test images are the first of each class (the first ten images without labels), as the scoring
test set gives them (binarised for --binarize runs); the prior draws are seeded by the run's seed.
Reconstructions decode z_mean (a vqvae's: its codes, whose prior draws are uniform codebook indices, stored in z as
floats). A conditional model (cvae) encodes and decodes each test image with its label
and decodes prior draw k as class k modulo the number of classes. Snapshots use the inference path only (no
random draws), so they change nothing in training: a run with snapshots has the same losses as one without
(tested).
"""

from __future__ import annotations

import io
import time
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from vaelab._files import WriteError, atomic_path, write_bytes
from vaelab.data.batches import one_hot
from vaelab.data.dataset import as_stored
from vaelab.errors import VaelabError
from vaelab.models import likelihoods
from vaelab.run import SNAPSHOT_DIR, SNAPSHOTS

IMAGES = 10  # test images reconstructed (one per class for MNIST's ten digits)
PRIOR_DRAWS = 10  # latent points drawn from the prior once, decoded after every recorded epoch
SEED_OFFSET = 7919  # the prior draws' seed is the run's seed plus this, apart from the weights' seeds
EVERY_EPOCH_UP_TO = 100  # the epochs all recorded; beyond, every 10th, then every 100th from 1,000, ...


def recorded(epoch: int, last: int | None = None) -> bool:
    """Whether epoch `epoch` (1-based) gets a snapshot, in a training whose last epoch is `last`."""
    if epoch <= EVERY_EPOCH_UP_TO or epoch == last:
        return True
    return epoch % 10 ** max(0, len(str(epoch)) - 2) == 0


@dataclass(frozen=True)
class Snapshots:
    """A run's snapshots.npz, read back."""

    epoch: np.ndarray  # (E,)
    index: np.ndarray  # (n,) positions in the test set
    inputs: np.ndarray  # (n, H, W[, C]) uint8
    z: np.ndarray  # (m, latent_dim)
    reconstructions: np.ndarray  # (E, n, H, W[, C]) uint8
    samples: np.ndarray  # (E, m, H, W[, C]) uint8


def pick_images(labels: np.ndarray | None, count: int = IMAGES) -> np.ndarray:
    """The test images to follow: the first of each class (up to `count` classes), else the first `count`."""
    if labels is None:
        return np.arange(count)
    classes = np.unique(labels)[:count]
    return np.array([int(np.flatnonzero(labels == c)[0]) for c in classes])


def read_snapshots(run_dir: Path) -> Snapshots | None:
    """The run's snapshots, or None if it has none."""
    try:
        with np.load(run_dir / SNAPSHOTS, allow_pickle=False) as saved:
            return Snapshots(**{name: saved[name] for name in Snapshots.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, KeyError, ValueError, EOFError, TypeError, zipfile.BadZipFile, zlib.error):
        return None  # damaged (a disk that filled up): the run itself is still fine


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Levels in [0, 1] (n, H, W[, C]) -> uint8 (n, H, W) grey or (n, H, W, C) colour; a diverged network's NaNs
    become 0."""
    images = np.nan_to_num(np.asarray(images, np.float32))
    return as_stored(np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8))


def snapshot_png(inputs: np.ndarray, reconstructions: np.ndarray, samples: np.ndarray) -> bytes:
    """One epoch's picture: three rows of uint8 images with 2-pixel white gaps; grey images as dark strokes on
    white (MNIST's ink), colour images as they are."""
    from PIL import Image

    rows = [inputs, reconstructions, samples]
    grey = inputs.ndim == 3
    h, w = inputs.shape[1:3]
    canvas = np.full((len(rows) * (h + 2) - 2, max(len(r) for r in rows) * (w + 2) - 2, *inputs.shape[3:]), 255)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            canvas[i * (h + 2) : i * (h + 2) + h, j * (w + 2) : j * (w + 2) + w] = 255 - image if grey else image
    buf = io.BytesIO()
    Image.fromarray(canvas.astype(np.uint8), mode="L" if grey else "RGB").save(buf, format="png")
    return buf.getvalue()


class SnapshotCallback(keras.callbacks.Callback):
    """Records the snapshots after each recorded epoch (`recorded`); `seconds` keeps what each one cost (for the
    benchmark)."""

    def __init__(
        self,
        out: Path,
        models,
        x_test: np.ndarray,
        labels: np.ndarray | None,
        seed: int,
        first_epoch: int,
        classes: int | None = None,
    ):
        """`classes`: the number of classes of a conditional model, whose networks read the one-hot labels too."""
        super().__init__()
        self.out, self.models = out, models
        self.index = pick_images(None if labels is None else labels[: len(x_test)], min(IMAGES, len(x_test)))
        self.inputs = np.asarray(x_test[self.index], np.float32)
        latent_dim = models.generator.inputs[0].shape[-1]
        self.z = np.random.default_rng(seed + SEED_OFFSET).standard_normal((PRIOR_DRAWS, latent_dim)).astype("float32")
        self.pick = None  # the prior's mixture components the draws come from (one for N(0, I)), or None
        codes = getattr(models.vae, "codes", None)
        if codes is not None:  # a vqvae: its prior draws are codes, uniform over the codebook's indices
            self.z = np.random.default_rng(seed + SEED_OFFSET).integers(codes, size=self.z.shape).astype("float32")
        elif (components := models.prior().components) > 1:  # a vamp: z is the noise, the mixture moves with training
            self.pick = np.random.default_rng(seed + SEED_OFFSET + 1).integers(components, size=PRIOR_DRAWS)
        self.conditions = None  # a conditional model's one-hot labels: the test images', then the prior draws'
        if classes is not None:
            wanted = np.concatenate([np.asarray(labels)[self.index], np.arange(PRIOR_DRAWS) % classes])
            self.conditions = one_hot(wanted, classes)
        self.epochs: list[int] = []
        self.reconstructions: list[np.ndarray] = []
        self.samples: list[np.ndarray] = []
        self.seconds: list[float] = []  # what each snapshot kept training waiting
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaelab-snapshots")
        self._pending: Future | None = None
        earlier = read_snapshots(out)
        if earlier is not None and earlier.z.shape == self.z.shape and np.array_equal(earlier.index, self.index):
            keep = earlier.epoch <= first_epoch  # epochs beyond the checkpoint were never completed
            self.epochs = [int(e) for e in earlier.epoch[keep]]
            self.reconstructions = list(earlier.reconstructions[keep])
            self.samples = list(earlier.samples[keep])

    def on_epoch_end(self, epoch, logs=None):
        if not recorded(epoch + 1, (self.params or {}).get("epochs")):
            return
        started = time.perf_counter()
        encoded = self.models.encoder.predict_on_batch(self._with_labels(self.inputs))
        z_mean = encoded[0] if isinstance(encoded, list | tuple) else encoded  # a vqvae's encoder gives its codes
        draws = self.z if self.pick is None else self.models.prior().at(self.z, self.pick)
        codes = np.concatenate([np.asarray(z_mean), draws])
        decoded = self.models.generator.predict_on_batch(self._with_labels(codes))
        decoded = to_uint8(likelihoods.image(self.models.vae.likelihood, decoded))
        self.epochs.append(epoch + 1)
        self.reconstructions.append(decoded[: len(self.inputs)])
        self.samples.append(decoded[len(self.inputs) :])
        png = snapshot_png(to_uint8(self.inputs), self.reconstructions[-1], self.samples[-1])
        self._wait_for_writer()  # the previous epoch's .npz: long written by now, normally
        try:
            write_bytes(self.out / SNAPSHOT_DIR / f"epoch-{epoch + 1:04d}.png", png)
        except WriteError as err:
            raise self._cannot_save(err) from None
        # The .npz grows with the epochs and is rewritten whole: written in the background, while the next
        # epoch trains, so training does not wait for it (benchmarks/snapshot_cost.py).
        lists = (list(self.epochs), list(self.reconstructions), list(self.samples))
        self._pending = self._writer.submit(self._write_npz, *lists)
        self.seconds.append(time.perf_counter() - started)

    def _with_labels(self, inputs: np.ndarray):
        """A network's input: `inputs`, with their one-hot labels for a conditional model."""
        return inputs if self.conditions is None else [inputs, self.conditions[: len(inputs)]]

    def on_train_end(self, logs=None):
        self._wait_for_writer()

    def _write_npz(self, epochs: list[int], reconstructions: list[np.ndarray], samples: list[np.ndarray]) -> int:
        arrays = {
            "epoch": np.asarray(epochs),
            "index": self.index,
            "inputs": to_uint8(self.inputs),
            "z": self.z,
            "reconstructions": np.stack(reconstructions),
            "samples": np.stack(samples),
        }
        with atomic_path(self.out / SNAPSHOTS, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        return epochs[-1]

    def _wait_for_writer(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                pending.result()
            except WriteError as err:
                raise self._cannot_save(err) from None

    def _cannot_save(self, err: WriteError) -> VaelabError:
        return VaelabError(
            f"{err} (training snapshots); the run keeps its earlier epochs: make room, then "
            f"`vaelab train --resume {self.out}`"
        )
