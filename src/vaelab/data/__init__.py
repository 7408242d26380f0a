"""vaelab's one data loader: `load_dataset(NAME | PATH, image_size=None, grey=False)` -> a verified `Dataset`.

Built-in datasets (`mnist`, `fashion-mnist`, `shapes`, `dsprites`, `cifar10`, `svhn`, `celeba`) are fetched or
generated, verified and cached (`vaelab.data.builtin`); a path is a folder of your images or an `.npz`
of arrays (`vaelab.data.custom`), kept at their size and colour or converted with `image_size` and
`grey`, or a directory of shards written by `vaelab data convert`, whose training images stay on disk
(`vaelab.data.shards`). Every dataset is uint8 images of one shape, grey (n, H, W) or colour
(n, H, W, 3). The factors of each `shapes` image: `shapes_factors("train" | "test")`; a dataset whose test
images have known factors of variation (shapes, dsprites, an `.npz` with `factors`) carries them as
`Dataset.factors`, what the disentanglement metrics score a code against.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vaelab.data.builtin import (
    BUILTIN,
    TEST_LABEL_COUNTS,
    TRAIN_LABEL_COUNTS,
    Builtin,
    Source,
    fetch_builtin,
)
from vaelab.data.dataset import (
    IMAGE_SHAPE,
    IMAGE_SIZE,
    KEYS,
    PIXELS,
    Dataset,
    array_sha256,
    arrays_sha256,
    binarized_test_set,
    make_dataset,
    scale_pixels,
    test_images,
)
from vaelab.data.images import GREY, luma
from vaelab.data.shapes import shapes_factors
from vaelab.errors import VaelabError

__all__ = [
    "BUILTIN",
    "IMAGE_SHAPE",
    "IMAGE_SIZE",
    "KEYS",
    "PIXELS",
    "TEST_LABEL_COUNTS",
    "TRAIN_LABEL_COUNTS",
    "Dataset",
    "array_sha256",
    "arrays_sha256",
    "binarized_test_set",
    "default_data_dir",
    "fetch_mnist",
    "load_dataset",
    "load_mnist",
    "scale_pixels",
    "shapes_factors",
    "test_images",
]

DEFAULT_DATASET = "mnist"  # the exercise's data
MAX_IMAGE_SIDE = 4096  # --image-size: 16 M pixels an image is already more than these networks can take


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def default_data_dir() -> Path:
    """`VAELAB_DATA_DIR`, else `$XDG_CACHE_HOME/vaelab`, else `~/.cache/vaelab`."""
    if os.environ.get("VAELAB_DATA_DIR"):
        return Path(os.environ["VAELAB_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "vaelab"


def load_dataset(
    dataset: str | os.PathLike[str] = DEFAULT_DATASET,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    image_size: Sequence[int] | None = None,
    grey: bool = False,
    sources: Sequence[Source] | None = None,
    log: Callable[[str], None] = _stderr,
) -> Dataset:
    """The dataset named `dataset`: a built-in name (`BUILTIN`), a folder of images, an `.npz`, or a shards
    directory.

    Built-in datasets are read from `data_dir` (default: `default_data_dir()`) or fetched and cached
    there; `sources` replaces their remote sources (tests use it). `image_size` (height, width) resizes
    the images of a folder or an `.npz` (None: their own size, which must be the same for all);
    `grey` converts colour images to grey (a built-in's too). A shards directory holds its images as
    they were converted: give the options to `vaelab data convert`.
    """
    name = os.fspath(dataset)
    size = check_image_size(image_size)
    if name in BUILTIN:
        spec = BUILTIN[name]
        _check_builtin_options(spec, size, grey)
        directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
            raise VaelabError(f"data dir {directory} is not readable; fix its permissions or pass another --data-dir")
        data = fetch_builtin(spec, directory, sources=sources, log=log)
        return to_grey(data) if grey else data
    from vaelab.data.custom import load_folder, load_npz
    from vaelab.data.shards import is_shards, load_shards

    path = Path(name).expanduser()
    if path.is_dir() and is_shards(path):
        if size is not None or grey:
            raise VaelabError(
                f"{path} holds shards, stored as they were converted; convert again with the options "
                "(vaelab data convert SRC DIR --image-size H W --grey) instead of giving them here"
            )
        return load_shards(path.resolve())
    if path.is_dir():
        return load_folder(path.resolve(), image_size=size, grey=grey, log=log)
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path.resolve(), image_size=size, grey=grey)
    if path.exists():
        raise VaelabError(f"--dataset {name}: not a folder of images or an .npz file")
    raise VaelabError(f"unknown dataset {name!r}: give {', '.join(BUILTIN)}, a folder of images or an .npz file")


def check_image_size(image_size: Sequence[int] | None) -> tuple[int, int] | None:
    """`image_size` as (height, width), checked: two whole numbers from 1 to MAX_IMAGE_SIDE (or None)."""
    if image_size is None:
        return None
    size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) for d in size):
        raise VaelabError(f"--image-size takes two whole numbers, height and width; got {list(size)}")
    if not all(1 <= d <= MAX_IMAGE_SIDE for d in size):
        raise VaelabError(f"--image-size {size[0]} {size[1]}: each side must be from 1 to {MAX_IMAGE_SIDE} pixels")
    return size  # type: ignore[return-value]


def _check_builtin_options(spec: Builtin, size: tuple[int, int] | None, grey: bool) -> None:
    h, w, c = spec.image_shape
    if size is not None:
        raise VaelabError(
            f"{spec.title}'s images are {h}x{w}, always; leave out --image-size (it resizes folders and .npz files)"
        )
    if grey and c == 1:
        raise VaelabError(f"{spec.title} is grey already; leave out --grey")


def to_grey(data: Dataset) -> Dataset:
    """A colour dataset's images converted to grey (ITU-R 601-2 luma), its checksum recomputed."""
    arrays = {"x_train": luma(data.x_train), "y_train": data.y_train, "x_test": luma(data.x_test),
              "y_test": data.y_test}  # fmt: skip
    return make_dataset(arrays, name=data.name, source=data.source, class_names=data.class_names, path=data.path,
                        details={**data.details, "conversion": GREY}, title=data.title,
                        factors=data.factors)  # fmt: skip


def fetch_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    sources: Sequence[Source] | None = None,
    log: Callable[[str], None] = _stderr,
) -> Dataset:
    """MNIST: `load_dataset("mnist", data_dir)`."""
    return load_dataset("mnist", data_dir, sources=sources, log=log)


def load_mnist(data_dir: str | os.PathLike[str] | None = None):
    """Returns `(x_train, y_train), (x_test, y_test)` as uint8 arrays, as `keras.datasets.mnist.load_data()`."""
    return fetch_mnist(data_dir).as_tuples()
