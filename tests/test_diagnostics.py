"""Latent diagnostics: active units and KL per dimension on runs where they are known; their figures."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TEST_SUBSET
from vaelab.analysis.diagnostics import TRAVERSAL_VALUES, latent_diagnostics, traversal
from vaelab.analysis.evaluate import evaluate
from vaelab.analysis.figures import draw_run_figures, strip_rows
from vaelab.config import make_config
from vaelab.data import test_images as scoring_images
from vaelab.run import load_run
from vaelab.training.loop import train


def direct_kl(z_mean: np.ndarray, z_log_var: np.ndarray) -> np.ndarray:
    """KL(N(m, e^v) || N(0, 1)) per dimension, averaged over images, written out (not vaelab.models.kl)."""
    m, v = z_mean.astype(np.float64), z_log_var.astype(np.float64)
    return np.mean(0.5 * (m**2 + np.exp(v) - 1 - v), axis=0)


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory, mnist):
    """latent_dim 10 with β = 30: the KL term dominates and the code collapses to the prior."""
    config = make_config("mlp", latent_dim=10, beta=30.0, epochs=4, train_subset=3000, test_subset=TEST_SUBSET)
    return train(config, tmp_path_factory.mktemp("diag") / "beta30", verbose=0)


def test_a_large_beta_leaves_few_active_units_as_a_direct_computation_says(collapsed, mnist):
    result = evaluate(collapsed, mnist, samples=2, images=1000)
    z_mean, z_log_var = collapsed.encode(scoring_images(mnist, binarized=False)[:1000])
    activity = z_mean.astype(np.float64).var(axis=0)
    assert result.active_units == int((activity > 0.01).sum()) <= 2
    np.testing.assert_allclose(result.unit_activity, activity, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(result.kl_per_dim, direct_kl(z_mean, z_log_var), rtol=1e-5, atol=1e-9)
    assert sum(result.kl_per_dim) == pytest.approx(result.kl_loss, rel=1e-9)
    assert result.kl_loss < 0.5  # nats: next to nothing about the image gets through


def test_a_unit_switched_off_is_found_inactive_and_its_kl_is_zero(small_run, mnist):
    """In a β = 1 run both units are active; setting z_mean and z_log_var of unit 1 to 0 for every image
    (q(z_1|x) = N(0, 1), the prior) makes exactly that unit inactive, with KL 0, and leaves unit 0 as it was."""
    before = evaluate(small_run, mnist, samples=2, images=500)
    assert before.active_units == 2
    run = load_run(small_run.path)  # a copy of the weights, changed in memory only
    for name in ("z_mean", "z_log_var"):
        kernel, bias = run.encoder.get_layer(name).get_weights()
        kernel[:, 1], bias[1] = 0.0, 0.0
        run.encoder.get_layer(name).set_weights([kernel, bias])
    after = evaluate(run, mnist, samples=2, images=500)
    assert after.active_units == 1 and after.unit_activity[1] == 0.0 and after.kl_per_dim[1] == 0.0
    assert after.kl_per_dim[0] == pytest.approx(before.kl_per_dim[0], rel=1e-9)


def test_latent_diagnostics_of_given_codes():
    z_mean = np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 3.0]])
    z_log_var = np.zeros((3, 2))
    d = latent_diagnostics(z_mean, z_log_var)
    np.testing.assert_allclose(d.activity, [0.0, np.var([1.0, -1.0, 3.0])])
    np.testing.assert_allclose(d.kl_per_dim, [0.0, np.mean([0.5, 0.5, 4.5])])  # KL = m^2 / 2 at unit variance
    assert d.active_units == 1 and list(d.active) == [False, True]


def test_traversal_sweeps_one_dimension_at_a_time(collapsed):
    images = traversal(collapsed)
    assert images.shape == (10, len(TRAVERSAL_VALUES), 28, 28)
    middle = len(TRAVERSAL_VALUES) // 2  # z = 0 in every row: the same image
    np.testing.assert_allclose(
        images[:, middle], np.broadcast_to(images[0, middle], images[:, middle].shape), atol=1e-6
    )
    np.testing.assert_allclose(images[3, 0], collapsed.decode(np.eye(10, dtype=np.float32)[[3]] * -2.5)[0], atol=1e-6)


def test_the_diagnostic_figures_are_drawn_for_every_run(collapsed, small_run, mnist, tmp_path):
    figures = draw_run_figures(collapsed, mnist, tmp_path / "ten", parts=["diagnose"])
    assert set(figures.files) == {"reconstruction", "latent_kl", "traversal", "snapshots"}
    assert figures.latent.active_units <= 2 and figures.snapshot_epochs == [1, 2, 3, 4]
    figures = draw_run_figures(small_run, mnist, tmp_path / "two", parts=["diagnose"])
    assert set(figures.files) == {"reconstruction", "latent_kl", "snapshots"}  # no traversal for a plane
    for path in figures.files.values():
        assert path.read_bytes().startswith(b"\x89PNG")


def test_the_snapshot_strip_shows_few_epochs_spread_out():
    assert list(strip_rows(np.arange(1, 5), 8)) == [0, 1, 2, 3]
    rows = strip_rows(np.arange(1, 201), 8)
    assert len(rows) == 8 and rows[0] == 0 and rows[-1] == 199 and list(rows) == sorted(set(rows))
