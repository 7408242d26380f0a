"""Writing a shards directory (the format `vaelab.data.shards` documents and reads): `vaelab data convert SRC DIR`."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from vaelab._files import write_bytes, write_json
from vaelab._lock import DirectoryLock
from vaelab.data.dataset import KEYS, arrays_sha256
from vaelab.data.shards import FORMAT, MANIFEST, SHARD_ROWS, VERSION, Log, is_shard_name, open_array, shard_rows_for
from vaelab.errors import VaelabError


class _ShardWriter:
    """Cuts a stream of rows into shards of `rows` rows, each written atomically; records what it wrote."""

    def __init__(self, directory: Path, key: str, rows: int | None):
        self.directory, self.key, self.rows = directory, key, rows  # rows None: shard_rows_for the first chunk's
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.shards: list[dict] = []
        self.dtype: np.dtype | None = None  # images are uint8; labels keep the source's integer type
        self.row_shape: tuple[int, ...] | None = None  # every chunk's rows have the first chunk's shape

    def add(self, chunk: np.ndarray, origin: str = "the source") -> None:
        if self.dtype is None:
            self.dtype = np.dtype(np.uint8) if self.key.startswith("x") else np.asarray(chunk).dtype
            self.row_shape = tuple(np.shape(chunk)[1:])
            self.rows = self.rows or (shard_rows_for(self.row_shape) if self.key.startswith("x") else SHARD_ROWS)
        if tuple(np.shape(chunk)[1:]) != self.row_shape:
            raise VaelabError(
                f"{origin}: {self.key} holds rows of shape {list(np.shape(chunk)[1:])}, the earlier ones "
                f"{list(self.row_shape)}; give images of one shape (convert them with --image-size H W, --grey)"
            )
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        while len(chunk):
            take = min(len(chunk), self.rows - self.buffered)
            self.buffer.append(chunk[:take])
            self.buffered += take
            chunk = chunk[take:]
            if self.buffered == self.rows:
                self._write()

    def close(self) -> list[dict]:
        if self.buffered:
            self._write()
        return self.shards

    def _write(self) -> None:
        data = io.BytesIO()
        np.save(data, np.concatenate(self.buffer), allow_pickle=False)
        name = f"{self.key}-{len(self.shards):05d}.npy"
        write_bytes(self.directory / name, data.getvalue())
        self.shards.append({"file": name, "rows": self.buffered, "sha256": hashlib.sha256(data.getvalue()).hexdigest()})
        self.buffer, self.buffered = [], 0


def write_shards(
    directory: Path,
    parts: Iterable[dict],
    *,
    source: str,
    class_names: Sequence[str] | None,
    details: dict | None = None,
    shard_rows: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes the arrays given piece by piece (`parts`: dicts of row chunks, by key, and optionally "origin": the
    part's name for errors) into `directory`.

    Returns the manifest. `directory` must be new or empty, or hold shards and `overwrite` be set.
    `shard_rows`: images per shard (None: `shard_rows_for` their shape).
    """
    if shard_rows is not None and shard_rows < 1:
        raise VaelabError(f"--shard-size must be >= 1, got {shard_rows}")
    if directory.exists() and not directory.is_dir():
        raise VaelabError(f"{directory} is a file; choose a directory for the shards")
    with DirectoryLock(directory, "converting"):
        _clear(directory, overwrite)
        writers = {key: _ShardWriter(directory, key, shard_rows) for key in KEYS}
        try:
            for part in parts:
                origin = part.get("origin", "the source")
                for key, chunk in part.items():
                    if key != "origin" and chunk is not None:
                        writers[key].add(chunk, origin)
            shapes = {k: w.row_shape for k, w in writers.items() if k.startswith("x") and w.dtype}
            if len(set(shapes.values())) > 1:
                raise VaelabError(
                    f"the training images are {list(shapes['x_train'])}, the test images {list(shapes['x_test'])}; "
                    "give images of one shape (convert them with --image-size H W, --grey)"
                )
            arrays = {
                k: _describe(directory, k, w.dtype, w.row_shape, w.close()) for k, w in writers.items() if w.dtype
            }
        except OSError as err:
            raise VaelabError(f"cannot write {directory} ({err.strerror}); make room and convert again") from None
        if "x_train" not in arrays or "x_test" not in arrays:
            raise VaelabError("the source holds no training or no test images; give it both")
        hashes = {k: arrays[k]["sha256"] if k in arrays else "-" for k in KEYS}
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "sha256": arrays_sha256({}, hashes),
            "source": source,
            "class_names": list(class_names) if class_names is not None else None,
            "details": details or {},
            "arrays": arrays,
        }
        try:
            write_json(directory / MANIFEST, manifest)
        except OSError as err:
            raise VaelabError(f"cannot write {directory / MANIFEST} ({err.strerror}); make room") from None
    return manifest


def _describe(directory: Path, key: str, dtype: np.dtype, row_shape: tuple[int, ...], shards: list[dict]) -> dict:
    """The manifest's entry for one array; its sha256 as `array_sha256` computes it for the whole array in memory."""
    count = sum(s["rows"] for s in shards)
    array = open_array(directory, key, {"dtype": dtype.str, "shape": [count, *row_shape], "shards": shards})
    h = hashlib.sha256(f"{dtype.str}{(count, *row_shape)}".encode())
    step = shard_rows_for(row_shape)
    for start in range(0, count, step):  # read back what was written: the checksum is of the files
        h.update(array[start : start + step].data)
    return {"dtype": dtype.str, "shape": [count, *row_shape], "sha256": h.hexdigest(), "shards": shards}


def _clear(directory: Path, overwrite: bool) -> None:
    """Makes `directory` ready for new shards: empty, or (with `overwrite`) rid of an earlier conversion."""
    ours = [p for p in directory.iterdir() if p.name == MANIFEST or is_shard_name(p.name)]
    others = [p for p in directory.iterdir() if p not in ours and not p.name.startswith(".")]
    if others:
        raise VaelabError(f"{directory} holds other files ({others[0].name}); convert into a new or empty directory")
    if ours and not overwrite:
        raise VaelabError(f"{directory} already holds shards; pass --overwrite to replace them")
    (directory / MANIFEST).unlink(missing_ok=True)  # first: a directory without a manifest is unfinished
    for path in ours:
        path.unlink(missing_ok=True)


def convert(
    sources: Sequence[str],
    directory: Path,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: Sequence[int] | None = None,
    grey: bool = False,
    shard_rows: int | None = None,
    overwrite: bool = False,
    log: Log,
) -> dict:
    """`vaelab data convert`: writes shards from one dataset `load_dataset` reads, or from several `.npz` files.

    One source is read whole (as training would read it); several `.npz` files are read one at a
    time, so their total may exceed memory. They must all have labels or none, the same classes, and
    images of one shape (`image_size` and `grey` convert them as `load_dataset` does).
    """
    from vaelab.data import check_image_size, load_dataset
    from vaelab.data.custom import load_npz

    size = check_image_size(image_size)
    if len(sources) == 1:
        data = load_dataset(sources[0], data_dir, image_size=size, grey=grey, log=log)
        manifest = write_shards(
            directory,
            [{"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test, "y_test": data.y_test}],
            source=f"{data.source}, converted by vaelab data convert",
            class_names=data.class_names,
            details={**data.details, "converted from": data.name},
            shard_rows=shard_rows,
            overwrite=overwrite,
        )
        if manifest["sha256"] != data.sha256:
            raise AssertionError(f"the shards' checksum {manifest['sha256']} differs from the source's {data.sha256}")
        return manifest
    paths = [Path(s).expanduser().resolve() for s in sources]
    bad = [str(p) for p in paths if p.suffix != ".npz" or not p.is_file()]
    if bad:
        raise VaelabError(f"several sources must all be .npz files; not one: {bad[0]}")
    classes = load_npz(paths[0], image_size=size, grey=grey).class_names

    def parts() -> Iterator[dict]:
        for path in paths:
            part = load_npz(path, image_size=size, grey=grey)
            if part.class_names != classes:
                raise VaelabError(
                    f"{path} has other classes than {paths[0]} ({_names(part.class_names)} vs {_names(classes)}); "
                    "give files with the same classes, or all without labels"
                )
            log(f"vaelab: {len(part.x_train)} training and {len(part.x_test)} test images from {path}")
            yield {"x_train": part.x_train, "y_train": part.y_train, "x_test": part.x_test, "y_test": part.y_test,
                   "origin": str(path)}  # fmt: skip

    return write_shards(
        directory,
        parts(),
        source=f"arrays in {len(paths)} .npz files, converted by vaelab data convert",
        class_names=classes,
        details={"converted from": ", ".join(str(p) for p in paths)},
        shard_rows=shard_rows,
        overwrite=overwrite,
    )


def _names(class_names: Sequence[str] | None) -> str:
    return ", ".join(class_names) if class_names else "no labels"
