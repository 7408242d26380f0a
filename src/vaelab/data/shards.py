"""A dataset larger than memory: its training images in `.npy` shards on disk, read a batch at a time.

`vaelab data convert SRC DIR` writes one from anything `load_dataset` reads (or from several `.npz`
files: `vaelab.data.shard_writer`); `--dataset DIR` trains on it, streaming. The directory holds a fixed set of files:

    manifest.json          what the directory holds: for each array its dtype, shape and sha256, and
                           its shards (file, rows, sha256 of the file); the dataset's checksum (the same
                           as the source's `Dataset.sha256`), classes, source. Written last.
    x_train-00000.npy ...  uint8 (rows, H, W) grey or (rows, H, W, C) colour: the training images, about
                           `SHARD_BYTES` to a shard (`SHARD_ROWS` 28x28 grey images)
    y_train-00000.npy ...  integers (rows,): their labels, when the dataset has labels, in the source's dtype
    x_test-00000.npy ...   the test images, and y_test-00000.npy ... their labels
    .lock                  held while `vaelab data convert` writes (vaelab._lock)

Every file is written atomically (a temporary name, then a rename), the manifest after all shards,
so a directory without one is an unfinished conversion. Opening checks that every shard is there
with the size and header the manifest gives (a missing or truncated shard is one line); `vaelab
data --dataset DIR` also checks every shard's sha256.

The training images are never read whole: `ShardedArray.take` reads the rows of one batch with
positional reads (`os.pread`). Memory-mapping the shards would serve the same bytes, but every page
touched counts in the process's resident memory until it is unmapped, so an epoch over a mapped
dataset looks as large as the dataset. The test set is read into memory (evaluation and the
analyses use it whole); the `.npy` shards open with `numpy.load(path, mmap_mode="r")` anywhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vaelab.data.dataset import KEYS, PIXELS, Dataset
from vaelab.errors import VaelabError

MANIFEST = "manifest.json"
FORMAT = "vaelab-shards"
VERSION = 1
SHARD_ROWS = 65536  # 28x28 grey images per shard: 51 MB, few files even for tens of millions of images
SHARD_BYTES = SHARD_ROWS * PIXELS  # a shard's size for images of any shape: as many rows as fit in 51 MB
OPEN_FILES = 64  # shards kept open at once while reading (a dataset may have more shards than a process may open)
Log = Callable[[str], None]


def shard_rows_for(row_shape: Sequence[int]) -> int:
    """Images of `row_shape` per shard by default: as many as fit in SHARD_BYTES (SHARD_ROWS for 28x28 grey)."""
    return max(1, SHARD_BYTES // int(np.prod(row_shape, dtype=np.int64)))


def is_shards(path: Path) -> bool:
    """Whether `path` is a shards directory (or an unfinished one: shards without a manifest yet)."""
    return (path / MANIFEST).is_file() or any(is_shard_name(p.name) for p in path.glob("x_train-*.npy"))


# --- reading ------------------------------------------------------------------------------------------


class ShardedArray:
    """One array stored as consecutive `.npy` shards, read on demand; indexes like a NumPy array's rows."""

    def __init__(self, paths: Sequence[Path], rows: Sequence[int], offsets: Sequence[int], dtype, row_shape):
        self.paths = list(paths)
        self.offsets = list(offsets)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self._files: OrderedDict[int, int] = OrderedDict()

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.row_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self.take(np.arange(*key.indices(len(self))))
        if isinstance(key, (int, np.integer)):
            return self.take(np.asarray([key if key >= 0 else key + len(self)]))[0]
        return self.take(np.asarray(key))

    def __array__(self, dtype=None, copy=None):
        out = self.take(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def take(self, indices, axis: int = 0) -> np.ndarray:
        """The rows `indices` (any order, repeats allowed), as one array in that order."""
        if axis != 0:
            raise ValueError("a ShardedArray is read by rows (axis 0)")
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(indices), *self.row_shape), self.dtype)
        if len(indices) == 0:
            return out
        if indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"row index out of range for {len(self)} rows")
        by_row = np.argsort(indices, kind="stable")
        rows = indices[by_row]
        flat = out.reshape(len(indices), -1).view(np.uint8)
        # Consecutive rows of one shard are read together, one pread per run of rows.
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(shard_of) != 0)) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            first, shard = int(rows[run[0]]), int(shard_of[run[0]])
            local = first - int(self.starts[shard])
            size = len(run) * self.row_bytes
            data = os.pread(self._fd(shard), size, self.offsets[shard] + local * self.row_bytes)
            if len(data) != size:
                raise VaelabError(f"{self.paths[shard]} ended early (it changed after it was opened); convert again")
            flat[by_row[run]] = np.frombuffer(data, np.uint8).reshape(len(run), -1)
        return out

    def _fd(self, shard: int) -> int:
        fd = self._files.get(shard)
        if fd is not None:
            self._files.move_to_end(shard)
            return fd
        if len(self._files) >= OPEN_FILES:
            os.close(self._files.popitem(last=False)[1])
        try:
            fd = os.open(self.paths[shard], os.O_RDONLY)
        except OSError as err:
            raise VaelabError(f"cannot read {self.paths[shard]} ({err.strerror}); convert the dataset again") from None
        self._files[shard] = fd
        return fd

    def __del__(self):
        for fd in getattr(self, "_files", {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise VaelabError(
            f"{directory} has no {MANIFEST}: not a shards directory, or its conversion did not finish; "
            f"run `vaelab data convert SRC {directory} --overwrite`"
        ) from None
    except (OSError, ValueError) as err:
        raise VaelabError(f"{path} is unreadable ({err}); convert the dataset again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise VaelabError(f"{path} is not a vaelab shards manifest")
    if manifest.get("version") != VERSION:
        raise VaelabError(f"{path} has format version {manifest.get('version')}; this vaelab reads {VERSION}")
    return manifest


def open_array(directory: Path, key: str, entry: dict) -> ShardedArray:
    """The array `key` of the manifest, every shard checked to be there, whole, and as described."""
    dtype = np.dtype(entry["dtype"])
    row_shape = tuple(entry["shape"][1:])
    paths, rows, offsets = [], [], []
    for shard in entry["shards"]:
        path = directory / shard["file"]
        offsets.append(_check_shard(path, int(shard["rows"]), dtype, row_shape))
        paths.append(path)
        rows.append(int(shard["rows"]))
    if sum(rows) != entry["shape"][0]:
        raise VaelabError(f"{directory / MANIFEST}: the {key} shards hold {sum(rows)} rows, not {entry['shape'][0]}")
    return ShardedArray(paths, rows, offsets, dtype, row_shape)


def _check_shard(path: Path, rows: int, dtype: np.dtype, row_shape: tuple[int, ...]) -> int:
    """Checks one shard's header and size; returns where its data begin."""
    fix = f"convert the dataset again (`vaelab data convert SRC {path.parent} --overwrite`)"
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"format version {version}")
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, found = read_header(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise VaelabError(f"shard {path} is missing; {fix}") from None
    except (OSError, ValueError) as err:
        raise VaelabError(f"shard {path} is not a readable .npy file ({err}); {fix}") from None
    if shape != (rows, *row_shape) or found != dtype or fortran:
        raise VaelabError(f"shard {path} holds {found}{list(shape)}, not {dtype}{[rows, *row_shape]}; {fix}")
    expected = offset + rows * int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        raise VaelabError(f"shard {path} is truncated ({size} of {expected} bytes); {fix}")
    return offset


def load_shards(directory: Path) -> Dataset:
    """The dataset in a shards directory: training images streamed from disk, the test set in memory."""
    manifest = read_manifest(directory)
    arrays = manifest["arrays"]
    missing = [k for k in ("x_train", "x_test") if k not in arrays]
    if missing:
        raise VaelabError(f"{directory / MANIFEST} lists no {', '.join(missing)}; convert the dataset again")
    opened = {k: open_array(directory, k, arrays[k]) for k in KEYS if k in arrays}
    for key in ("x_test", "y_test"):  # the test set is used whole (evaluation, analyses): read it now
        if key in opened:
            opened[key] = np.asarray(opened[key])
    return Dataset(
        x_train=opened["x_train"],
        y_train=opened.get("y_train"),
        x_test=opened["x_test"],
        y_test=opened.get("y_test"),
        source=manifest["source"],
        sha256=manifest["sha256"],
        name=str(directory),
        class_names=tuple(manifest["class_names"]) if manifest.get("class_names") is not None else None,
        path=directory,
        details={**manifest.get("details", {}), "format": f"shards in {directory}"},
    )


def verify(directory: Path, log: Log | None = None) -> None:
    """Checks every shard against the sha256 in the manifest (reads the whole dataset once)."""
    manifest = read_manifest(directory)
    for key, entry in manifest["arrays"].items():
        open_array(directory, key, entry)  # presence, header and size first: clearer errors
        for shard in entry["shards"]:
            path = directory / shard["file"]
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            if digest != shard["sha256"]:
                raise VaelabError(f"shard {path} is damaged (its sha256 differs from {MANIFEST}); convert again")
        if log:
            log(f"vaelab: {key}: {len(entry['shards'])} shards checked")


def is_shard_name(name: str) -> bool:
    key, _, rest = name.partition("-")
    return key in KEYS and rest.endswith(".npy") and rest[:-4].isdigit()


# --- sources ------------------------------------------------------------------------------------------
