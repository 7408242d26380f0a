"""The exercise's analyses of a trained run: (c) latent map and digit table, (d) generation, (e) interpolation.

Each takes a `Run` (and MNIST where images are needed) and returns plain NumPy results; `plots`
draws them, the CLI prints them, the report renders them. Encoding and decoding are batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.run import Run

DIGITS = tuple(range(10))
MAX_LATENT_ABS = 1e3  # points this far out are surely a mistake; the prior puts nothing there


@dataclass(frozen=True)
class LatentCodes:
    """The test set encoded: `z_mean`/`z_log_var` per image, and 2-D coordinates to draw them at."""

    z_mean: np.ndarray  # (n, latent_dim)
    z_log_var: np.ndarray  # (n, latent_dim)
    labels: np.ndarray  # (n,) the digit each image shows
    plane_mean: np.ndarray  # (latent_dim,) subtracted before projecting
    plane_axes: np.ndarray  # (latent_dim, 2) the plane drawn: z itself, or the first two principal components
    axis_labels: tuple[str, str]

    @property
    def coords(self) -> np.ndarray:
        return self.project(self.z_mean)

    def project(self, z: np.ndarray) -> np.ndarray:
        """Latent points (n, latent_dim) -> their coordinates (n, 2) in the drawn plane."""
        return (np.asarray(z) - self.plane_mean) @ self.plane_axes

    @property
    def is_pca(self) -> bool:
        return self.axis_labels[0].startswith("PC")


def encode_test_set(run: Run, data: Dataset) -> LatentCodes:
    """Encodes all 10,000 test images; for latent_dim > 2 the plane is their first two principal components."""
    z_mean, z_log_var = run.encode(data.x_test)
    dim = z_mean.shape[1]
    if dim == 2:
        return LatentCodes(z_mean, z_log_var, data.y_test, np.zeros(2), np.eye(2), ("z[0]", "z[1]"))
    if dim == 1:
        return LatentCodes(z_mean, z_log_var, data.y_test, np.zeros(1), np.array([[1.0, 0.0]]), ("z[0]", ""))
    center = z_mean.mean(axis=0)
    _, _, vt = np.linalg.svd(z_mean - center, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])  # a fixed sign per axis
    return LatentCodes(z_mean, z_log_var, data.y_test, center, (components * signs[:, None]).T, ("PC1", "PC2"))


@dataclass(frozen=True)
class DigitRow:
    """One test image of a digit and where the encoder puts it."""

    digit: int
    index: int  # position in the test set
    z_mean: tuple[float, ...]
    sigma: tuple[float, ...] | None  # exp(z_log_var / 2); None where the variance is fixed to ones


def default_picks(labels: np.ndarray) -> dict[int, int]:
    """The first test image of each digit."""
    return {d: int(np.flatnonzero(labels == d)[0]) for d in DIGITS}


def parse_picks(labels: np.ndarray, indices: list[int] | None) -> dict[int, int]:
    """Test-set indices chosen by the user (any order, at most one per digit) over the defaults."""
    picks = default_picks(labels)
    chosen: dict[int, int] = {}
    for index in indices or []:
        check_index(index, len(labels))
        digit = int(labels[index])
        if digit in chosen:
            raise VaelabError(f"--pick names two images of digit {digit} ({chosen[digit]} and {index}); pick one")
        chosen[digit] = index
    return {**picks, **chosen}


def digit_table(run: Run, data: Dataset, picks: dict[int, int] | None = None) -> list[DigitRow]:
    """One test image per digit 0-9 with its latent coordinates (and sigma, for learned variances)."""
    picks = picks or default_picks(data.y_test)
    indices = [picks[d] for d in DIGITS]
    z_mean, z_log_var = run.encode(data.x_test[indices])
    learned = run.config.model.variance == "learned"
    return [
        DigitRow(
            digit=d,
            index=i,
            z_mean=tuple(float(v) for v in z_mean[k]),
            sigma=tuple(float(v) for v in np.exp(z_log_var[k] / 2)) if learned else None,
        )
        for k, (d, i) in enumerate(zip(DIGITS, indices, strict=True))
    ]


def check_index(index: int, size: int = 10000) -> None:
    if not 0 <= index < size:
        raise VaelabError(f"test image index {index} is out of range; use 0 to {size - 1}")


def check_points(z: np.ndarray, latent_dim: int) -> np.ndarray:
    """Latent points as a (n, latent_dim) float32 array, or a one-line error saying what is wrong."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z.reshape(-1, latent_dim) if z.size % latent_dim == 0 and z.size else z[None]
    if z.ndim != 2 or z.shape[1] != latent_dim or z.shape[0] == 0:
        raise VaelabError(f"a latent point has {latent_dim} coordinates for this run; got {z.size} values")
    if not np.all(np.isfinite(z)):
        raise VaelabError("latent coordinates must be finite numbers (no nan or inf)")
    if np.abs(z).max() > MAX_LATENT_ABS:
        raise VaelabError(
            f"latent coordinates must lie within ±{MAX_LATENT_ABS:g}; the prior N(0, I) puts nothing there"
        )
    return z.astype(np.float32)


def generate(run: Run, z) -> np.ndarray:
    """Part (d): decodes latent points (n, latent_dim) into images (n, 28, 28) in one batch."""
    return run.decode(check_points(z, run.config.model.latent_dim))


def prior_samples(run: Run, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draws n points from the prior N(0, I) and decodes them: (z, images)."""
    if n < 1:
        raise VaelabError(f"--samples must be >= 1, got {n}")
    z = np.random.default_rng(seed).standard_normal((n, run.config.model.latent_dim)).astype(np.float32)
    return z, run.decode(z)


def manifold_grid(n: int = 15, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """The course script's grid values: Gaussian quantiles norm.ppf(linspace(low, high, n))."""
    return np.array([NormalDist().inv_cdf(p) for p in np.linspace(low, high, n)])


def manifold(run: Run, n: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """An n x n grid of decoded digits over Gaussian quantiles of the first two latent dimensions (others 0).

    Returns (grid values, images of shape (n, n, 28, 28)); row 0 is the top of the figure (largest z[1]).
    """
    grid = manifold_grid(n)
    z = np.zeros((n, n, run.config.model.latent_dim), np.float32)
    z[..., 0] = grid[None, :]
    if run.config.model.latent_dim > 1:
        z[..., 1] = grid[::-1, None]
    return grid, run.decode(z.reshape(n * n, -1)).reshape(n, n, 28, 28)


@dataclass(frozen=True)
class Interpolation:
    """Part (e): two test images, their codes, `steps` points on the segment between them, decoded."""

    start_index: int
    end_index: int
    start_digit: int
    end_digit: int
    originals: np.ndarray  # (2, 28, 28) uint8
    z_start: np.ndarray  # (latent_dim,)
    z_end: np.ndarray
    points: np.ndarray  # (steps, latent_dim), endpoints included
    images: np.ndarray  # (steps, 28, 28)


def pick_pair(
    labels: np.ndarray,
    *,
    from_index: int | None = None,
    to_index: int | None = None,
    from_digit: int | None = None,
    to_digit: int | None = None,
    allow_same_digit: bool = False,
) -> tuple[int, int]:
    """Chooses the two test images: by index, by digit (the first image of it), default the table's 3 and 8."""
    picks = default_picks(labels)

    def choose(index: int | None, digit: int | None, default: int, flag: str) -> int:
        if index is not None and digit is not None:
            raise VaelabError(f"give --{flag}-index or --{flag}-digit, not both")
        if digit is not None:
            if digit not in DIGITS:
                raise VaelabError(f"--{flag}-digit must be a digit 0-9, got {digit}")
            return picks[digit]
        if index is not None:
            check_index(index, len(labels))
            return index
        return picks[default]

    start = choose(from_index, from_digit, 3, "from")
    end = choose(to_index, to_digit, 8, "to")
    if labels[start] == labels[end] and not allow_same_digit:
        raise VaelabError(
            f"test images {start} and {end} both show a {labels[start]}; the exercise interpolates between "
            "different digits (choose another image, or pass --allow-same-digit)"
        )
    return start, end


def interpolate(run: Run, data: Dataset, start: int, end: int, steps: int = 10) -> Interpolation:
    """Encodes two test images (z_mean), takes `steps` evenly spaced points from one code to the other
    (endpoints included) and decodes them in one batch."""
    if not 2 <= steps <= 1000:
        raise VaelabError(f"--steps must be between 2 and 1000, got {steps}")
    for index in (start, end):
        check_index(index, len(data.x_test))
    originals = data.x_test[[start, end]]
    z_mean, _ = run.encode(originals)
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    points = (1 - t) * z_mean[0] + t * z_mean[1]
    return Interpolation(
        start_index=start,
        end_index=end,
        start_digit=int(data.y_test[start]),
        end_digit=int(data.y_test[end]),
        originals=originals,
        z_start=z_mean[0],
        z_end=z_mean[1],
        points=points,
        images=run.decode(points),
    )


def format_point(z, digits: int = 3) -> str:
    return "(" + ", ".join(f"{v:.{digits}f}" for v in z) + ")"


def table_markdown(rows: list[DigitRow]) -> str:
    """The digit table as Markdown: digit, test index, z_mean coordinates (and sigma)."""
    dim = len(rows[0].z_mean)
    learned = rows[0].sigma is not None
    header = ["digit", "test index", *[f"z_mean[{j}]" for j in range(dim)]]
    header += [f"σ[{j}]" for j in range(dim)] if learned else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for row in rows:
        cells = [str(row.digit), str(row.index), *[f"{v:.4f}" for v in row.z_mean]]
        cells += [f"{v:.4f}" for v in row.sigma] if row.sigma is not None else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_csv(rows: list[DigitRow]) -> str:
    dim = len(rows[0].z_mean)
    header = ["digit", "test_index", *[f"z_mean_{j}" for j in range(dim)]]
    header += [f"sigma_{j}" for j in range(dim)] if rows[0].sigma is not None else []
    lines = [",".join(header)]
    for row in rows:
        values = [*row.z_mean, *(row.sigma or ())]
        lines.append(",".join([str(row.digit), str(row.index), *[repr(float(v)) for v in values]]))
    return "\n".join(lines) + "\n"


def points_markdown(points: np.ndarray) -> str:
    """The interpolation's latent points as a Markdown table."""
    dim = points.shape[1]
    lines = ["| step | " + " | ".join(f"z[{j}]" for j in range(dim)) + " |", "|" + "---:|" * (dim + 1)]
    lines += [f"| {k} | " + " | ".join(f"{v:.4f}" for v in p) + " |" for k, p in enumerate(points)]
    return "\n".join(lines)
