"""Sample quality (vaelab.analysis.sample_quality): the Fréchet distance and k-NN precision/recall against their
formulas on
synthetic Gaussians and hand-placed points; the classifier trained on an MNIST subset, cached and read back; a run's
samplers measured and drawn."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import linalg

from vaelab.analysis import sample_quality as sq
from vaelab.data.dataset import make_dataset


def test_identical_sets_score_zero_and_a_shifted_set_its_squared_shift():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 6)) @ rng.standard_normal((6, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -0.25])
    assert sq.frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    # Same covariance, means apart by `shift`: the trace terms cancel, ||shift||^2 is left.
    assert sq.frechet_distance(x, x + shift) == pytest.approx(np.sum(shift**2), rel=1e-6)


def test_frechet_distance_of_gaussians_is_the_2_wasserstein_formula():
    # N(0, a^2 I) against N(0, b^2 I) in d dimensions: d (a - b)^2.
    d, a, b = 5, 1.5, 0.5
    assert sq.frechet_distance_of_stats(np.zeros(d), a**2 * np.eye(d), np.zeros(d), b**2 * np.eye(d)) == pytest.approx(
        d * (a - b) ** 2
    )
    # Covariances that do not commute, against Tr((S1^1/2 S2 S1^1/2)^1/2) computed by eigendecomposition.
    rng = np.random.default_rng(1)
    m1, m2 = rng.standard_normal((2, 4, 4))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(4), m2 @ m2.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.standard_normal((2, 4))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert sq.frechet_distance_of_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_singular_covariances_dead_features_give_the_distance_of_the_live_ones():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 500, 3)) * [1, 2, 3]
    dead = np.zeros((500, 2))  # ReLU units that never fire: zero rows and columns in both covariances
    live = sq.frechet_distance(x, y + 1)
    assert sq.frechet_distance(np.hstack([x, dead]), np.hstack([y + 1, dead])) == pytest.approx(live, rel=1e-9)


def test_precision_and_recall_count_points_inside_the_k_nn_balls():
    real = np.arange(10.0)[:, None]  # k = 1: every real point's ball has radius 1
    generated = np.array([[0.5], [20.0], [9.9], [-1.5]])
    # 0.5 and 9.9 lie within 1 of a real point; 20 and -1.5 do not.
    # The generated balls (radius: the nearest other sample) are 2, 10.1, 9.4, 2 and cover 0 to 9 between them.
    assert sq.precision_recall(real, generated, k=1) == (0.5, 1.0)
    assert sq.precision_recall(real, real, k=3) == (1.0, 1.0)
    assert sq.precision_recall(real, real + 100, k=3) == (0.0, 0.0)


def test_knn_radii_leave_the_point_itself_out_and_work_in_blocks(monkeypatch):
    rng = np.random.default_rng(2)
    points = rng.standard_normal((50, 3))
    distances = ((points[:, None] - points[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    monkeypatch.setattr(sq, "DISTANCE_ROWS", 7)
    np.testing.assert_allclose(sq.knn_radii(points, 3), np.sort(distances, 1)[:, 2], rtol=1e-10)


@pytest.fixture(scope="module")
def small_mnist(mnist):
    """2000 training and 500 test images of real MNIST, a data set of their own (its own checksum)."""
    arrays = {"x_train": mnist.x_train[:2000], "y_train": mnist.y_train[:2000]}
    arrays |= {"x_test": mnist.x_test[:500], "y_test": mnist.y_test[:500]}
    return make_dataset(arrays, name="mnist", source="a subset", class_names=mnist.class_names)


@pytest.fixture(scope="module")
def classifier_cache(small_mnist, tmp_path_factory):
    """A cache directory holding small_mnist's classifier, trained once for this module: (directory, log lines)."""
    directory = tmp_path_factory.mktemp("classifiers")
    messages = []
    sq.cached_classifier(small_mnist, directory, log=messages.append)
    return directory, messages


def test_the_classifier_is_trained_once_cached_and_read_back(small_mnist, classifier_cache, monkeypatch):
    directory, messages = classifier_cache
    path = sq.classifier_path(small_mnist, directory)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([".lock", path.name, path.with_suffix(".json").name])
    assert len(messages) == 1 and "training the sample-quality classifier" in messages[0]
    record = json.loads(path.with_suffix(".json").read_text())
    assert small_mnist.sha256[:20] in path.name and record["images"] == 2000
    assert record["test_accuracy"] > 0.85  # 3 epochs on 2000 digits

    def untrainable(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(sq, "train_classifier", untrainable)
    model, record_again = sq.cached_classifier(small_mnist, directory)
    assert record_again == record
    x = small_mnist.x_test[:100]
    first = sq.features(model, x)
    assert first.shape == (100, sq.FEATURES) and np.all(first >= 0)  # ReLU units
    # Grey levels as floats give the same features as the uint8 images.
    np.testing.assert_allclose(sq.features(model, x.astype(np.float32) / 255), first, rtol=1e-5, atol=1e-5)


def test_a_runs_samplers_are_measured_against_the_test_set(small_run, small_mnist, classifier_cache, tmp_path):
    from vaelab.analysis import plots
    from vaelab.run import load_run

    shutil.copytree(small_run.path, tmp_path / "run")
    run = load_run(tmp_path / "run")
    rows, _ = sq.measure_runs([run], small_mnist, ["prior", "gmm:3"], samples=300, data_dir=classifier_cache[0])
    assert [(r.name, r.sampler, r.images) for r in rows] == [
        ("training images", "data", 300),
        ("run", "prior", 300),
        ("run", "gmm:3", 300),
    ]
    assert (tmp_path / "run" / "gmm.npz").exists()
    for row in rows:
        assert 0 <= row.precision <= 1 and 0 <= row.recall <= 1 and row.frechet_distance > 0
    # Real digits are nearer the test set than a 2-epoch model's samples.
    assert rows[0].frechet_distance < min(r.frechet_distance for r in rows[1:])
    assert "| run | gmm:3 |" in sq.table_markdown(rows)
    png = plots.png_bytes(sq.plot_sample_quality(rows, "a title"))
    assert png == plots.png_bytes(sq.plot_sample_quality(rows, "a title"))  # the same figure, the same bytes


def test_a_data_set_without_labels_has_no_classifier(small_mnist):
    arrays = {"x_train": small_mnist.x_train, "x_test": small_mnist.x_test}
    unlabelled = make_dataset(arrays, name="pictures", source="t")
    with pytest.raises(sq.VaelabError, match="no labels"):
        sq.train_classifier(unlabelled)
