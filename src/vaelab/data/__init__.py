"""vaelab's one data loader: `load_dataset("mnist" | "fashion-mnist" | PATH)` -> a verified `Dataset`.

Built-in datasets are fetched, verified and cached (`vaelab.data.builtin`); a path is a folder of
your images or an `.npz` of arrays (`vaelab.data.custom`), or a directory of shards written by
`vaelab data convert`, whose training images stay on disk (`vaelab.data.shards`). Every dataset is
28x28 greyscale uint8.
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
    scale_pixels,
    test_images,
)
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
    "test_images",
]

DEFAULT_DATASET = "mnist"  # the exercise's data


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
    sources: Sequence[Source] | None = None,
    log: Callable[[str], None] = _stderr,
) -> Dataset:
    """The dataset named `dataset`: a built-in name (`mnist`, `fashion-mnist`), a folder of images, an `.npz`,
    or a shards directory.

    Built-in datasets are read from `data_dir` (default: `default_data_dir()`) or fetched and cached
    there; `sources` replaces their remote sources (tests use it).
    """
    name = os.fspath(dataset)
    if name in BUILTIN:
        directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
            raise VaelabError(f"data dir {directory} is not readable; fix its permissions or pass another --data-dir")
        return fetch_builtin(BUILTIN[name], directory, sources=sources, log=log)
    from vaelab.data.custom import load_folder, load_npz
    from vaelab.data.shards import is_shards, load_shards

    path = Path(name).expanduser()
    if path.is_dir() and is_shards(path):
        return load_shards(path.resolve())
    if path.is_dir():
        return load_folder(path.resolve())
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path.resolve())
    if path.exists():
        raise VaelabError(f"--dataset {name}: not a folder of images or an .npz file")
    raise VaelabError(f"unknown dataset {name!r}: give {' or '.join(BUILTIN)}, a folder of images or an .npz file")


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
