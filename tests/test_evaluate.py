"""Evaluation: the importance-weighted bound is above the ELBO and rises with K; batching does not matter."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import TEST_SUBSET, TRAIN_SUBSET
from vaelab.analysis.evaluate import evaluate, evaluate_and_save
from vaelab.config import make_config
from vaelab.run import read_metrics
from vaelab.training.loop import resume, train


def test_iwae_bound_is_above_the_elbo_and_rises_with_k(small_run, mnist):
    results = {k: evaluate(small_run, mnist, samples=k, images=300) for k in (1, 10, 100)}
    for k, result in results.items():
        assert result.iwae >= result.elbo - 0.5, k  # K = 1: both estimate the ELBO
        assert result.nll == -result.iwae
        assert result.elbo == pytest.approx(-(result.reconstruction_loss + result.kl_loss))
    assert results[1].iwae < results[10].iwae < results[100].iwae
    assert results[100].iwae > results[100].elbo + 1.0  # a real gap, in nats
    assert results[1].kl_loss == results[100].kl_loss  # analytic: no sampling


def test_batching_keeps_results_and_memory_bounded(small_run, mnist):
    a = evaluate(small_run, mnist, samples=50, images=64, points_per_call=50)
    b = evaluate(small_run, mnist, samples=50, images=64, points_per_call=3200)
    assert a.iwae == pytest.approx(b.iwae, rel=1e-6) and a.elbo == pytest.approx(b.elbo, rel=1e-6)
    c = evaluate(small_run, mnist, samples=50, images=64, points_per_call=20)  # K split into chunks
    assert c.iwae == pytest.approx(a.iwae, abs=1.0)  # other noise draws, same quantity
    assert np.isfinite([a.iwae, a.elbo, a.elbo_at_mean]).all()


def test_evaluate_command_writes_metrics(small_run, tmp_path, vaelab):
    run_dir = shutil.copytree(small_run.path, tmp_path / "run")
    result = vaelab("evaluate", str(run_dir), "--samples", "20", "--images", "100")
    assert result.returncode == 0, result.stderr
    assert "IWAE bound" in result.stdout and "ELBO" in result.stdout
    # a Bernoulli on grey levels bounds no normalised density: the command says so beside its bound
    assert "the Bernoulli likelihood is not a normalised density" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["evaluation"]["samples"] == 20 and metrics["evaluation"]["images"] == 100
    assert metrics["test"]  # training's figures are kept
    bad = vaelab("evaluate", str(run_dir), "--samples", "0")
    assert bad.returncode == 2 and "expected an integer >= 1" in bad.stderr


def test_a_run_still_training_is_evaluated_at_its_last_epoch_and_says_so(tmp_path, vaelab):
    """A copy of a long run taken while it trains has no final figures yet (metrics.json comes with its last epoch):
    with a KL warm-up, whose final objective the command quotes, that was an internal error after the evaluation."""
    config = make_config("mlp", epochs=1, kl_warmup=1, train_subset=TRAIN_SUBSET, test_subset=TEST_SUBSET)
    run = train(config, tmp_path / "warm", verbose=0)
    finished = vaelab("evaluate", str(shutil.copytree(run.path, tmp_path / "done")), "--samples", "5", "--images", "50")
    assert finished.returncode == 0, finished.stderr
    assert "KL warm-up 1 epoch: its final objective was" in finished.stdout
    assert "the weights of epoch" not in finished.stdout

    # As the files of a 3-epoch run stand after its first epoch: its checkpoint and history, no metrics.json.
    (run.path / "metrics.json").unlink()
    info = json.loads((run.path / "config.json").read_text())
    info["config"]["train"]["epochs"] = 3
    (run.path / "config.json").write_text(json.dumps(info))
    result = vaelab("evaluate", str(run.path), "--samples", "5", "--images", "50")
    assert result.returncode == 0, result.stderr
    assert "training not finished (1 of 3 epochs): the weights of epoch 1" in result.stdout
    assert "KL warm-up 1 epoch: the figures below are the true ELBO (KL weight 1)" in result.stdout
    assert json.loads((run.path / "metrics.json").read_text())["evaluation"]["images"] == 50


def test_training_on_drops_the_figures_of_the_weights_it_changed(tmp_path, mnist):
    """An evaluation saved between sittings describes the weights of its epoch: once training goes on it is removed,
    so that nothing (benchmarks/reproduce.py's reuse of a saved evaluation, the explorer) takes it for the final one."""
    config = make_config("mlp", epochs=1, train_subset=TRAIN_SUBSET, test_subset=TEST_SUBSET)
    run = train(config, tmp_path / "run", verbose=0)
    evaluate_and_save(run, mnist, samples=2, images=20)
    resume(run.path, verbose=0)  # nothing to train: the run's files stay as they are
    assert read_metrics(run.path)["evaluation"]["images"] == 20
    resume(run.path, epochs=2, verbose=0)
    metrics = read_metrics(run.path)
    assert "evaluation" not in metrics and metrics["epochs"] == 2 and metrics["test"]


def test_dynamic_binarisation_trains_and_evaluates_on_binary_pixels(tmp_path, mnist):
    config = make_config("mlp", epochs=2, train_subset=TRAIN_SUBSET, test_subset=TEST_SUBSET, binarize=True)
    run = train(config, tmp_path / "bin", verbose=0)
    assert run.history[1]["loss"] < run.history[0]["loss"]
    assert "binarize" in [layer.name for layer in run.vae.layers]
    result = evaluate(run, mnist, samples=10, images=100)
    assert result.binarized and result.iwae > result.elbo
    from vaelab.data import binarized_test_set

    binary = binarized_test_set(mnist)
    assert set(np.unique(binary)) == {0.0, 1.0}
    np.testing.assert_array_equal(binary, binarized_test_set(mnist))  # the same fixed draw every time
