"""Your own images as a dataset: a folder of image files, or an `.npz` of arrays.

A folder is read the way `keras.utils.image_dataset_from_directory` reads one:

    DIR/CLASS/*.png                     one subfolder per class; vaelab draws the test split
    DIR/train/CLASS/*, DIR/test/CLASS/* the split is yours
    DIR/*.png                           no subfolders: images without labels

Class names are the subfolders' names in alphabetical order. Every image is opened with Pillow
(PNG, JPEG, BMP, GIF, TIFF, WebP, ...) and kept at its own size and colour: the dataset is colour
(RGB, transparency dropped) when any image is, grey when all are (an RGB file whose pixels all have
R = G = B counts as grey). Pixels become 8-bit: 16-bit images (and the 32-bit integer images Pillow
makes of 16-bit PGMs, whose values fit in 16 bits) are scaled, v * 255 / 65535 rounded, and the
loader says so once; floating-point images, wider integers, and images over MAX_IMAGE_PIXELS are
refused in one line naming the file. Images of different sizes need `image_size=(H, W)` (`--image-size H W`):
each image is then padded to that aspect ratio and resized (`vaelab.data.images`); `grey=True`
(`--grey`) converts them to grey (ITU-R 601-2 luma). `--image-size 28 28 --grey` reads a folder as
vaelab's first version did, to MNIST's shape. Without a given split, a seeded hold-out of 1/7 of each
class (MNIST's 10,000 of 70,000) becomes the test set; the split is recorded in the run.

An `.npz` holds `x_train`, `x_test` (uint8, or floats in [0, 1]; (n, H, W) or (n, H, W, 1 or 3)),
optionally `y_train`, `y_test` (integers 0..K-1) and `class_names`; the same options convert its
images, and when one of the two arrays is colour the other's grey images become RGB. Test images with known
factors of variation (for the disentanglement metrics) add `factors`: numbers (n_test, K), row k those of
x_test[k]; optionally `factor_names` (K strings; default factor0, factor1, ...) and `categorical_factors`, the
names of the factors whose numbers are labels rather than values (default: none).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vaelab.data.dataset import Dataset, Factors, make_dataset
from vaelab.data.images import GREY, RESIZE, fit, luma
from vaelab.errors import VaelabError

TEST_FRACTION = 1 / 7  # MNIST's share of test images: 10,000 of 70,000
SPLIT_SEED = 0  # the hold-out is the same every time the folder is read
GREY_MODES = ("1", "L", "LA", "La")  # Pillow's modes of 8-bit grey images
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")  # Pillow's modes of 16-bit grey images
# Pillow's own guard against decompression bombs (its MAX_IMAGE_PIXELS): a header declaring more pixels than this
# is refused before any is decoded. 89 million RGB pixels are 268 MB, far beyond any image a VAE here trains on.
MAX_IMAGE_PIXELS = 89_478_485
SCALED = "16-bit pixels scaled to 8 bits (v * 255 / 65535, rounded)"
Size = tuple[int, int] | None


def _quiet(msg: str) -> None:
    pass


def load_folder(
    root: Path, *, image_size: Size = None, grey: bool = False, log: Callable[[str], None] = _quiet
) -> Dataset:
    """A folder of images (see the module's docstring) as a Dataset; `log` hears, once, of 16-bit images scaled."""
    entries = _visible(root)
    dirs = {p.name: p for p in entries if p.is_dir()}
    files = [p for p in entries if p.is_file()]
    if not entries:
        raise VaelabError(f"{root} is empty; put images in it (one subfolder per class)")
    if dirs and files:
        raise VaelabError(
            f"{root} mixes files ({files[0].name}) and subfolders ({next(iter(dirs))}); use one subfolder per class"
        )
    reader = _Reader(image_size, grey)
    if set(dirs) == {"train", "test"}:
        train_x, train_y, names = _read_classes(dirs["train"], reader)
        test_x, test_y, test_names = _read_classes(dirs["test"], reader)
        if names != test_names:
            raise VaelabError(
                f"{dirs['train']} and {dirs['test']} hold different classes ({', '.join(names or ['none'])} vs "
                f"{', '.join(test_names or ['none'])}); give both the same subfolders"
            )
        train_x, test_x = reader.finish([train_x, test_x])
        arrays = {"x_train": train_x, "y_train": train_y, "x_test": test_x, "y_test": test_y}
        split = "given (train/ and test/)"
    else:
        x, y, names = _read_classes(root, reader) if dirs else (reader.read_all(files), None, None)
        (x,) = reader.finish([x])
        arrays = _hold_out(x, y)
        split = f"seeded hold-out of {TEST_FRACTION:.4f} of each class (seed {SPLIT_SEED})"
    details = {"conversion": reader.conversion(arrays["x_train"]), "split": split}
    if reader.scaled:
        log(f"vaelab: {root}: {reader.scaled} images of 16 bits; {SCALED}")
    return make_dataset(
        arrays, name=str(root), source=f"images in {root}", class_names=names, path=root, details=details
    )


def load_npz(path: Path, *, image_size: Size = None, grey: bool = False) -> Dataset:
    """An `.npz` of arrays (see the module's docstring) as a Dataset."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise VaelabError(f"{path} is not a readable .npz file ({err})") from None
    missing = [k for k in ("x_train", "x_test") if k not in found]
    if missing:
        raise VaelabError(f"{path} lacks {', '.join(missing)}; it needs x_train and x_test (y_train, y_test optional)")
    reader = _Reader(image_size, grey)
    x = [reader.convert_all(_as_images(found[k], f"{path}: {k}"), k) for k in ("x_train", "x_test")]
    arrays = dict(zip(("x_train", "x_test"), reader.finish(x), strict=True))
    has_labels = [k for k in ("y_train", "y_test") if k in found]
    names = None
    if has_labels:
        if len(has_labels) == 1:
            raise VaelabError(f"{path} holds {has_labels[0]} alone; give both y_train and y_test, or neither")
        for key, images in (("y_train", "x_train"), ("y_test", "x_test")):
            arrays[key] = _as_labels(found[key], len(arrays[images]), f"{path}: {key}")
        count = int(max(arrays["y_train"].max(initial=0), arrays["y_test"].max(initial=0))) + 1
        names = [str(k) for k in range(count)]
        if "class_names" in found:
            names = [str(n) for n in np.asarray(found["class_names"]).reshape(-1)]
            if len(names) < count:
                raise VaelabError(f"{path}: class_names has {len(names)} names, but the labels go up to {count - 1}")
    details = {"conversion": reader.conversion(arrays["x_train"])}
    factors = _factors(found, len(arrays["x_test"]), path) if "factors" in found else None
    return make_dataset(
        arrays, name=str(path), source=f"arrays in {path}", class_names=names, path=path, details=details,
        factors=factors,
    )  # fmt: skip


def _factors(found: dict[str, np.ndarray], n: int, path: Path) -> Factors:
    """The `.npz`'s `factors` (n, K) (or (n,): one factor), with `factor_names` and `categorical_factors`, checked."""
    values = np.asarray(found["factors"])
    values = values[:, None] if values.ndim == 1 else values
    if values.ndim != 2 or len(values) != n or values.shape[1] == 0 or not np.issubdtype(values.dtype, np.number):
        raise VaelabError(
            f"{path}: factors is {values.dtype}{list(values.shape)}; give numbers (n_test, K), one row per test image "
            f"({n})"
        )
    if not np.all(np.isfinite(values)):
        raise VaelabError(f"{path}: factors holds NaN or infinite values; give finite numbers")
    k = values.shape[1]
    names = tuple(f"factor{i}" for i in range(k))
    if "factor_names" in found:
        names = tuple(str(n) for n in np.asarray(found["factor_names"]).reshape(-1))
        if len(names) != k or len(set(names)) != k:
            raise VaelabError(f"{path}: factor_names has {len(names)} names, not {k} different ones (one per column)")
    categorical = {str(n) for n in np.asarray(found.get("categorical_factors", [])).reshape(-1)}
    unknown = categorical - set(names)
    if unknown:
        raise VaelabError(f"{path}: categorical_factors names {', '.join(sorted(unknown))}, not in {', '.join(names)}")
    return Factors(values, names, tuple(n in categorical for n in names))


class _Reader:
    """Reads images one by one, converting each as asked; `finish` gives them one size and channel count."""

    def __init__(self, image_size: Size, grey: bool):
        self.image_size, self.grey = image_size, grey
        self.first: tuple[str, tuple[int, int]] | None = None  # an image's name and size, for the error
        self.colour = False  # whether any image read is colour
        self.scaled = 0  # how many 16-bit images were scaled to 8 bits

    def open(self, path: Path) -> np.ndarray:
        """One image file -> uint8 (h, w) or (h, w, 3), converted."""
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
                with Image.open(path) as image:
                    pixels = self._pixels(image, path)
        except Image.DecompressionBombError:
            raise _too_large(path, None) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            raise VaelabError(f"{path} is not an image vaelab can read ({err}); remove or replace it") from None
        return self.convert(pixels, path.name)

    def _pixels(self, image, path: Path) -> np.ndarray:
        """An open Pillow image -> uint8 (h, w) or (h, w, 3): 8-bit modes through Pillow, 16-bit ones scaled."""
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise _too_large(path, image.size)
        if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
            values = np.asarray(image).astype(np.int64)
            if image.mode == "I" and (values.min(initial=0) < 0 or values.max(initial=0) > 65535):
                raise VaelabError(
                    f"{path} holds 32-bit integer pixels ({values.min()} to {values.max()}); vaelab reads 8- and "
                    "16-bit images: save it as an 8- or 16-bit PNG"
                )
            self.scaled += 1
            return ((values * 255 + 32767) // 65535).astype(np.uint8)
        if image.mode == "F":
            raise VaelabError(
                f"{path} holds floating-point pixels; vaelab reads 8- and 16-bit images: save it as an 8- or 16-bit PNG"
            )
        if self.grey or image.mode in GREY_MODES:
            return np.asarray(image.convert("L"))
        if image.mode in ("P", "PA"):  # a palette with transparency goes through RGBA (as Pillow asks)
            image = image.convert("RGBA")
        pixels = np.asarray(image.convert("RGB"))
        if (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
            pixels = pixels[..., 0]  # an RGB file of a grey picture
        return pixels

    def convert(self, image: np.ndarray, name: str) -> np.ndarray:
        """uint8 (h, w) or (h, w, 3) -> grey if asked, resized if asked; checks that sizes agree otherwise."""
        if self.grey and image.ndim == 3:
            image = luma(image)
        if self.image_size is not None:
            image = fit(image, self.image_size)
        elif self.first is None:
            self.first = (name, image.shape[:2])
        elif image.shape[:2] != self.first[1]:
            raise VaelabError(
                f"images of different sizes: {self.first[0]} is {_hw(self.first[1])}, {name} is "
                f"{_hw(image.shape[:2])}; pass --image-size H W to resize them all"
            )
        self.colour |= image.ndim == 3
        return image

    def read_all(self, files: list[Path]) -> list[np.ndarray]:
        return [self.open(path) for path in files]

    def convert_all(self, images: np.ndarray, name: str) -> np.ndarray:
        """`convert` for an array of images (n, h, w[, 3]) of one size, without a copy where nothing changes."""
        if self.grey and images.ndim == 4:
            images = luma(images)
        if self.image_size is not None and images.shape[1:3] != tuple(self.image_size):
            return np.stack([self.convert(image, name) for image in images])
        self.convert(images[0], name)  # the size check, and whether it is colour
        return images

    def finish(self, groups: list) -> list[np.ndarray]:
        """Each group of images (a list, or an array) as one uint8 array: (n, H, W) when all are grey, else
        (n, H, W, 3)."""
        promote = self.colour
        arrays = [np.stack([np.repeat(i[..., None], 3, -1) if promote and i.ndim == 2 else i for i in g])
                  if isinstance(g, list) else g for g in groups]  # fmt: skip
        return [np.repeat(a[..., None], 3, -1) if self.colour and a.ndim == 3 else a for a in arrays]

    def conversion(self, x: np.ndarray) -> str:
        """How the images were converted, in words (recorded with a run)."""
        steps = [GREY] if self.grey else ["RGB" if x.ndim == 4 else "grey, as stored"]
        if self.scaled:
            steps.append(SCALED)
        if self.image_size is not None:
            steps.append(f"{RESIZE} to {_hw(self.image_size)}")
        else:
            steps.append(f"{_hw(x.shape[1:3])}, as stored")
        return ", ".join(steps)


def _too_large(path: Path, size: tuple[int, int] | None) -> VaelabError:
    declared = f"declares {size[0]}x{size[1]} pixels" if size else "declares more pixels than Pillow will decode"
    return VaelabError(
        f"{path} {declared}, over the limit of {MAX_IMAGE_PIXELS:,} pixels per image; shrink it or remove it"
    )


def _hw(size) -> str:
    return f"{size[0]}x{size[1]}"


def _visible(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as err:
        raise VaelabError(f"{directory} is unreadable ({err.strerror})") from None


def _read_classes(directory: Path, reader: _Reader) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """One subfolder per class, in alphabetical order -> images, labels, class names."""
    entries = _visible(directory)
    stray = [p for p in entries if not p.is_dir()]
    if stray:
        raise VaelabError(f"{stray[0]} is a file beside the class folders of {directory}; move it into a class folder")
    if not entries:
        raise VaelabError(f"{directory} holds no class folders; put each class's images in a subfolder")
    images, labels = [], []
    for label, folder in enumerate(entries):
        files = [p for p in _visible(folder) if p.is_file()]
        if not files:
            raise VaelabError(f"class folder {folder} holds no images; add some or remove it")
        images.extend(reader.read_all(files))
        labels.append(np.full(len(files), label, dtype=np.int32))
    return images, np.concatenate(labels), [p.name for p in entries]


def _hold_out(x: np.ndarray, y: np.ndarray | None) -> dict[str, np.ndarray | None]:
    """A seeded split: 1/7 of each class (or of all images, without labels) for testing, at least one each."""
    rng = np.random.default_rng(SPLIT_SEED)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if y is not None else [np.arange(len(x))]
    test = []
    for members in groups:
        if len(members) < 2:
            raise VaelabError("each class needs at least 2 images (one to train on, one to test on)")
        test.extend(rng.permutation(members)[: max(1, round(len(members) * TEST_FRACTION))])
    is_test = np.zeros(len(x), bool)
    is_test[test] = True
    return {
        "x_train": x[~is_test],
        "y_train": y[~is_test] if y is not None else None,
        "x_test": x[is_test],
        "y_test": y[is_test] if y is not None else None,
    }


def _as_images(a: np.ndarray, origin: str) -> np.ndarray:
    """(n, H, W[, 1|3]) uint8 or floats in [0, 1] -> uint8 (n, H, W) or (n, H, W, 3)."""
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] == 3)) or len(a) == 0 or 0 in a.shape:
        raise VaelabError(f"{origin} has shape {list(a.shape)}; expected images (n, height, width[, 1 or 3])")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise VaelabError(f"{origin} is {a.dtype}; give uint8 pixels or floats in [0, 1]")
        a = np.rint(a * 255).astype(np.uint8)
    return a


def _as_labels(y: np.ndarray, n: int, origin: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1) if np.asarray(y).ndim == 2 and np.asarray(y).shape[1] == 1 else np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise VaelabError(f"{origin} must hold {n} integer labels >= 0 (one per image), got {y.dtype}{list(y.shape)}")
    return y.astype(np.int32)
