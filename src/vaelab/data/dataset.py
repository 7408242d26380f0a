"""A dataset as vaelab uses it: uint8 images of one shape, optional class labels, and a checksum.

Every source (MNIST, Fashion-MNIST, the generated colour shapes, a folder of your images, an `.npz`)
ends up as a `Dataset`; models, training, analyses and the report only ever see this. Grey images are
stored (n, H, W) and colour images (n, H, W, C); either way `Dataset.image_shape` is (H, W, C), the
shape the networks take.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SIZE = 28  # the exercise's MNIST images are IMAGE_SIZE x IMAGE_SIZE, one grey channel
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # the exercise's shape (height, width, channels): the default
PIXELS = IMAGE_SIZE * IMAGE_SIZE
KEYS = ("x_train", "y_train", "x_test", "y_test")
BINARIZE_SEED = 2015  # the fixed binarised test set is drawn with this seed, so every evaluation sees the same one

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Factors:
    """The known factors of variation of the test images: `values` (n, K), row k those of test image k, column k
    named `names[k]`; a categorical factor's numbers are labels (shape, colour), an ordinal one's are values (size,
    position). What the disentanglement metrics (vaelab.analysis.disentanglement) score a code against."""

    values: np.ndarray
    names: tuple[str, ...]
    categorical: tuple[bool, ...]

    def __post_init__(self):
        if self.values.ndim != 2 or not self.values.shape[1] == len(self.names) == len(self.categorical):
            raise ValueError(f"factors {self.values.shape}: one column per name of {self.names}")

    def __getitem__(self, rows: slice) -> Factors:
        """The factors of the test images `rows`."""
        return Factors(self.values[rows], self.names, self.categorical)


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 arrays (n, H, W) or (n, H, W, C), labels (n,) or None, with where they came from and a
    checksum."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    source: str  # where the arrays came from, in words
    sha256: str  # of the four arrays' contents (see arrays_sha256): what a run records and checks
    name: str = "mnist"  # a built-in dataset's name ("mnist", "cifar10", ...), or the path the user gave
    class_names: tuple[str, ...] | None = None  # label k is class_names[k]; None when there are no labels
    path: Path | None = None  # the file or directory read, when there is one
    details: dict = field(default_factory=dict)  # e.g. how a test split was made, recorded with a run
    title: str = ""  # the name as a reader would write it (MNIST, CIFAR-10, ...); "": the folder's or file's name
    factors: Factors | None = None  # the test images' known factors of variation, where the data has them

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", Path(self.name).name)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every image: what the networks take."""
        return image_shape(self.x_train)

    @property
    def labelled(self) -> bool:
        return self.y_test is not None and self.class_names is not None

    @property
    def class_word(self) -> str:
        """What one class is called in tables and captions: "digit" for MNIST and SVHN, else "class"."""
        return "digit" if self.name in ("mnist", "svhn") else "class"

    def class_name(self, label: int) -> str:
        return self.class_names[label] if self.class_names else str(label)

    def as_tuples(self) -> tuple[tuple[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]:
        """`(x_train, y_train), (x_test, y_test)`, as `keras.datasets.mnist.load_data()` returns them."""
        return (self.x_train, self.y_train), (self.x_test, self.y_test)

    def record(self) -> dict:
        """What a run stores about its data in config.json (the arrays' checksum is stored beside it)."""
        return {"name": self.name, "source": self.source, **self.details}


def make_dataset(
    arrays: Arrays,
    *,
    name: str,
    source: str,
    class_names=None,
    path=None,
    details=None,
    title: str = "",
    factors=None,
) -> Dataset:
    """A `Dataset` from the four arrays (labels may be None), with its checksum computed; `title` as `Dataset.title`,
    and the test images' `factors` where known."""
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
        title=title,
        factors=factors,
    )


def class_range(names: tuple[str, ...]) -> str:
    """The class names in a few words: "0-9" where they are the numbers in order, else "in the order above"."""
    return f"{names[0]}-{names[-1]}" if names == tuple(str(k) for k in range(len(names))) else "in the order above"


def image_shape(images: np.ndarray) -> tuple[int, int, int]:
    """(H, W, C) of images stored (n, H, W) (grey: C = 1) or (n, H, W, C)."""
    shape = tuple(int(d) for d in images.shape[1:])
    return (*shape, 1) if len(shape) == 2 else shape  # type: ignore[return-value]


def scale_pixels(x: np.ndarray) -> np.ndarray:
    """uint8 images (n, H, W) or (n, H, W, C) -> float32 in [0, 1], (n, H, W, C), as x/255."""
    x = np.asarray(x, dtype=np.float32) / 255.0
    return x[..., None] if x.ndim == 3 else x


def as_stored(images: np.ndarray) -> np.ndarray:
    """Images (n, H, W, C) -> as a dataset stores them: (n, H, W) when grey, else unchanged."""
    return images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images


def binarized_test_set(data: Dataset) -> np.ndarray:
    """The test images binarised once (pixel = 1 with probability grey/255), always the same draw."""
    return binarize(scale_pixels(data.x_test))


def binarize(x: np.ndarray, start: int = 0) -> np.ndarray:
    """Test images x[start:...] in [0, 1] -> their rows of the fixed binarised test set.

    The draw for image i does not depend on how the set is cut, so a loader that binarises one batch
    at a time (`vaelab.data.batches`) gives the same pixels as `binarized_test_set`.
    """
    rng = np.random.default_rng(BINARIZE_SEED)
    skip = start * int(np.prod(x.shape[1:]))  # the draws of the images before `start`
    rng.bit_generator.advance(skip // 2)  # PCG64 makes two float32 draws per step
    if skip % 2:
        rng.random(1, dtype=np.float32)
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
