"""The IDX format of MNIST and Fashion-MNIST: a big-endian header (magic, dimensions), then uint8 data."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from vaelab.errors import VaelabError

# The four files of a dataset in IDX format, by the array each holds (the same names for both datasets).
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def find_idx(directory: Path, name: str) -> Path | None:
    """`directory/name`, or its gzipped `name.gz`, whichever exists."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def read_idx(path: Path, expect_sha256: str | None = None) -> np.ndarray:
    """Parses an IDX file (gzipped if its name ends in .gz); with `expect_sha256`, checks the decompressed bytes."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise VaelabError(f"{path} is unreadable ({err.strerror}); download it again") from None
    return read_idx_bytes(raw, str(path), compressed=path.suffix == ".gz", expect_sha256=expect_sha256)


def read_idx_bytes(raw: bytes, origin: str, *, compressed: bool, expect_sha256: str | None = None) -> np.ndarray:
    """Parses the bytes of an IDX file of unsigned bytes; `origin` names it in errors."""
    if compressed:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise VaelabError(f"{origin} is unreadable or truncated ({err}); download it again") from None
    if expect_sha256 is not None and hashlib.sha256(raw).hexdigest() != expect_sha256:
        raise VaelabError(f"{origin} does not hold the expected contents (sha256 mismatch); download it again")
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise VaelabError(f"{origin} is not an IDX file of unsigned bytes; download it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise VaelabError(f"{origin} is truncated (incomplete header); download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise VaelabError(
            f"{origin} holds {len(raw) - header} data bytes, its header promises {size} (truncated?); download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()
