"""Colour and any size: the generated shapes, CIFAR-10 / SVHN / CelebA readers on files in their real formats,
their download path against a local HTTP server, and the built-ins' fixed shapes."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from vaelab.data import BUILTIN, load_dataset, shapes_factors
from vaelab.data.builtin import fetch_builtin
from vaelab.data.colour import CELEBA_FILES, CIFAR10_CLASSES, CIFAR10_FILE, SVHN_FILES
from vaelab.data.shapes import PALETTE, SHAPE_NAMES, draw
from vaelab.data.sources import Published
from vaelab.errors import VaelabError

# The generated dataset's checksum: every run trained on `shapes` records it, so a change to the generator is a
# change of dataset. Change it only on purpose (and say so in the README).
SHAPES_SHA256 = "7cf9c5022b5acb89afead7f890550c1cca259a956f81306c63d012d078b62eef"


def quiet(msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return load_dataset("shapes", tmp_path_factory.mktemp("cache"), log=quiet)


# --- shapes ---------------------------------------------------------------------------------------------------


def test_shapes_is_the_same_balanced_colour_dataset_every_time(shapes, tmp_path):
    assert shapes.sha256 == SHAPES_SHA256 and shapes.title == "Shapes" and shapes.class_names == SHAPE_NAMES
    assert shapes.image_shape == (32, 32, 3) and shapes.x_train.shape == (50000, 32, 32, 3)
    assert shapes.x_test.shape == (10000, 32, 32, 3) and shapes.x_train.dtype == np.uint8
    assert np.bincount(shapes.y_train).tolist() == [10000] * 5 and np.bincount(shapes.y_test).tolist() == [2000] * 5
    cached = shapes.path
    assert cached.name == "shapes.npz" and cached.with_name("shapes.npz.manifest.json").is_file()
    again = load_dataset("shapes", cached.parent, sources=[], log=quiet)  # from the cache, no generator
    assert again.sha256 == SHAPES_SHA256 and again.source.startswith("vaelab.data.shapes (generated")


def test_shapes_factors_describe_each_image(shapes):
    for split, x, y in (("train", shapes.x_train, shapes.y_train), ("test", shapes.x_test, shapes.y_test)):
        f = shapes_factors(split)
        assert set(f) == {"shape", "colour", "size", "x", "y"} and len(f["shape"]) == len(x)
        np.testing.assert_array_equal(f["shape"], y)
        assert f["size"].min() == 4 and f["size"].max() == 10
        assert (f["x"] - f["size"] >= 0).all() and (f["x"] + f["size"] <= 32).all()
        for k in range(300):
            image, s, cx, cy = x[k], f["size"][k], f["x"][k], f["y"][k]
            np.testing.assert_array_equal(image[cy, cx], PALETTE[f["colour"][k]])  # the centre has its colour
            coloured = image.any(-1)
            rows, cols = np.nonzero(coloured)
            assert rows.min() >= cy - s and rows.max() < cy + s and cols.min() >= cx - s and cols.max() < cx + s
            assert set(map(tuple, image[coloured])) == {tuple(PALETTE[f["colour"][k]])}  # flat colour, black else
            if f["shape"][k] == 0:
                assert coloured.sum() == (2 * s) ** 2  # a square fills its box
    np.testing.assert_array_equal(draw({k: v[:50] for k, v in shapes_factors("test").items()}), shapes.x_test[:50])


def test_shapes_in_grey_and_the_fixed_size_of_built_ins(shapes, tmp_path):
    grey = load_dataset("shapes", shapes.path.parent, grey=True, sources=[], log=quiet)
    assert grey.image_shape == (32, 32, 1) and grey.x_train.shape == (50000, 32, 32)
    assert grey.sha256 != shapes.sha256 and grey.details["conversion"].startswith("greyscale")
    expected = np.asarray(Image.fromarray(shapes.x_test[7]).convert("L"))
    np.testing.assert_array_equal(grey.x_test[7], expected)  # Pillow's luma, to the bit
    with pytest.raises(VaelabError, match=r"Shapes's images are 32x32, always; leave out --image-size"):
        load_dataset("shapes", tmp_path, image_size=(28, 28))
    with pytest.raises(VaelabError, match="MNIST is grey already; leave out --grey"):
        load_dataset("mnist", tmp_path, grey=True)


# --- CIFAR-10, SVHN, CelebA: files in their real formats --------------------------------------------------------


def cifar_tarball(path, train_per_class=2, test_per_class=1, seed=0):
    """A cifar-10-python.tar.gz of the real layout: python pickles (protocol 2, bytes keys) of channel-first rows."""
    rng = np.random.default_rng(seed)
    images = {}

    def batch(n_per_class):
        labels = np.tile(np.arange(10), n_per_class)
        x = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        rows = x.transpose(0, 3, 1, 2).reshape(len(labels), 3072)  # R plane, G plane, B plane
        return {b"batch_label": b"b", b"labels": labels.tolist(), b"data": rows, b"filenames": [b"f"] * len(labels)}, x

    with tarfile.open(path, "w:gz") as tar:
        names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
        for name in names:
            content, x = batch(test_per_class if name == "test_batch" else train_per_class)
            images[name] = (x, np.asarray(content[b"labels"], np.uint8))
            raw = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        meta = pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return images


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def small(name: str, train, test, files=None):
    """The built-in `name` with the counts of the small files made here (and their own checksums)."""
    return dataclasses.replace(BUILTIN[name], train_counts=train, test_counts=test, files=files or BUILTIN[name].files)


def test_cifar10_from_its_tarball_in_data_dir(tmp_path):
    made = cifar_tarball(tmp_path / CIFAR10_FILE.name)
    files = (dataclasses.replace(CIFAR10_FILE, sha256=sha256_of(tmp_path / CIFAR10_FILE.name)),)
    spec = small("cifar10", (10,) * 10, (1,) * 10, files)
    data = fetch_builtin(spec, tmp_path, sources=[], log=quiet)
    expected = np.concatenate([made[f"data_batch_{k}"][0] for k in range(1, 6)])
    np.testing.assert_array_equal(data.x_train, expected)  # channel-first rows back to (n, 32, 32, 3)
    np.testing.assert_array_equal(data.x_test, made["test_batch"][0])
    np.testing.assert_array_equal(data.y_test, made["test_batch"][1])
    assert data.image_shape == (32, 32, 3) and data.class_name(9) == "truck" and data.title == "CIFAR-10"
    assert (tmp_path / "cifar10.npz").is_file()  # cached: the tarball is not read again
    (tmp_path / CIFAR10_FILE.name).unlink()
    assert fetch_builtin(spec, tmp_path, sources=[], log=quiet).sha256 == data.sha256


def test_cifar10_files_that_are_not_the_published_ones_are_refused(tmp_path):
    cifar_tarball(tmp_path / CIFAR10_FILE.name)
    with pytest.raises(VaelabError, match=r"has sha256 \w+, not the published 6d958be0"):
        fetch_builtin(small("cifar10", (10,) * 10, (1,) * 10), tmp_path, sources=[], log=quiet)
    # a pickle that would run code is refused even when its checksum is the one given
    evil = tmp_path / "evil"
    evil.mkdir()
    with tarfile.open(evil / CIFAR10_FILE.name, "w:gz") as tar:
        raw = pickle.dumps({b"data": np.zeros(3), "x": print})
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    files = (dataclasses.replace(CIFAR10_FILE, sha256=sha256_of(evil / CIFAR10_FILE.name)),)
    with pytest.raises(VaelabError, match=r"refusing to unpickle builtins\.print"):
        fetch_builtin(small("cifar10", (10,) * 10, (1,) * 10, files), evil, sources=[], log=quiet)


def svhn_files(directory, n_train=12, n_test=5, seed=1):
    """train_32x32.mat and test_32x32.mat as SVHN publishes them: X (32, 32, 3, n) uint8, y (n, 1), 10 for a 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    made = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        digits = np.arange(n) % 10
        savemat(
            directory / f"{split}_32x32.mat",
            {"X": np.moveaxis(x, 0, 3), "y": np.where(digits == 0, 10, digits)[:, None]},
        )
        made[split] = (x, digits)
    return made


def test_svhn_from_its_matlab_files(tmp_path):
    made = svhn_files(tmp_path)
    files = tuple(dataclasses.replace(f, sha256=sha256_of(tmp_path / f.name)) for f in SVHN_FILES)
    data = fetch_builtin(small("svhn", 12, 5, files), tmp_path, sources=[], log=quiet)
    np.testing.assert_array_equal(data.x_train, made["train"][0])
    np.testing.assert_array_equal(data.y_test, made["test"][1])  # label 10 is the digit 0
    assert data.y_train.dtype == np.uint8 and data.class_word == "digit" and data.image_shape == (32, 32, 3)
    (tmp_path / "test_32x32.mat").unlink()
    (tmp_path / "svhn.npz").unlink()
    with pytest.raises(VaelabError, match=r"holds train_32x32\.mat but not test_32x32\.mat; add them"):
        fetch_builtin(small("svhn", 12, 5, files), tmp_path, sources=[], log=quiet)


def celeba_files(directory, partitions=(0, 0, 1, 2, 0, 2)):
    """img_align_celeba.zip of 178x218 JPEGs and list_eval_partition.txt; image k's centre crop is grey level 40 k,
    its margin white."""
    lines = []
    with zipfile.ZipFile(directory / "img_align_celeba.zip", "w") as z:
        for k, part in enumerate(partitions):
            picture = np.full((218, 178, 3), 255, np.uint8)
            picture[35:183, 15:163] = 40 * k  # exactly the 148x148 centre that is kept
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, "JPEG", quality=100)
            z.writestr(f"img_align_celeba/{k + 1:06d}.jpg", buffer.getvalue())
            lines.append(f"{k + 1:06d}.jpg {part}")
    (directory / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def test_celeba_is_the_centre_crop_resized_to_64(tmp_path):
    celeba_files(tmp_path)
    files = tuple(dataclasses.replace(f, sha256=sha256_of(tmp_path / f.name)) for f in CELEBA_FILES)
    data = fetch_builtin(small("celeba", 3, 2, files), tmp_path, sources=[], log=quiet)
    assert data.x_train.shape == (3, 64, 64, 3) and data.x_test.shape == (2, 64, 64, 3)
    assert data.y_train is None and not data.labelled and data.title == "CelebA"
    # partitions 0 (images 0, 1, 4) for training and 2 (images 3, 5) for testing; 1 (validation) left out
    levels = [40 * k for k in (0, 1, 4)], [40 * k for k in (3, 5)]
    for x, expected in zip((data.x_train, data.x_test), levels, strict=True):
        assert np.abs(x.reshape(len(x), -1).astype(int).mean(1) - expected).max() < 2  # no white margin left
    again = fetch_builtin(small("celeba", 3, 2, files), tmp_path, sources=[], log=quiet)  # from the cache
    assert again.sha256 == data.sha256 and again.y_train is None


# --- the download path, against a local HTTP server -----------------------------------------------------------


@contextlib.contextmanager
def serving(directory):
    """An HTTP server on 127.0.0.1 serving `directory`; yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_the_sha256_and_caches(tmp_path):
    site, cache = tmp_path / "site", tmp_path / "cache"
    site.mkdir()
    made = svhn_files(site)
    with serving(site) as url:
        files = tuple(Published(f.name, f"{url}/{f.name}", sha256_of(site / f.name)) for f in SVHN_FILES)
        data = fetch_builtin(small("svhn", 12, 5, files), cache, log=quiet)
        np.testing.assert_array_equal(data.x_test, made["test"][0])
        assert data.source == f"{url}/train_32x32.mat, {url}/test_32x32.mat"
        assert sorted(p.name for p in cache.iterdir() if p.name != ".lock") == ["svhn.npz", "svhn.npz.manifest.json"]

        wrong = (files[0], dataclasses.replace(files[1], sha256="0" * 64))
        with pytest.raises(VaelabError) as err:
            fetch_builtin(small("svhn", 12, 5, wrong), tmp_path / "other", log=quiet)
    message = str(err.value)
    assert "test_32x32.mat from http://127.0.0.1" in message and "corrupt or tampered download" in message
    assert "from http://ufldl.stanford.edu/housenumbers/ into a directory and pass it with --data-dir" in message
    assert "\n" not in message
    assert [p.name for p in (tmp_path / "other").iterdir() if p.name != ".lock"] == []  # nothing kept


def test_an_unreachable_source_is_one_line_saying_what_to_do(tmp_path):
    with serving(tmp_path) as url:
        pass  # closed again: nothing listens there now
    files = (dataclasses.replace(CIFAR10_FILE, url=f"{url}/cifar-10-python.tar.gz"),)
    with pytest.raises(VaelabError) as err:
        fetch_builtin(small("cifar10", (10,) * 10, (1,) * 10, files), tmp_path / "cache", log=quiet)
    message = str(err.value)
    assert message.startswith(f"could not get CIFAR-10 ({url}/cifar-10-python.tar.gz: download failed")
    assert message.endswith(
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html into a directory and pass "
        "it with --data-dir"
    )
    assert "\n" not in message


def test_every_published_file_has_its_sha256():
    for name in ("cifar10", "svhn", "celeba"):
        for f in BUILTIN[name].files:
            assert f.sha256 is not None and len(f.sha256) == 64 and int(f.sha256, 16) >= 0, f.name
            assert f.url.startswith(("https://", "http://ufldl.stanford.edu/")), f.url
