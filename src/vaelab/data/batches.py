"""The batches `fit` trains on: images read a batch at a time, in an order drawn from (seed, epoch).

One loader for every dataset, in memory or in shards on disk (`vaelab.data.shards`): it reads the
images of one batch (uint8), scales them to [0, 1] and, for a multi-process run, hands over only
this process's slice of the batch (Keras puts the slices of all processes together). Memory stays
that of a batch, plus the epoch's order: 4 bytes per image, against 784 for a 28x28 grey image itself.

The order of epoch e is the permutation that `numpy.random.RandomState(s).permutation` draws, s
from (seed, e): the order in which Keras' own shuffling visited the images when vaelab seeded
numpy's global generator the same way, so runs made before this loader existed repeat exactly, and
a resumed run draws the same batches as one that never stopped.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from vaelab.data.dataset import binarize, scale_pixels


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s order: one number from (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits images 0..count-1 (int32 while that suffices)."""
    order = np.arange(count, dtype=np.int32 if count < 2**31 else np.int64)
    np.random.RandomState(epoch_seed(seed, epoch)).shuffle(order)  # the same as .permutation(count), in place
    return order


class Batches(keras.utils.PyDataset):
    """Batches of `batch_size` images from `images`, as floats in [0, 1] of shape (b, H, W, C); with `labels`,
    batches ((images, one-hot labels),) for a conditional model's two inputs (labels (b, `classes`) float32).

    `images`: uint8 images (n, H, W) grey or (n, H, W, C) colour, an array or anything with the same
    `take(indices, axis=0)` (`ShardedArray`); only the first `count` are used. `seed`: shuffle every epoch (set by
    `EpochOrder`); None keeps the images in order. `part=(k, K)`: only the k-th of K equal slices of
    every batch (a multi-process run). `binarized`: the fixed binarised draw of each image (the test set).
    `labels`: the images' integer labels (n,), read with the same indices (only a conditional model takes them).
    """

    def __init__(
        self,
        images,
        batch_size: int,
        *,
        count: int | None = None,
        seed: int | None = None,
        part: tuple[int, int] = (0, 1),
        binarized: bool = False,
        labels: np.ndarray | None = None,
        classes: int | None = None,
    ):
        # One worker, no threads or processes: a batch is read in the training loop itself, in order,
        # which keeps the epoch's order a plain function of (seed, epoch).
        super().__init__(workers=1, use_multiprocessing=False)
        self.images = images
        self.count = len(images) if count is None else min(count, len(images))
        self.batch_size = batch_size
        self.seed = seed
        self.part = part
        self.binarized = binarized
        self.labels = labels
        self.classes = classes
        self.epoch = 0
        self._order: np.ndarray | None = None

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    @property
    def num_batches(self) -> int:
        return len(self)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._order = epoch, None

    def order(self) -> np.ndarray | None:
        """This epoch's order of the images (None: in order)."""
        if self.seed is not None and self._order is None:
            self._order = epoch_order(self.count, self.seed, self.epoch)
        return self._order if self.seed is not None else None

    def positions(self, index: int) -> tuple[int, int]:
        """Where this process's slice of batch `index` lies in the epoch's order: [start, stop)."""
        start = index * self.batch_size
        size = min(self.batch_size, self.count - start)
        k, parts = self.part
        share = size // parts
        return start + k * share, start + (k + 1) * share

    def __getitem__(self, index: int) -> np.ndarray | tuple[tuple[np.ndarray, np.ndarray]]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        start, stop = self.positions(index)
        order = self.order()
        where = slice(start, stop) if order is None else order[start:stop]
        x = scale_pixels(self.images[where] if order is None else self.images.take(where, axis=0))
        x = binarize(x, start) if self.binarized else x
        if self.labels is None:
            return x
        return ((x, one_hot(np.asarray(self.labels)[where], self.classes)),)


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """Integer labels (n,) -> their one-hot rows (n, classes), float32: what a conditional model reads."""
    return np.eye(classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


class EpochOrder(keras.callbacks.Callback):
    """Tells the training batches which epoch begins, so each epoch draws its own order."""

    def __init__(self, batches: Batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)
