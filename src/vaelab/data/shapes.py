"""`shapes`: a generated colour dataset with known factors, 32x32x3, the same every time (like dSprites).

Each image is one flat-coloured shape on a black background, drawn from five independent factors:

    shape   the class: square, circle, triangle, diamond or cross (`SHAPE_NAMES`); exactly balanced
    colour  one of the eight colours of `PALETTE` (`COLOUR_NAMES`), uniform
    size    the shape's half-width in pixels, 4 to 10, uniform
    x, y    the column and row of its centre, in pixels from the left and top edges: uniform over the
            positions where the whole shape fits (`size` to 32 - `size`)

A pixel belongs to the shape when its centre does (no anti-aliasing: every pixel is the background or
the shape's colour). 50,000 training and 10,000 test images, as CIFAR-10, so that timings compare.
The factors are drawn from `SEED` (the training set from `(SEED, 0)`, the test set from `(SEED, 1)`)
before any drawing, so `shapes_factors(split)` returns them without drawing an image; row k of the
factors describes image k of the split.
"""

from __future__ import annotations

import numpy as np

from vaelab.data.dataset import Arrays, Factors
from vaelab.data.sources import Builtin, Log, Source

SEED = 2024  # the one draw of the dataset: its checksum is part of every run trained on it
TRAIN_SIZE, TEST_SIZE = 50_000, 10_000  # CIFAR-10's counts, so benchmarks on either compare
SIDE = 32  # pixels, height and width
SHAPE_NAMES = ("square", "circle", "triangle", "diamond", "cross")
COLOUR_NAMES = ("red", "green", "blue", "yellow", "cyan", "magenta", "orange", "white")
PALETTE = np.array(
    [[230, 25, 35], [40, 200, 60], [40, 90, 235], [245, 220, 40], [40, 215, 225], [215, 45, 210], [250, 140, 25],
     [240, 240, 240]],
    dtype=np.uint8,
)  # fmt: skip
SIZES = range(4, 11)  # half-widths in pixels: 8 to 20 pixels across
FACTORS = ("shape", "colour", "size", "x", "y")
CATEGORICAL = ("shape", "colour")  # labels, not values: the disentanglement metrics treat them as classes
CHUNK = 5000  # images drawn at a time: the coordinate arrays of a chunk take 20 MB


def shapes_factors(split: str = "train") -> dict[str, np.ndarray]:
    """The factors of every image of `split` ("train" or "test"): int arrays (n,) named as `FACTORS`."""
    if split not in ("train", "test"):
        raise ValueError(f"split is 'train' or 'test', not {split!r}")
    n = TRAIN_SIZE if split == "train" else TEST_SIZE
    rng = np.random.default_rng([SEED, 0 if split == "train" else 1])
    shape = rng.permutation(np.arange(n) % len(SHAPE_NAMES))  # exactly n / 5 of each class
    colour = rng.integers(0, len(PALETTE), n)
    size = rng.integers(SIZES.start, SIZES.stop, n)
    # a centre from size to SIDE - size: SIDE - 2 size + 1 places, uniform
    x = size + np.floor(rng.random(n) * (SIDE - 2 * size + 1)).astype(np.int64)
    y = size + np.floor(rng.random(n) * (SIDE - 2 * size + 1)).astype(np.int64)
    return {"shape": shape, "colour": colour, "size": size, "x": x, "y": y}


def test_factors(arrays: Arrays | None = None) -> Factors:
    """The test images' factors as the disentanglement metrics take them: (10,000, 5), columns `FACTORS`. (x and y
    depend on size, as every centre keeps the whole shape inside: the factors are not quite independent.)"""
    f = shapes_factors("test")
    return Factors(np.stack([f[k] for k in FACTORS], 1), FACTORS, tuple(k in CATEGORICAL for k in FACTORS))


def draw(factors: dict[str, np.ndarray]) -> np.ndarray:
    """The images (n, 32, 32, 3) uint8 that `factors` describe."""
    n = len(factors["shape"])
    images = np.zeros((n, SIDE, SIDE, 3), np.uint8)
    centres = np.arange(SIDE, dtype=np.float32) + 0.5  # pixel centres
    for start in range(0, n, CHUNK):
        f = {k: v[start : start + CHUNK] for k, v in factors.items()}
        for k, inside in enumerate(_INSIDE):
            rows = np.flatnonzero(f["shape"] == k)
            s = f["size"][rows].astype(np.float32)[:, None, None]
            # each pixel centre relative to the shape's centre, in half-widths: the shape spans [-1, 1] both ways
            u = (centres[None, None, :] - f["x"][rows, None, None]) / s
            v = (centres[None, :, None] - f["y"][rows, None, None]) / s
            mask = inside(np.abs(u), v)
            images[start + rows] = np.where(mask[..., None], PALETTE[f["colour"][rows]][:, None, None, :], 0)
    return images


# Whether a pixel centre (|u|, v), in half-widths from the shape's centre (v down), lies in each shape.
_INSIDE = (
    lambda au, v: (au <= 1) & (np.abs(v) <= 1),  # square
    lambda au, v: au * au + v * v <= 1,  # circle
    lambda au, v: (v <= 1) & (au <= (v + 1) / 2),  # triangle: apex at the top, base at the bottom
    lambda au, v: au + np.abs(v) <= 1,  # diamond
    lambda au, v: ((au <= 1) & (np.abs(v) <= 1 / 3)) | ((np.abs(v) <= 1) & (au <= 1 / 3)),  # cross: bars 1/3 thick
)


def generate() -> Arrays:
    """The whole dataset: images and their shape classes (uint8), the same bytes every time."""
    arrays = {}
    for split in ("train", "test"):
        factors = shapes_factors(split)
        arrays[f"x_{split}"] = draw(factors)
        arrays[f"y_{split}"] = factors["shape"].astype(np.uint8)
    return arrays


def _sources(log: Log) -> list[Source]:
    return [(f"vaelab.data.shapes (generated, seed {SEED})", generate)]


SHAPES = Builtin(
    "shapes",
    "Shapes",
    SHAPE_NAMES,
    (TRAIN_SIZE // len(SHAPE_NAMES),) * len(SHAPE_NAMES),
    (TEST_SIZE // len(SHAPE_NAMES),) * len(SHAPE_NAMES),
    _sources,
    help="pass a writable --data-dir, where the generated images are cached",
    image_shape=(SIDE, SIDE, 3),
    factors=test_factors,
)
