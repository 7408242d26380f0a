"""The exercise's analyses of a trained run: (c) latent map and class table, (d) generation, (e) interpolation.

Each takes a `Run` (and its dataset where images are needed) and returns plain NumPy results;
`figures` draws and saves them, the CLI prints them, the report renders them. Encoding and decoding
are batched. On MNIST a class is a digit; on other datasets the class names come with the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from vaelab.data import Dataset
from vaelab.errors import VaelabError
from vaelab.run import Run

MAX_LATENT_ABS = 1e3  # points this far out are surely a mistake; the prior puts nothing there


@dataclass(frozen=True)
class LatentCodes:
    """The test set encoded: `z_mean`/`z_log_var` per image, and 2-D coordinates to draw them at."""

    z_mean: np.ndarray  # (n, latent_dim)
    z_log_var: np.ndarray  # (n, latent_dim)
    labels: np.ndarray | None  # (n,) the class of each image, None for unlabelled data
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


def test_labels(run: Run, data: Dataset, indices=slice(None)) -> np.ndarray | None:
    """The labels of the test images at `indices` where the run's model reads them (a cvae), else None."""
    return data.y_test[indices] if run.config.model.conditional else None


def encode_test_set(run: Run, data: Dataset) -> LatentCodes:
    """Encodes all 10,000 test images (a cvae: each with its label); for latent_dim > 2 the plane is their first two
    principal components."""
    z_mean, z_log_var = run.encode(data.x_test, labels=test_labels(run, data))
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
class ClassRow:
    """One test image of a class and where the encoder puts it."""

    label: int  # the class's number in the dataset
    name: str  # the class's name: the digit on MNIST, "Trouser" on Fashion-MNIST
    index: int  # position in the test set
    z_mean: tuple[float, ...]
    sigma: tuple[float, ...] | None  # exp(z_log_var / 2); None where the variance is fixed to ones


def require_labels(data: Dataset, what: str) -> np.ndarray:
    """The test labels, or a one-line error saying that `what` needs a dataset with classes."""
    if not data.labelled:
        raise VaelabError(f"{what} needs class labels, and {data.title} has none (give one subfolder per class)")
    return data.y_test


def default_picks(labels: np.ndarray) -> dict[int, int]:
    """The first test image of each class that has one."""
    return {int(c): int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)}


def parse_picks(data: Dataset, indices: list[int] | None) -> dict[int, int]:
    """Test-set indices chosen by the user (any order, at most one per class) over the defaults."""
    labels = require_labels(data, "a table of one image per class")
    picks = default_picks(labels)
    chosen: dict[int, int] = {}
    for index in indices or []:
        check_index(index, len(labels))
        label = int(labels[index])
        if label in chosen:
            raise VaelabError(
                f"--pick names two images of {data.class_word} {data.class_name(label)} ({chosen[label]} and {index}); "
                "pick one"
            )
        chosen[label] = index
    return {**picks, **chosen}


def class_table(run: Run, data: Dataset, picks: dict[int, int] | None = None) -> list[ClassRow]:
    """One test image per class with its latent coordinates (and sigma, for learned variances)."""
    picks = picks or default_picks(require_labels(data, "a table of one image per class"))
    labels = sorted(picks)
    indices = [picks[c] for c in labels]
    z_mean, z_log_var = run.encode(data.x_test[indices], labels=test_labels(run, data, indices))
    learned = run.config.model.variance == "learned"
    return [
        ClassRow(
            label=c,
            name=data.class_name(c),
            index=i,
            z_mean=tuple(float(v) for v in z_mean[k]),
            sigma=tuple(float(v) for v in np.exp(z_log_var[k] / 2)) if learned else None,
        )
        for k, (c, i) in enumerate(zip(labels, indices, strict=True))
    ]


@dataclass(frozen=True)
class CodeRow:
    """One test image of a class and a vqvae's codes for it: at each of the L positions the index of the nearest
    codebook vector (the vqvae's part (c) table: it has indices where a Gaussian model has coordinates)."""

    label: int
    name: str
    index: int  # position in the test set
    codes: tuple[int, ...]


def code_table(run: Run, data: Dataset, picks: dict[int, int] | None = None) -> list[CodeRow]:
    """One test image per class with the vqvae `run`'s codes for it."""
    picks = picks or default_picks(require_labels(data, "a table of one image per class"))
    labels = sorted(picks)
    indices = [picks[c] for c in labels]
    codes = run.codes(data.x_test[indices])
    return [
        CodeRow(label=c, name=data.class_name(c), index=i, codes=tuple(int(v) for v in codes[k]))
        for k, (c, i) in enumerate(zip(labels, indices, strict=True))
    ]


def check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise VaelabError(f"test image index {index} is out of range; use 0 to {size - 1}")


def check_points(z: np.ndarray, latent_dim: int) -> np.ndarray:
    """Latent points as a (n, latent_dim) float32 array, or a one-line error saying what is wrong."""
    if isinstance(z, list | tuple) and len({len(row) for row in z if isinstance(row, list | tuple)}) > 1:
        raise VaelabError(f"every latent point needs {latent_dim} coordinates; the points given differ in length")
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


def check_codes(codes, latent_dim: int, k: int) -> np.ndarray:
    """A vqvae's codes as an (n, latent_dim) int32 array of indices into its `k` codebook vectors, or a one-line
    error: each row is `latent_dim` integers from 0 to k - 1."""
    rows = [row for row in codes if np.ndim(row) == 1 and len(row) == latent_dim]
    values = np.asarray(rows, np.float64).reshape(len(rows), latent_dim)
    if len(rows) != len(codes) or np.any((values % 1 != 0) | (values < 0) | (values >= k)):
        raise VaelabError(f"a vqvae's --z is {latent_dim} codebook indices, integers from 0 to {k - 1}")
    return values.astype(np.int32)


def generate(run: Run, z) -> np.ndarray:
    """Part (d): decodes latent points (n, latent_dim) into images (n, H, W[, C]) in one batch."""
    return run.decode(check_points(z, run.config.model.latent_dim))


def prior_samples(run: Run, n: int, seed: int = 0, sampler=None) -> tuple[np.ndarray, np.ndarray]:
    """Draws n points from the run's prior (N(0, I); a vamp's VampPrior: vaelab.models.priors), or from `sampler`
    (vaelab.analysis.samplers: a mixture fitted after training), and decodes them: (z, images)."""
    if n < 1:
        raise VaelabError(f"--samples must be >= 1, got {n}")
    z = (sampler or run.models.prior()).sample(n, np.random.default_rng(seed))
    return z, run.decode(z)


def class_grid(run: Run, columns: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A conditional model's classes side by side: `columns` draws z ~ N(0, I), each decoded as every class.

    Returns (z (columns, latent_dim), images (classes, columns, H, W[, C])): row c is class c, column j the same z_j.
    """
    classes = run.config.model.classes
    z = np.random.default_rng(seed).standard_normal((columns, run.config.model.latent_dim)).astype(np.float32)
    images = run.decode(np.tile(z, (classes, 1)), labels=np.repeat(np.arange(classes), columns))
    return z, images.reshape(classes, columns, *images.shape[1:])


def manifold_grid(n: int = 15, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """The course script's grid values: Gaussian quantiles norm.ppf(linspace(low, high, n))."""
    return np.array([NormalDist().inv_cdf(p) for p in np.linspace(low, high, n)])


def manifold(run: Run, n: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """An n x n grid of decoded digits over Gaussian quantiles of the first two latent dimensions (others 0).

    Returns (grid values, images of shape (n, n, H, W[, C])); row 0 is the top of the figure (largest z[1]).
    """
    grid = manifold_grid(n)
    z = np.zeros((n, n, run.config.model.latent_dim), np.float32)
    z[..., 0] = grid[None, :]
    if run.config.model.latent_dim > 1:
        z[..., 1] = grid[::-1, None]
    images = run.decode(z.reshape(n * n, -1))
    return grid, images.reshape(n, n, *images.shape[1:])


@dataclass(frozen=True)
class Interpolation:
    """Part (e): two test images, their codes, `steps` points on the segment between them, decoded."""

    start_index: int
    end_index: int
    start_name: str  # the class of each end ("3", "Trouser"), or "#index" for unlabelled data
    end_name: str
    originals: np.ndarray  # (2, H, W[, C]) uint8
    z_start: np.ndarray  # (latent_dim,)
    z_end: np.ndarray
    points: np.ndarray  # (steps, latent_dim), endpoints included
    images: np.ndarray  # (steps, H, W[, C])


DEFAULT_PAIR = (3, 8)  # the exercise's figure interpolates from a 3 to an 8


def pick_pair(
    data: Dataset,
    *,
    from_index: int | None = None,
    to_index: int | None = None,
    from_class: str | None = None,
    to_class: str | None = None,
    allow_same_class: bool = False,
) -> tuple[int, int]:
    """Chooses the two test images: by index, or by class (its first image), by default the first 3 and 8.

    Classes are given by name or number; datasets without a class 8 use their first and last class,
    datasets without labels their first two test images.
    """
    size = len(data.x_test)
    if not data.labelled:
        if from_class is not None or to_class is not None:
            require_labels(data, "choosing images by class")
        start, end = (0 if from_index is None else from_index), (1 if to_index is None else to_index)
        for index in (start, end):
            check_index(index, size)
        return start, end
    labels = data.y_test
    picks = default_picks(labels)
    present = sorted(picks)
    defaults = DEFAULT_PAIR if all(c in picks for c in DEFAULT_PAIR) else (present[0], present[-1])

    def choose(index: int | None, name: str | None, default: int, flag: str) -> int:
        if index is not None and name is not None:
            raise VaelabError(f"give --{flag}-index or --{flag}-class, not both")
        if name is not None:
            return picks[_class_label(data, name, picks, flag)]
        if index is not None:
            check_index(index, size)
            return index
        return picks[default]

    start = choose(from_index, from_class, defaults[0], "from")
    end = choose(to_index, to_class, defaults[1], "to")
    if labels[start] == labels[end] and not allow_same_class:
        raise VaelabError(
            f"test images {start} and {end} both show {with_article(data.class_name(int(labels[start])))}; "
            "the exercise interpolates between different classes (choose another image, or pass --allow-same-class)"
        )
    return start, end


def _class_label(data: Dataset, name: str, picks: dict[int, int], flag: str) -> int:
    """A class given by name ("Trouser") or number ("1") -> its label."""
    names = list(data.class_names or ())
    if name in names:
        return names.index(name)
    if str(name).isdigit() and int(name) in picks:
        return int(name)
    raise VaelabError(f"--{flag}-class {name!r} is not a class of {data.title}; choose one of: {', '.join(names)}")


def with_article(name: str) -> str:
    """A class's name with its article, for sentences: "a 3", "an 8", "a Trouser"."""
    return f"{'an' if name[:1].lower() in 'aeiou8' else 'a'} {name}"


def segment(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """`steps` evenly spaced points from `start` to `end`, endpoints included: (steps, latent_dim) float32."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return ((1 - t) * np.asarray(start, np.float32) + t * np.asarray(end, np.float32)).astype(np.float32)


def interpolate(run: Run, data: Dataset, start: int, end: int, steps: int = 10) -> Interpolation:
    """Encodes two test images (z_mean), takes `steps` evenly spaced points from one code to the other
    (endpoints included) and decodes them in one batch. A cvae encodes each image with its label and decodes the
    points as the first image's class (its codes hold the style, the label the class)."""
    if not 2 <= steps <= 1000:
        raise VaelabError(f"--steps must be between 2 and 1000, got {steps}")
    for index in (start, end):
        check_index(index, len(data.x_test))
    originals = data.x_test[[start, end]]
    labels = test_labels(run, data, [start, end])
    z_mean, _ = run.encode(originals, labels=labels)
    points = segment(z_mean[0], z_mean[1], steps)

    def name(index: int) -> str:
        return data.class_name(int(data.y_test[index])) if data.labelled else f"#{index}"

    return Interpolation(
        start_index=start,
        end_index=end,
        start_name=name(start),
        end_name=name(end),
        originals=originals,
        z_start=z_mean[0],
        z_end=z_mean[1],
        points=points,
        images=run.decode(points, labels=None if labels is None else np.full(steps, labels[0])),
    )


def format_point(z, digits: int = 3) -> str:
    return "(" + ", ".join(f"{v:.{digits}f}" for v in z) + ")"


def table_markdown(rows: list[ClassRow], word: str = "digit") -> str:
    """The class table as Markdown: class, test index, z_mean coordinates (and sigma)."""
    dim = len(rows[0].z_mean)
    learned = rows[0].sigma is not None
    header = [word, "test index", *[f"z_mean[{j}]" for j in range(dim)]]
    header += [f"σ[{j}]" for j in range(dim)] if learned else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for row in rows:
        cells = [row.name, str(row.index), *[f"{v:.4f}" for v in row.z_mean]]
        cells += [f"{v:.4f}" for v in row.sigma] if row.sigma is not None else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_csv(rows: list[ClassRow], word: str = "digit") -> str:
    import csv
    import io

    dim = len(rows[0].z_mean)
    header = [word, "label", "test_index", *[f"z_mean_{j}" for j in range(dim)]]
    header += [f"sigma_{j}" for j in range(dim)] if rows[0].sigma is not None else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = [*row.z_mean, *(row.sigma or ())]
        writer.writerow([row.name, row.label, row.index, *[repr(float(v)) for v in values]])
    return out.getvalue()


def code_table_markdown(rows: list[CodeRow], word: str = "digit") -> str:
    """The vqvae's class table as Markdown: class, test index, the code index at each position."""
    header = [word, "test index", *[f"code[{j}]" for j in range(len(rows[0].codes))]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join([row.name, str(row.index), *map(str, row.codes)]) + " |" for row in rows]
    return "\n".join(lines)


def code_table_csv(rows: list[CodeRow], word: str = "digit") -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([word, "label", "test_index", *[f"code_{j}" for j in range(len(rows[0].codes))]])
    writer.writerows([row.name, row.label, row.index, *row.codes] for row in rows)
    return out.getvalue()


def points_markdown(points: np.ndarray) -> str:
    """The interpolation's latent points as a Markdown table."""
    dim = points.shape[1]
    lines = ["| step | " + " | ".join(f"z[{j}]" for j in range(dim)) + " |", "|" + "---:|" * (dim + 1)]
    lines += [f"| {k} | " + " | ".join(f"{v:.4f}" for v in p) + " |" for k, p in enumerate(points)]
    return "\n".join(lines)
