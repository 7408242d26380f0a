"""Sample quality: how near a model's samples come to the test set, in the features of a classifier.

    Fréchet distance   ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)): the distance between Gaussians with
                       the real and the generated features' means and covariances (Heusel et al. 2017's formula;
                       lower is better, 0 for identical sets)
    precision          the share of samples that land inside the real images' manifold: the union of balls around
                       each real feature vector reaching its k-th nearest real neighbour (Kynkäänniemi et al. 2019,
                       k = `NEIGHBOURS`): how many samples look like data
    recall             the share of real images inside the samples' manifold, made the same way: how much of the
                       data the samples cover

This is not FID. The features are not Inception-v3's but the penultimate layer (`FEATURES` units) of a small
ConvNet (`build_classifier`) that vaelab trains once per data set on its training split and caches in
`default_data_dir()/classifiers/`, keyed by the data set's checksum; numbers compare models and samplers of the same
data set, measured with the same classifier, and nothing else. The real images are the test set's grey levels;
the generated ones the decoder's means (the Bernoulli's probabilities), as in Ghosh et al. 2020.

The cached classifier is two files, each written atomically under the cache's lock:

    classifier-<checksum>-v<ARCH_VERSION>.keras   the network (plain Keras layers)
    classifier-<checksum>-v<ARCH_VERSION>.json    its training: epochs, images, seed, test accuracy, seconds
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vaelab._files import atomic_path, write_json
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    import keras

    from vaelab.data import Dataset
    from vaelab.run import Run

NEIGHBOURS = 3  # k of the k-NN manifolds: Kynkäänniemi et al.'s choice
FEATURES = 128  # units of the classifier's penultimate layer, the features compared
CLASSIFIER_EPOCHS = 3  # over 99% test accuracy on MNIST at this size; more changes the features, not the ranking
CLASSIFIER_BATCH = 128
CLASSIFIER_SEED = 0
ARCH_VERSION = 1  # in the cache key: a changed network or training is another classifier
DISTANCE_ROWS = 2048  # rows of a pairwise-distance block (its memory: rows x the other set's size)
CACHE_LOCK_WAIT_S = 600.0  # another process training the same classifier: wait for it rather than train twice


# --- the two measures -------------------------------------------------------------------------------------


def frechet_distance_of_stats(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)): the Fréchet (2-Wasserstein) distance squared between
    N(mu1, cov1) and N(mu2, cov2).

    Tr (cov1 cov2)^(1/2) is computed as Tr (A cov2 A)^(1/2) with A = cov1^(1/2): the two matrices are similar
    (A^-1 (A cov2 A) A = cov1 cov2), so their square roots have the same eigenvalues, and A cov2 A is symmetric
    positive semi-definite, so `eigh` gives them real and >= 0 (rounding clipped). `scipy.linalg.sqrtm` of the
    non-symmetric product gives the same number, but warns and returns complex rounding where a covariance is
    singular, as it is when a ReLU feature is 0 for every image.
    """
    from scipy import linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    values, vectors = linalg.eigh(cov1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root1 @ cov2 @ root1
    trace_root = np.sqrt(np.clip(linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)
    return max(distance, 0.0)  # rounding can take identical sets a hair below 0


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """The Fréchet distance between the Gaussians fitted to two feature sets (n, F) and (m, F)."""
    real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    return frechet_distance_of_stats(
        real.mean(0), np.cov(real, rowvar=False), generated.mean(0), np.cov(generated, rowvar=False)
    )


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 (len(a), len(b)), as |a|^2 - 2 a.b + |b|^2, clipped at 0."""
    return np.maximum((a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :], 0)


def knn_radii(points: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """The squared distance from each point (n, F) to its k-th nearest other point (n,)."""
    points = np.asarray(points, np.float64)
    if len(points) <= k:
        raise VaelabError(f"a k-NN manifold with k = {k} needs more than {k} points; got {len(points)}")
    radii = np.empty(len(points))
    for i in range(0, len(points), DISTANCE_ROWS):
        d = _squared_distances(points[i : i + DISTANCE_ROWS], points)
        d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf  # not itself
        radii[i : i + len(d)] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """The share of `points` (n, F) inside at least one ball (centre, squared radius) of the manifold."""
    points, centres = np.asarray(points, np.float64), np.asarray(centres, np.float64)
    inside = 0
    for i in range(0, len(points), DISTANCE_ROWS):
        inside += int(np.any(_squared_distances(points[i : i + DISTANCE_ROWS], centres) <= radii[None, :], 1).sum())
    return inside / len(points)


def precision_recall(
    real: np.ndarray, generated: np.ndarray, k: int = NEIGHBOURS, real_radii: np.ndarray | None = None
) -> tuple[float, float]:
    """(precision, recall) of `generated` features against `real` ones, with k-NN manifolds (module docstring);
    `real_radii`, the real manifold's `knn_radii` with the same k, where already computed."""
    precision = coverage(generated, real, knn_radii(real, k) if real_radii is None else real_radii)
    recall = coverage(real, generated, knn_radii(generated, k))
    return precision, recall


# --- the classifier whose features they compare -------------------------------------------------------------


def build_classifier(image_shape: tuple[int, ...], classes: int, seed: int = CLASSIFIER_SEED) -> keras.Model:
    """A small ConvNet: two stride-2 3x3 convolutions (16, 32 filters), a dense layer "features" (FEATURES ReLU
    units: what the measures compare), and the softmax over `classes`."""
    import keras
    from keras import layers

    init = keras.initializers.GlorotUniform(seed=seed)
    dense_init = keras.initializers.GlorotUniform(seed=seed + 1)
    x = keras.Input(shape=image_shape, name="x")
    h = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", kernel_initializer=init, name="conv1")(x)
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", kernel_initializer=init, name="conv2")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(FEATURES, activation="relu", kernel_initializer=dense_init, name="features")(h)
    out = layers.Dense(classes, activation="softmax", kernel_initializer=dense_init, name="class")(h)
    return keras.Model(x, out, name="quality_classifier")


def train_classifier(
    data: Dataset, *, epochs: int = CLASSIFIER_EPOCHS, images: int | None = None, seed: int = CLASSIFIER_SEED
) -> tuple[keras.Model, dict]:
    """Trains `build_classifier` on the first `images` (default all) training images of `data` (Adam, cross-entropy,
    batches reshuffled each epoch from `seed`); returns it and its record, with its test-set accuracy."""
    from vaelab.data import scale_pixels

    if not data.labelled:
        raise VaelabError(
            f"sample quality is measured in the features of a classifier, and {data.title} has no labels to train one"
        )
    start = time.monotonic()
    model = build_classifier(data.image_shape, len(data.class_names), seed)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = scale_pixels(data.x_train[:images]), np.asarray(data.y_train[:images], np.int32)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        model.fit(x[order], y[order], batch_size=CLASSIFIER_BATCH, epochs=1, shuffle=False, verbose=0)
    predicted = model.predict(scale_pixels(data.x_test), batch_size=1000, verbose=0).argmax(1)
    record = {
        "epochs": epochs,
        "images": len(x),
        "seed": seed,
        "arch_version": ARCH_VERSION,
        "features": FEATURES,
        "test_accuracy": float(np.mean(predicted == data.y_test)),
        "seconds": round(time.monotonic() - start, 1),
        "data_sha256": data.sha256,
    }
    return model, record


def classifier_path(data: Dataset, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the data set's classifier is cached: its checksum and the network's version in the name."""
    from vaelab.data import default_data_dir

    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    return directory / "classifiers" / f"classifier-{data.sha256[:20]}-v{ARCH_VERSION}.keras"


def cached_classifier(data: Dataset, data_dir: str | os.PathLike[str] | None = None, log=None):
    """The data set's classifier and its record: from the cache, or trained (`train_classifier`) and cached."""
    import keras

    from vaelab._lock import DirectoryLock

    path = classifier_path(data, data_dir)
    with DirectoryLock(path.parent, "training a sample-quality classifier", wait=CACHE_LOCK_WAIT_S):
        if path.exists() and path.with_suffix(".json").exists():
            try:
                return keras.saving.load_model(path, compile=False), json.loads(path.with_suffix(".json").read_text())
            except (OSError, ValueError) as err:
                if log:
                    log(f"vaelab: the cached classifier {path} is unreadable ({err}); training it again")
        if log:
            log(f"vaelab: training the sample-quality classifier of {data.title} (once; cached at {path})")
        model, record = train_classifier(data)
        with atomic_path(path, suffix=".keras") as tmp:
            model.save(tmp)
        write_json(path.with_suffix(".json"), record)
    return model, record


def features(model: keras.Model, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Images (n, H, W[, C]), uint8 or floats in [0, 1] -> the classifier's penultimate features (n, FEATURES)."""
    import keras

    from vaelab.data import scale_pixels

    images = np.asarray(images)
    x = (
        scale_pixels(images)
        if images.dtype == np.uint8
        else images.astype(np.float32).reshape(-1, *model.input_shape[1:])
    )
    extractor = keras.Model(model.inputs, model.get_layer("features").output)
    return np.asarray(extractor.predict(x, batch_size=batch_size, verbose=0), np.float64)


# --- a run's samples, measured ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Quality:
    """One set of images measured against the test set: a run's samples from one sampler, or a reference."""

    name: str  # the run's name, or what the reference is ("training images")
    sampler: str  # prior, gmm:K, or "data"
    images: int
    frechet_distance: float
    precision: float
    recall: float

    def as_dict(self) -> dict:
        return asdict(self)


def measure(name: str, sampler: str, images: np.ndarray, real_features: np.ndarray, model, real_radii=None) -> Quality:
    """The Fréchet distance, precision and recall of `images` against the real features (and their k-NN radii)."""
    generated = features(model, images)
    precision, recall = precision_recall(real_features, generated, real_radii=real_radii)
    return Quality(name, sampler, len(generated), frechet_distance(real_features, generated), precision, recall)


def run_quality(
    run: Run,
    data: Dataset,
    spec: str,
    real_features: np.ndarray,
    model,
    *,
    samples: int,
    seed: int = 0,
    real_radii: np.ndarray | None = None,
    log=None,
) -> Quality:
    """`samples` draws from the run's sampler `spec` (vaelab.analysis.samplers) with `seed`, decoded and measured."""
    from vaelab.analysis.samplers import parse_sampler, sampler

    parsed = parse_sampler(spec)
    z = sampler(run, parsed, data, log=log).sample(samples, np.random.default_rng(seed))
    # A cvae decodes each draw as a class: the test set's labels, so its classes come in the data's proportions.
    labels = _test_labels(data, samples) if run.config.model.conditional else None
    return measure(run.name, str(parsed), run.decode(z, labels=labels), real_features, model, real_radii)


def _test_labels(data: Dataset, samples: int) -> np.ndarray:
    """`samples` labels in the test set's proportions: its labels, repeated as needed."""
    return np.resize(np.asarray(data.y_test), samples)


def default_samples(data: Dataset) -> int:
    """As many samples as test images: both manifolds then have the same density of points."""
    return len(data.x_test)


def table_markdown(rows: list[Quality]) -> str:
    """The measures as a Markdown table, one row per run and sampler."""
    lines = [
        "| run | sampler | Fréchet distance | precision | recall |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r.name} | {r.sampler} | {r.frechet_distance:.2f} | {r.precision:.3f} | {r.recall:.3f} |" for r in rows
    ]
    return "\n".join(lines)


def check_runs(runs: list[Run]) -> None:
    """A one-line error unless every run can be compared here: trained for an epoch at least, with Gaussian codes
    to draw (not a vqvae's codebook indices), and all on one data set."""
    for run in runs:
        if not run.config.model.member.gaussian_latent:
            raise VaelabError(
                f"vaelab quality draws Gaussian codes from a prior or a mixture; {run.path} is a "
                f"{run.config.model.family}, whose codes are codebook indices: leave it out"
            )
        run.require_trained()
        if run.info["data_sha256"] != runs[0].info["data_sha256"]:
            raise VaelabError(f"{run.path} was trained on other data than {runs[0].path}; compare runs of one data set")


def measure_runs(
    runs: list[Run],
    data: Dataset,
    samplers: list[str],
    *,
    samples: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    log=None,
) -> tuple[list[Quality], dict]:
    """Every run's samples from every sampler, measured against `data`'s test set with its cached classifier.

    The first row is a reference, as many of the training images as samples: what a model that drew the data's own
    distribution would score (not 0: two finite sets differ). Returns the rows and the classifier's record. Runs
    that cannot be compared (`check_runs`) are refused before the classifier is trained.
    """
    check_runs(runs)
    model, record = cached_classifier(data, data_dir, log=log)
    samples = samples or default_samples(data)
    real = features(model, data.x_test)
    radii = knn_radii(real)
    rows = [measure("training images", "data", data.x_train[:samples], real, model, radii)]
    for run in runs:
        for spec in samplers:
            if log:
                log(f"vaelab quality: {run.name}, {spec}: {samples:,} samples")
            rows.append(
                run_quality(run, data, spec, real, model, samples=samples, seed=seed, real_radii=radii, log=log)
            )
    return rows, record


def plot_sample_quality(rows: list[Quality], title: str = ""):
    """The Fréchet distance (left, lower is better) and precision and recall (right, higher is better) of each run
    and sampler, one bar each, the reference row's values as dashed lines."""
    from matplotlib.figure import Figure

    reference = next((r for r in rows if r.sampler == "data"), None)
    measured = [r for r in rows if r.sampler != "data"]
    labels = [f"{r.name}\n{r.sampler}" for r in measured]
    y = np.arange(len(measured))[::-1]
    colours = {"prior": "#9e9e9e"}
    colour = [colours.get(r.sampler, "#1f77b4") for r in measured]
    fig = Figure(figsize=(10, 0.5 * len(measured) + 1.4))
    fd_ax, pr_ax = fig.subplots(1, 2, sharey=True)
    fd_ax.barh(y, [r.frechet_distance for r in measured], color=colour)
    for yi, r in zip(y, measured, strict=True):
        fd_ax.text(r.frechet_distance, yi, f" {r.frechet_distance:.1f}", va="center", fontsize=8)
    fd_ax.set_xlim(0, 1.15 * max(r.frechet_distance for r in measured))  # room for the numbers
    fd_ax.set_yticks(y, labels, fontsize=8)
    fd_ax.set_xlabel("Fréchet distance in the classifier's features (lower is better)")
    height = 0.38
    pr_ax.barh(y + height / 2, [r.precision for r in measured], height, color="#2ca02c", label="precision")
    pr_ax.barh(y - height / 2, [r.recall for r in measured], height, color="#d62728", label="recall")
    pr_ax.set_xlim(0, 1)
    pr_ax.set_xlabel(f"precision and recall, k = {NEIGHBOURS} (higher is better)")
    if reference is not None:
        fd_ax.axvline(reference.frechet_distance, color="k", ls="--", lw=0.8, label="training images")
        pr_ax.axvline(reference.precision, color="#2ca02c", ls="--", lw=0.8)
        pr_ax.axvline(reference.recall, color="#d62728", ls=":", lw=0.8)
        fd_ax.legend(loc="lower right", fontsize=8)
    pr_ax.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
