"""A dataset as vaelab uses it: 28x28 greyscale uint8 images, optional class labels, and a checksum.

Every source (MNIST, Fashion-MNIST, a folder of your images, an `.npz`) ends up as a `Dataset`;
models, training, analyses and the report only ever see this.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SIZE = 28  # every dataset's images are IMAGE_SIZE x IMAGE_SIZE, one grey channel (the exercise's MNIST)
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # what the networks take: height, width, channels
PIXELS = IMAGE_SIZE * IMAGE_SIZE
KEYS = ("x_train", "y_train", "x_test", "y_test")
BINARIZE_SEED = 2015  # the fixed binarised test set is drawn with this seed, so every evaluation sees the same one

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 arrays (n, 28, 28), labels (n,) or None, with where they came from and a checksum."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    source: str  # where the arrays came from, in words
    sha256: str  # of the four arrays' contents (see arrays_sha256): what a run records and checks
    name: str = "mnist"  # "mnist", "fashion-mnist", or the path the user gave
    class_names: tuple[str, ...] | None = None  # label k is class_names[k]; None when there are no labels
    path: Path | None = None  # the file or directory read, when there is one
    details: dict = field(default_factory=dict)  # e.g. how a test split was made, recorded with a run

    @property
    def labelled(self) -> bool:
        return self.y_test is not None and self.class_names is not None

    @property
    def title(self) -> str:
        """The dataset's name as a reader would write it: MNIST, Fashion-MNIST, or the folder's name."""
        return {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(self.name, Path(self.name).name)

    @property
    def class_word(self) -> str:
        """What one class is called in tables and captions: "digit" for MNIST, else "class"."""
        return "digit" if self.name == "mnist" else "class"

    def class_name(self, label: int) -> str:
        return self.class_names[label] if self.class_names else str(label)

    def as_tuples(self) -> tuple[tuple[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]:
        """`(x_train, y_train), (x_test, y_test)`, as `keras.datasets.mnist.load_data()` returns them."""
        return (self.x_train, self.y_train), (self.x_test, self.y_test)

    def record(self) -> dict:
        """What a run stores about its data in config.json (the arrays' checksum is stored beside it)."""
        return {"name": self.name, "source": self.source, **self.details}


def make_dataset(arrays: Arrays, *, name: str, source: str, class_names=None, path=None, details=None) -> Dataset:
    """A `Dataset` from the four arrays (labels may be None), with its checksum computed."""
    return Dataset(
        x_train=arrays["x_train"],
        y_train=arrays.get("y_train"),
        x_test=arrays["x_test"],
        y_test=arrays.get("y_test"),
        source=source,
        sha256=arrays_sha256(arrays),
        name=name,
        class_names=tuple(class_names) if class_names is not None else None,
        path=path,
        details=dict(details or {}),
    )


def scale_pixels(x: np.ndarray) -> np.ndarray:
    """uint8 images (n, 28, 28) -> float32 in [0, 1] with a channel axis (n, 28, 28, 1), as x/255."""
    return (np.asarray(x, dtype=np.float32) / 255.0)[..., None]


def binarized_test_set(data: Dataset) -> np.ndarray:
    """The test images binarised once (pixel = 1 with probability grey/255), always the same draw."""
    return binarize(scale_pixels(data.x_test))


def binarize(x: np.ndarray, start: int = 0) -> np.ndarray:
    """Test images x[start:...] in [0, 1] -> their rows of the fixed binarised test set.

    The draw for image i does not depend on how the set is cut, so a loader that binarises one batch
    at a time (`vaelab.data.batches`) gives the same pixels as `binarized_test_set`.
    """
    rng = np.random.default_rng(BINARIZE_SEED)
    rng.bit_generator.advance(start * PIXELS // 2)  # PCG64 makes two float32 draws per step; PIXELS is even
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def test_images(data: Dataset, *, binarized: bool) -> np.ndarray:
    """The test images a run is scored on: the fixed binarised set, or grey levels in [0, 1]."""
    return binarized_test_set(data) if binarized else scale_pixels(data.x_test)


def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def arrays_sha256(arrays: Arrays, hashes: dict[str, str] | None = None) -> str:
    """The dataset's checksum: sha256 over the four arrays' sha256, in a fixed order (a missing label array: "-")."""
    if hashes is None:
        hashes = {k: array_sha256(arrays[k]) if arrays.get(k) is not None else "-" for k in KEYS}
    return hashlib.sha256("\n".join(f"{k}:{hashes[k]}" for k in KEYS).encode()).hexdigest()
