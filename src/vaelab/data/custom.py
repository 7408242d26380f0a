"""Your own images as a dataset: a folder of image files, or an `.npz` of arrays.

A folder is read the way `keras.utils.image_dataset_from_directory` reads one:

    DIR/CLASS/*.png                     one subfolder per class; vaelab draws the test split
    DIR/train/CLASS/*, DIR/test/CLASS/* the split is yours
    DIR/*.png                           no subfolders: images without labels

Class names are the subfolders' names in alphabetical order. Every image is opened with Pillow
(PNG, JPEG, BMP, GIF, TIFF, WebP, ...), converted to greyscale (Pillow's "L", ITU-R 601-2 luma),
padded to a square with the median of its border pixels (so the aspect ratio is kept), and resized
to 28x28 with a Lanczos filter. Grey levels are kept as they are (MNIST is light ink on black; dark
ink on white works as well, the likelihood is symmetric). Without a given split, a seeded hold-out
of 1/7 of each class (MNIST's 10,000 of 70,000) becomes the test set; the split is recorded in the run.

An `.npz` holds `x_train`, `x_test` (uint8, or floats in [0, 1]; (n, H, W) or (n, H, W, 1 or 3)),
optionally `y_train`, `y_test` (integers 0..K-1) and `class_names`; images of another size are
converted as above.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from vaelab.data.dataset import IMAGE_SIZE, Dataset, make_dataset
from vaelab.errors import VaelabError

TEST_FRACTION = 1 / 7  # MNIST's share of test images: 10,000 of 70,000
SPLIT_SEED = 0  # the hold-out is the same every time the folder is read
CONVERSION = "greyscale (ITU-R 601-2 luma), padded to a square with the border's median, Lanczos-resized to 28x28"


def load_folder(root: Path) -> Dataset:
    """A folder of images (see the module's docstring) as a Dataset."""
    entries = _visible(root)
    dirs = {p.name: p for p in entries if p.is_dir()}
    files = [p for p in entries if p.is_file()]
    if not entries:
        raise VaelabError(f"{root} is empty; put images in it (one subfolder per class)")
    if dirs and files:
        raise VaelabError(
            f"{root} mixes files ({files[0].name}) and subfolders ({next(iter(dirs))}); use one subfolder per class"
        )
    details = {"conversion": CONVERSION}
    if set(dirs) == {"train", "test"}:
        train_x, train_y, names = _read_classes(dirs["train"])
        test_x, test_y, test_names = _read_classes(dirs["test"])
        if names != test_names:
            raise VaelabError(
                f"{dirs['train']} and {dirs['test']} hold different classes ({', '.join(names or ['none'])} vs "
                f"{', '.join(test_names or ['none'])}); give both the same subfolders"
            )
        arrays = {"x_train": train_x, "y_train": train_y, "x_test": test_x, "y_test": test_y}
        details["split"] = "given (train/ and test/)"
    else:
        x, y, names = _read_classes(root) if dirs else (_read_images(files), None, None)
        arrays = _hold_out(x, y)
        details["split"] = f"seeded hold-out of {TEST_FRACTION:.4f} of each class (seed {SPLIT_SEED})"
    return make_dataset(
        arrays, name=str(root), source=f"images in {root}", class_names=names, path=root, details=details
    )


def load_npz(path: Path) -> Dataset:
    """An `.npz` of arrays (see the module's docstring) as a Dataset."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise VaelabError(f"{path} is not a readable .npz file ({err})") from None
    missing = [k for k in ("x_train", "x_test") if k not in found]
    if missing:
        raise VaelabError(f"{path} lacks {', '.join(missing)}; it needs x_train and x_test (y_train, y_test optional)")
    arrays = {k: _as_images(found[k], f"{path}: {k}") for k in ("x_train", "x_test")}
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
    return make_dataset(arrays, name=str(path), source=f"arrays in {path}", class_names=names, path=path)


def convert_image(image) -> np.ndarray:
    """A Pillow image -> (28, 28) uint8: greyscale, padded to a square with its border's median, resized."""
    from PIL import Image

    grey = np.asarray(image.convert("L"))
    h, w = grey.shape
    if h != w:
        border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        side = max(h, w)
        square = np.full((side, side), np.median(border), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = grey
        grey = square
    if grey.shape != (IMAGE_SIZE, IMAGE_SIZE):
        grey = np.asarray(Image.fromarray(grey).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))
    return grey


def _visible(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as err:
        raise VaelabError(f"{directory} is unreadable ({err.strerror})") from None


def _read_classes(directory: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
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
        images.append(_read_images(files))
        labels.append(np.full(len(files), label, dtype=np.int32))
    return np.concatenate(images), np.concatenate(labels), [p.name for p in entries]


def _read_images(files: list[Path]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for k, path in enumerate(files):
        try:
            with Image.open(path) as image:
                out[k] = convert_image(image)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise VaelabError(f"{path} is not an image vaelab can read ({err}); remove or replace it") from None
    return out


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
    """(n, H, W[, 1|3]) uint8 or floats in [0, 1] -> (n, 28, 28) uint8."""
    if a.ndim == 4 and a.shape[-1] in (1, 3):
        a = a[..., 0] if a.shape[-1] == 1 else np.rint(a @ np.array([0.299, 0.587, 0.114])).astype(a.dtype)
    if a.ndim != 3 or len(a) == 0:
        raise VaelabError(f"{origin} has shape {list(a.shape)}; expected images (n, height, width[, 1 or 3])")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise VaelabError(f"{origin} is {a.dtype}; give uint8 pixels or floats in [0, 1]")
        a = np.rint(a * 255).astype(np.uint8)
    if a.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        return a
    from PIL import Image

    return np.stack([convert_image(Image.fromarray(image)) for image in a])


def _as_labels(y: np.ndarray, n: int, origin: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1) if np.asarray(y).ndim == 2 and np.asarray(y).shape[1] == 1 else np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise VaelabError(f"{origin} must hold {n} integer labels >= 0 (one per image), got {y.dtype}{list(y.shape)}")
    return y.astype(np.int32)
