"""`dsprites`: DeepMind's dSprites (Matthey et al., 2017), 737,280 64x64 binary images with known factors.

Every combination of five factors, drawn once each, white sprite on black:

    shape        square, ellipse or heart (`SHAPE_NAMES`): the label, and a categorical factor
    scale        6 values, 0.5 to 1
    orientation  40 angles, 0 to 2 pi (the circle's end meets its start: the metrics take it as ordinal)
    x, y         32 positions each, 0 to 1

The one published file, `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz` from the deepmind/dsprites-dataset GitHub
repository, holds `imgs` (737,280, 64, 64) of 0/1, `latents_classes` (737,280, 6), each factor's value as its
index (column 0 is the colour, always 0), `latents_values` and a pickled `metadata`, which is not read. It is
checked against its MD5 (`DSPRITES_MD5`: the repository publishes no checksum; this is the digest other
dSprites loaders check, not yet confirmed against the real file, which vaelab's build machine could not
fetch), read, and split: a seeded draw of `TEST_SIZE` images is the test set, in their order in the file,
the rest the training set. Pixels are stored as 0 and 255. The factors of the test
images (their class indices, `FACTORS`) are cached with the arrays as `factors_test` and checked on every load.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from vaelab.data.dataset import Arrays, Factors
from vaelab.data.sources import Builtin, Published
from vaelab.errors import VaelabError

DSPRITES_FILE = Published(
    "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
    "https://github.com/deepmind/dsprites-dataset/raw/master/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
    None,  # no sha256 is published; read_dsprites checks DSPRITES_MD5 instead
)
DSPRITES_MD5 = "7da33b31b13a06f4b04a70402ce90c2e"
IMAGES = 737_280  # 3 shapes x 6 scales x 40 orientations x 32 x 32 positions
TEST_SIZE = 10_000  # as many test images as the other built-ins: metrics and timings compare
SPLIT_SEED = 2017  # the one draw of the test images
SIDE = 64
SHAPE_NAMES = ("square", "ellipse", "heart")
FACTORS = ("shape", "scale", "orientation", "x", "y")  # columns 1-5 of latents_classes


def read_dsprites(paths: dict[str, Path]) -> Arrays:
    """The published file, checked against its MD5, as the arrays of a built-in dataset (see `read_dsprites_npz`)."""
    path = paths[DSPRITES_FILE.name]
    try:
        with open(path, "rb") as f:
            found = hashlib.file_digest(f, "md5").hexdigest()
    except OSError as err:
        raise VaelabError(f"{path} is unreadable ({err.strerror}); fix its permissions or remove it") from None
    if found != DSPRITES_MD5:
        raise VaelabError(f"{path} has MD5 {found}, not the published file's {DSPRITES_MD5}; download it again")
    return read_dsprites_npz(path)


def read_dsprites_npz(path: Path, test_size: int = TEST_SIZE) -> Arrays:
    """An `.npz` in dSprites' layout -> x_train, y_train, x_test, y_test (uint8, pixels 0 or 255, labels the shape)
    and factors_test (int64 (test_size, 5), the test images' factor indices, columns `FACTORS`)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, classes = npz["imgs"], npz["latents_classes"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise VaelabError(f"{path} is not dSprites' .npz ({err}); download it again") from None
    n = len(images)
    if images.shape[1:] != (SIDE, SIDE) or classes.shape != (n, 6) or n <= test_size:
        raise VaelabError(
            f"{path} holds imgs {list(images.shape)} and latents_classes {list(classes.shape)}, not dSprites' "
            f"(n, {SIDE}, {SIDE}) and (n, 6); download it again"
        )
    is_test = np.zeros(n, bool)
    is_test[np.random.default_rng(SPLIT_SEED).choice(n, test_size, replace=False)] = True
    pixels = np.minimum(images, 1, out=images)  # in place: the real file's images take 3 GB
    pixels *= 255
    factors = np.asarray(classes[:, 1:], np.int64)
    return {
        "x_train": pixels[~is_test],
        "y_train": factors[~is_test, 0].astype(np.uint8),
        "x_test": pixels[is_test],
        "y_test": factors[is_test, 0].astype(np.uint8),
        "factors_test": factors[is_test],
    }


def test_factors(arrays: Arrays) -> Factors:
    """The test images' factors as the disentanglement metrics take them; only the shape is categorical."""
    return Factors(np.asarray(arrays["factors_test"]), FACTORS, (True, False, False, False, False))


DSPRITES = Builtin(
    "dsprites",
    "dSprites",
    SHAPE_NAMES,
    IMAGES - TEST_SIZE,  # the per-shape counts of a random split are not fixed: only the totals are checked
    TEST_SIZE,
    help=f"download {DSPRITES_FILE.name} from https://github.com/deepmind/dsprites-dataset into a directory and pass "
    "it with --data-dir",
    image_shape=(SIDE, SIDE, 1),
    files=(DSPRITES_FILE,),
    read=read_dsprites,
    factors=test_factors,
    extra=("factors_test",),
)
