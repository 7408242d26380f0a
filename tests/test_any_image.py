"""Folders, .npz files and shards of any size and colour; --image-size and --grey from the command line to the run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from vaelab.config import RunConfig, make_config
from vaelab.data import load_dataset
from vaelab.data.batches import Batches
from vaelab.data.shard_writer import convert
from vaelab.data.shards import shard_rows_for
from vaelab.errors import VaelabError
from vaelab.run import run_dir_name


def colour_images(n: int, size=(20, 30), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def save(folder, images, mode=None):
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        picture = Image.fromarray(image)
        (picture.convert(mode) if mode else picture).save(folder / f"{k:03d}.png")


def test_a_colour_folder_keeps_its_size_and_colour(tmp_path):
    red, blue = colour_images(7, seed=1), colour_images(7, seed=2)
    save(tmp_path / "f" / "red", red)
    save(tmp_path / "f" / "blue", blue)
    save(tmp_path / "f" / "grey", colour_images(7, seed=3)[..., 0], mode="L")  # grey files among colour ones
    data = load_dataset(tmp_path / "f")
    assert data.image_shape == (20, 30, 3) and data.x_train.shape[1:] == (20, 30, 3)
    assert data.details["conversion"] == "RGB, 20x30, as stored"
    every = np.concatenate([data.x_train, data.x_test])
    for k in range(7):  # PNG is lossless: each image comes back exactly, wherever the split put it
        assert any(np.array_equal(image, red[k]) for image in every)
    greys = every[np.concatenate([data.y_train, data.y_test]) == data.class_names.index("grey")]
    assert len(greys) == 7 and (greys[..., 0] == greys[..., 2]).all()  # grey images become RGB with R = G = B

    small = load_dataset(tmp_path / "f", image_size=(10, 15), grey=True)
    assert small.image_shape == (10, 15, 1) and small.x_train.ndim == 3
    assert small.details["conversion"].startswith("greyscale (ITU-R 601-2 luma), padded")
    square = load_dataset(tmp_path / "f", image_size=(16, 16))
    assert square.image_shape == (16, 16, 3)


def test_a_grey_folder_stays_grey_and_an_rgb_file_of_a_grey_picture_counts_as_grey(tmp_path):
    levels = colour_images(6, size=(12, 9))[..., 1]
    save(tmp_path / "g" / "a", levels[:3], mode="L")
    save(tmp_path / "g" / "b", levels[3:], mode="RGB")  # R = G = B
    data = load_dataset(tmp_path / "g")
    assert data.image_shape == (12, 9, 1) and data.x_train.shape[1:] == (12, 9)


def test_npz_of_any_shape(tmp_path):
    x = colour_images(10, size=(8, 12))
    np.savez(tmp_path / "c.npz", x_train=x, x_test=x[:3])
    data = load_dataset(tmp_path / "c.npz")
    assert data.image_shape == (8, 12, 3)
    np.testing.assert_array_equal(data.x_train, x)
    np.savez(tmp_path / "one.npz", x_train=x[..., :1], x_test=x[:3, ..., :1])  # (n, H, W, 1): grey
    assert load_dataset(tmp_path / "one.npz").x_train.shape == (10, 8, 12)
    resized = load_dataset(tmp_path / "c.npz", image_size=(4, 6))
    assert resized.x_test.shape == (3, 4, 6, 3)
    np.savez(tmp_path / "two.npz", x_train=x[..., :2], x_test=x[:3, ..., :2])
    with pytest.raises(VaelabError, match=r"has shape \[10, 8, 12, 2\]; expected images"):
        load_dataset(tmp_path / "two.npz")
    np.savez(tmp_path / "sizes.npz", x_train=x, x_test=colour_images(3, size=(8, 8)))
    with pytest.raises(VaelabError, match=r"x_train is 8x12, x_test is 8x8; pass --image-size H W"):
        load_dataset(tmp_path / "sizes.npz")
    assert load_dataset(tmp_path / "sizes.npz", image_size=(8, 8)).image_shape == (8, 8, 3)


def test_shards_of_colour_images(tmp_path):
    x = colour_images(40, size=(8, 12))
    y = np.arange(40) % 4
    np.savez(tmp_path / "c.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    source = load_dataset(tmp_path / "c.npz")
    manifest = convert([str(tmp_path / "c.npz")], tmp_path / "shards", shard_rows=7, log=lambda m: None)
    assert manifest["sha256"] == source.sha256 and manifest["arrays"]["x_train"]["shape"] == [30, 8, 12, 3]
    shards = load_dataset(tmp_path / "shards")
    assert shards.image_shape == (8, 12, 3) and shards.sha256 == source.sha256
    np.testing.assert_array_equal(shards.x_train.take([29, 0, 8]), x[[29, 0, 8]])
    batch = Batches(shards.x_train, 8, seed=0)[3]  # the training batches stream colour images as they are
    assert batch.shape == (6, 8, 12, 3) and batch.dtype == np.float32 and batch.max() <= 1
    assert shard_rows_for((28, 28)) == 65536 and shard_rows_for((32, 32, 3)) == 16725  # 51 MB a shard

    grey = convert([str(tmp_path / "c.npz")], tmp_path / "grey", grey=True, image_size=(4, 4), log=lambda m: None)
    assert grey["arrays"]["x_test"]["shape"] == [10, 4, 4]
    with pytest.raises(VaelabError, match="holds shards, stored as they were converted; convert again"):
        load_dataset(tmp_path / "grey", grey=True)
    np.savez(tmp_path / "d.npz", x_train=x[:5, :, :8], y_train=y[:5], x_test=x[5:8, :, :8], y_test=y[5:8])
    with pytest.raises(VaelabError, match=r"d\.npz: x_train holds rows of shape \[8, 8, 3\], the earlier ones"):
        convert([str(tmp_path / "c.npz"), str(tmp_path / "d.npz")], tmp_path / "mixed", log=lambda m: None)


def test_a_run_records_how_its_images_were_read():
    config = make_config("mlp", dataset="photos", image_size=(32, 24), grey=True)
    again = RunConfig.from_dict(config.to_dict())  # config.json holds a list; it comes back a tuple
    assert again == config and again.image_size == (32, 24) and again.grey
    assert run_dir_name(config) == "photos-32x24-grey-mlp"
    old = config.to_dict()
    del old["image_size"], old["grey"]  # a run made before these options
    assert RunConfig.from_dict(old).image_size is None and not RunConfig.from_dict(old).grey
    for bad, message in (((0, 28), "each side must be from 1 to 4096"), ((28,), "two whole numbers")):
        with pytest.raises(VaelabError, match=message):
            make_config("mlp", image_size=bad)


def test_image_options_on_the_command_line(tmp_path):
    save(tmp_path / "f" / "a", colour_images(7, size=(10, 14)))
    shown = run_cli("data", "--dataset", str(tmp_path / "f"), "--image-size", "6", "8")
    assert shown.returncode == 0, shown.stderr
    assert "train:   6 images 6x8x3 colour uint8" in shown.stdout
    for args, message in (
        (["--image-size", "0", "28"], "argument --image-size: expected an integer >= 1, got 0"),
        (["--dataset", "shapes", "--image-size", "28", "28"], "Shapes's images are 32x32, always"),
        (["--dataset", "mnist", "--grey"], "MNIST is grey already; leave out --grey"),
    ):
        bad = run_cli("data", *args, "--data-dir", str(tmp_path / "cache"))
        assert bad.returncode == 2 and message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr


def _png(path, pixels: np.ndarray, colour_type: int, bit_depth: int, size=None) -> None:
    """A PNG written byte by byte (Pillow writes no 16-bit colour), `pixels` (h, w[, c]) big-endian; `size` (w, h)
    declares another size in the header than the pixels have."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = pixels.shape[:2]
    width, height = size or (w, h)
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))  # fmt: skip


def test_16_bit_images_are_scaled_to_8_bits_not_clipped(tmp_path, capsys):
    gradient = (np.arange(16 * 16).reshape(16, 16) * 257).astype(">u2")  # 0 to 65535 in steps of 257
    folder = tmp_path / "sixteen"
    folder.mkdir()
    for k in range(7):
        Image.fromarray(gradient.astype(np.uint16)).save(folder / f"grey{k}.png")  # Pillow: mode I;16
    data = load_dataset(folder)
    every = np.concatenate([data.x_train, data.x_test])
    assert data.image_shape == (16, 16, 1)
    assert np.array_equal(every[0], np.arange(256).reshape(16, 16))  # each 16-bit level v lands on v / 257
    assert "16-bit pixels scaled to 8 bits" in data.details["conversion"]
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and "7 images of 16 bits" in said[0]  # said once, not once per image

    rgb = np.stack([gradient, 65535 - gradient, np.full_like(gradient, 32896)], -1).astype(">u2")
    colour = tmp_path / "rgb16"
    colour.mkdir()
    for k in range(7):
        _png(colour / f"{k}.png", rgb, colour_type=2, bit_depth=16)
    x = load_dataset(colour).x_train[0]
    assert np.array_equal(x[..., 0], np.arange(256).reshape(16, 16)) and x[0, 0, 1] == 255
    assert abs(int(x[0, 0, 2]) - 128) <= 1  # Pillow keeps the high byte of 16-bit colour: within one level


def test_palette_cmyk_and_alpha_images_are_read_as_their_colours(tmp_path):
    levels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    folder = tmp_path / "modes"
    for mode in ("P", "CMYK", "LA", "RGBA", "1"):
        (folder / mode).mkdir(parents=True)
    for k in range(3):
        palette = Image.fromarray(np.stack([levels, 255 - levels, levels], -1)).convert("P")
        palette.info["transparency"] = 0
        palette.save(folder / "P" / f"{k}.png", transparency=0)
        Image.fromarray(np.stack([levels] * 3, -1)).convert("CMYK").save(folder / "CMYK" / f"{k}.tiff")
        Image.fromarray(levels).convert("LA").save(folder / "LA" / f"{k}.png")
        Image.fromarray(np.stack([levels] * 3 + [levels], -1), "RGBA").save(folder / "RGBA" / f"{k}.png")
        Image.fromarray(levels > 128).save(folder / "1" / f"{k}.png")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning from Pillow about the palette's transparency
        data = load_dataset(folder)
    every, labels = np.concatenate([data.x_train, data.x_test]), np.concatenate([data.y_train, data.y_test])
    first = {name: every[labels == k][0] for k, name in enumerate(data.class_names)}
    assert np.array_equal(first["LA"][..., 0], levels) and np.array_equal(first["RGBA"][..., 1], levels)
    assert np.array_equal(first["CMYK"][..., 0], levels)  # Pillow's CMYK of a grey comes back as that grey
    assert np.array_equal(first["P"], np.asarray(palette.convert("RGBA"))[..., :3])  # the palette's own colours
    assert set(np.unique(first["1"])) == {0, 255}


@pytest.mark.parametrize("kind", ["float", "int32", "huge"])
def test_images_vaelab_cannot_read_are_refused_naming_the_file(tmp_path, kind):
    folder = tmp_path / kind
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((4, 4), 7, np.uint8)).save(folder / f"ok{k}.png")
    name = folder / "bad.tiff"
    if kind == "float":
        Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)).save(name)
    elif kind == "int32":
        Image.fromarray(np.full((4, 4), 100_000, np.int32)).save(name)
    else:
        name = folder / "bad.png"
        _png(name, np.zeros((1, 1), np.uint8), colour_type=0, bit_depth=8, size=(100_000, 100_000))
    with pytest.raises(VaelabError) as err:
        load_dataset(folder)
    message = str(err.value)
    assert str(name) in message and "\n" not in message
    assert {"float": "floating-point", "int32": "32-bit integer", "huge": "89,478,485 pixels"}[kind] in message
