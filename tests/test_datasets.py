"""Datasets beyond MNIST: Fashion-MNIST (real, from Debian's package), folders of images, .npz files."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from vaelab.data import load_dataset
from vaelab.data.builtin import DEBIAN_FASHION_DIR, FASHION_CLASSES
from vaelab.data.custom import TEST_FRACTION
from vaelab.errors import VaelabError


@pytest.fixture(scope="session")
def fashion(tmp_path_factory):
    """Real Fashion-MNIST, as a user gets it: Debian's dataset-fashion-mnist, verified and cached."""
    import os

    if not DEBIAN_FASHION_DIR.exists():
        if os.environ.get("CI"):
            pytest.fail(f"Fashion-MNIST is needed in CI: apt-get install dataset-fashion-mnist ({DEBIAN_FASHION_DIR})")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    return load_dataset("fashion-mnist", log=lambda m: None)


def test_fashion_mnist_is_verified_and_named(fashion):
    assert fashion.title == "Fashion-MNIST" and fashion.class_names == FASHION_CLASSES
    assert fashion.x_train.shape == (60000, 28, 28) and fashion.x_test.shape == (10000, 28, 28)
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10
    assert fashion.class_word == "class" and fashion.class_name(1) == "Trouser"
    assert fashion.sha256 != load_dataset("mnist", log=lambda m: None).sha256


def test_fashion_idx_files_with_other_contents_are_refused(tmp_path):
    if not DEBIAN_FASHION_DIR.exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    for path in DEBIAN_FASHION_DIR.iterdir():
        shutil.copy(path, tmp_path / path.name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: counts stay plausible, contents do not
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(VaelabError, match=r"t10k-labels-idx1-ubyte\.gz does not hold the expected contents"):
        load_dataset("fashion-mnist", tmp_path, sources=[], log=lambda m: None)


def write_images(folder, images, fmt="png", size=None, mode="L"):
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        picture = Image.fromarray(image).convert(mode)
        if size:
            picture = picture.resize(size)
        picture.save(folder / f"{k:04d}.{fmt}")


@pytest.fixture
def digit_folder(tmp_path, mnist):
    """Real MNIST digits saved as image files, one folder per class, in assorted formats and sizes."""
    root = tmp_path / "digits"
    for digit, name in ((0, "zero"), (1, "one"), (7, "seven")):
        images = mnist.x_train[mnist.y_train == digit][:21]
        write_images(root / name, images[:7])
        write_images(root / name, images[7:14], fmt="jpg", size=(56, 40), mode="RGB")
        for k, image in enumerate(images[14:]):
            Image.fromarray(image).convert("RGB").resize((30, 90)).save(root / name / f"tall{k}.bmp")
    return root


def test_a_folder_of_class_folders_is_a_labelled_dataset(digit_folder):
    with pytest.raises(VaelabError, match=r"different sizes: .* is 40x56, .* is 28x28; pass --image-size H W"):
        load_dataset(digit_folder)  # 28x28, 40x56 and 90x30 images: their own size is no one size
    data = load_dataset(digit_folder, image_size=(28, 28), grey=True)  # vaelab's first folder reader
    assert data.class_names == ("one", "seven", "zero")  # alphabetical, as Keras reads folders
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (28, 28)
    assert len(data.x_train) + len(data.x_test) == 63
    assert np.bincount(data.y_test).tolist() == [round(21 * TEST_FRACTION)] * 3  # stratified hold-out
    assert "seeded hold-out" in data.details["split"]
    again = load_dataset(digit_folder, image_size=[28, 28], grey=True)
    assert again.sha256 == data.sha256  # the same split and conversion every time
    # a png stored at 28x28 greyscale comes back unchanged
    assert any(np.array_equal(img, again.x_train[0]) for img in data.x_train)


def test_a_folder_with_its_own_split_and_an_unlabelled_folder(tmp_path, mnist):
    splits = (("train", mnist.x_train[:40], mnist.y_train[:40]), ("test", mnist.x_test[:20], mnist.y_test[:20]))
    for split, images, labels in splits:
        for digit in (2, 5):
            write_images(tmp_path / "split" / split / f"d{digit}", images[labels == digit])
    data = load_dataset(tmp_path / "split")  # grey PNGs of one size: read as they are
    assert data.image_shape == (28, 28, 1) and data.x_train.ndim == 3
    assert data.class_names == ("d2", "d5") and data.details["split"].startswith("given")
    assert len(data.x_test) == int(np.isin(mnist.y_test[:20], (2, 5)).sum())
    write_images(tmp_path / "flat", mnist.x_test[:14])
    flat = load_dataset(tmp_path / "flat")
    assert flat.y_train is None and not flat.labelled and len(flat.x_test) == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root.mkdir(), "is empty"),
        (lambda root: (root.mkdir(), (root / "a").mkdir(), (root / "x.png").write_bytes(b"")), "mixes files"),
        (lambda root: (root.mkdir(), (root / "a").mkdir()), "class folder .*a holds no images"),
        (
            lambda root: (root.mkdir(), (root / "a").mkdir(), (root / "a" / "bad.png").write_text("no image")),
            r"bad\.png is not an image",
        ),
    ],
)
def test_bad_folders_are_one_line_errors_naming_the_file(tmp_path, make, message):
    make(tmp_path / "root")
    with pytest.raises(VaelabError, match=message):
        load_dataset(tmp_path / "root")


def test_train_and_test_folders_must_hold_the_same_classes(tmp_path, mnist):
    write_images(tmp_path / "r" / "train" / "a", mnist.x_test[:3])
    write_images(tmp_path / "r" / "test" / "b", mnist.x_test[3:6])
    with pytest.raises(VaelabError, match="hold different classes"):
        load_dataset(tmp_path / "r")


def test_npz_datasets(tmp_path, mnist):
    np.savez(tmp_path / "l.npz", x_train=mnist.x_train[:50], y_train=mnist.y_train[:50], x_test=mnist.x_test[:20],
             y_test=mnist.y_test[:20], class_names=np.array([f"digit {d}" for d in range(10)]))  # fmt: skip
    data = load_dataset(tmp_path / "l.npz")
    assert data.class_name(3) == "digit 3" and np.array_equal(data.x_test, mnist.x_test[:20])
    np.savez(
        tmp_path / "u.npz", x_train=mnist.x_train[:50] / 255.0, x_test=np.repeat(mnist.x_test[:5, :, :, None], 3, -1)
    )
    unlabelled = load_dataset(tmp_path / "u.npz", grey=True)
    assert not unlabelled.labelled and unlabelled.x_test.shape == (5, 28, 28)
    np.testing.assert_array_equal(unlabelled.x_train, mnist.x_train[:50])  # floats in [0, 1] back to the same bytes
    np.testing.assert_array_equal(unlabelled.x_test, mnist.x_test[:5])  # equal R, G, B: the luma is the grey level
    coloured = load_dataset(tmp_path / "u.npz")  # one array in colour: both are
    assert coloured.image_shape == (28, 28, 3) and coloured.x_train.shape == (50, 28, 28, 3)
    np.testing.assert_array_equal(coloured.x_train[..., 2], mnist.x_train[:50])
    for arrays, message in (
        ({"x_train": mnist.x_train[:5]}, "lacks x_test"),
        ({"x_train": mnist.x_train[:5], "x_test": mnist.x_test[:5], "y_train": mnist.y_train[:5]}, "alone"),
        (
            {
                "x_train": mnist.x_train[:5],
                "x_test": mnist.x_test[:5],
                "y_train": mnist.y_train[:4],
                "y_test": mnist.y_test[:5],
            },
            "must hold 5 integer labels",
        ),
        ({"x_train": np.zeros((5, 28)), "x_test": mnist.x_test[:5]}, "expected images"),
    ):
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(VaelabError, match=message):
            load_dataset(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(VaelabError, match=r"not a readable \.npz"):
        load_dataset(tmp_path / "junk.npz")
    with pytest.raises(VaelabError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


def test_data_command_describes_a_dataset(digit_folder):
    result = run_cli("data", "--dataset", str(digit_folder), "--image-size", "28", "28", "--grey")
    assert result.returncode == 0, result.stderr
    assert "images 28x28 grey uint8" in result.stdout
    assert "classes: 3 (one, seven, zero)" in result.stdout and "seeded hold-out" in result.stdout
    bad = run_cli("data", "--dataset", "nothing-here")
    assert bad.returncode == 2 and "unknown dataset 'nothing-here'" in bad.stderr and bad.stderr.count("\n") == 1


@pytest.mark.slow
def test_a_run_on_your_own_images_keeps_its_dataset(tmp_path, digit_folder, vaelab):
    out = tmp_path / "run"
    args = ["--dataset", str(digit_folder), "--image-size", "28", "28", "--grey", "--epochs", "2", "--out", str(out)]
    result = vaelab("train", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    encoded = vaelab("encode", str(out))  # the run's own dataset, read as it was (28x28 grey), by default
    assert encoded.returncode == 0, encoded.stderr[-2000:]
    assert encoded.stdout.splitlines()[0].startswith("| class | test index") and "| seven |" in encoded.stdout
    other = vaelab("encode", str(out), "--dataset", "mnist")
    assert other.returncode == 2 and "was trained on other data than MNIST" in other.stderr


@pytest.mark.slow
def test_fashion_mnist_end_to_end(tmp_path, fashion, vaelab):
    """Train on real Fashion-MNIST, read the table with class names, and answer the exercise in a report."""
    runs, report = tmp_path / "runs", tmp_path / "report"
    args = ["--dataset", "fashion-mnist", "--epochs", "1", "--train-subset", "3000"]  # 1 epoch: names, not skill
    done = vaelab("report", *args, "--iwae-samples", "2", "--runs-dir", str(runs), "--out", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = runs / "fashion-mnist-mlp-epochs1-train-subset3000"
    assert run_dir.is_dir() and not (runs / "mlp-epochs1-train-subset3000").exists()  # no clash with MNIST runs
    encoded = vaelab("encode", str(run_dir), "--out", str(tmp_path / "encode"))
    assert encoded.returncode == 0, encoded.stderr[-2000:]
    table = encoded.stdout
    assert table.splitlines()[0].startswith("| class | test index")
    assert "| Trouser |" in table and "| Ankle boot |" in table
    md = (report / "report.md").read_text()
    assert md.startswith("# vaelab report: a variational autoencoder on Fashion-MNIST")
    assert table.strip() in md
    assert "### (e) Interpolation from a Dress to a Bag" in md  # classes 3 and 8, by name
    # the CLI and the report draw a run's figures with one function: the same bytes
    figures = report / "figures" / run_dir.name
    for name in ("latent_map.png", "class_table.png"):
        assert (tmp_path / "encode" / name).read_bytes() == (figures / name).read_bytes()
