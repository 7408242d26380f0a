"""The learned prior over a vqvae's codes (vaelab.analysis.code_prior): a normalised autoregressive distribution,
its samples, its file, and the command that trains it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tests.test_models import one_line_error
from vaelab.analysis.code_prior import CodePrior, build_prior_network, load_prior, train_prior
from vaelab.config import ModelConfig, PriorConfig, RunConfig
from vaelab.data.dataset import make_dataset
from vaelab.errors import VaelabError
from vaelab.models import build_models
from vaelab.run import CODE_PRIOR, Run

K, L = 5, 3


def untrained(seed: int = 0) -> CodePrior:
    config = PriorConfig(hidden=16, embedding=4, seed=seed)
    return CodePrior(build_prior_network(L, K, config), config, [], "id")


def test_the_prior_is_a_distribution_over_all_k_to_the_l_codes():
    prior = untrained()
    every = np.array(list(itertools.product(range(K), repeat=L)))
    assert np.exp(prior.log_prob(every)).sum() == pytest.approx(1.0, abs=1e-5)


def test_position_i_reads_only_the_codes_before_it():
    prior = untrained(1)
    codes = np.array([[1, 2, 3]] * 3)
    codes[1, 2] = 4  # the last position changed: the logits of the first two stay
    codes[2, 0] = 0  # the first changed: the second's logits change
    logits = np.asarray(prior.network.predict(codes, verbose=0))
    np.testing.assert_allclose(logits[1, :2], logits[0, :2], atol=1e-6)
    np.testing.assert_allclose(logits[2, 0], logits[0, 0], atol=1e-6)
    assert not np.allclose(logits[2, 1], logits[0, 1])


def test_samples_follow_the_prior():
    prior = untrained(2)
    drawn = prior.sample(20000, seed=3)
    assert drawn.shape == (20000, L) and drawn.min() >= 0 and drawn.max() < K
    first = np.bincount(drawn[:, 0], minlength=K) / len(drawn)  # p(c_0) is the sum over the rest
    every = np.array(list(itertools.product(range(K), repeat=L)))
    expected = np.bincount(every[:, 0], weights=np.exp(prior.log_prob(every)), minlength=K)
    np.testing.assert_allclose(first, expected, atol=0.015)
    np.testing.assert_array_equal(prior.sample(5, seed=4), prior.sample(5, seed=4))  # the seed decides the draws


def vqvae_run(path: Path) -> Run:
    config = RunConfig(model=ModelConfig(family="vqvae", codes=K, latent_dim=L, intermediate_dim=16,
                                         image_shape=(28, 28, 1), likelihood="bernoulli"))  # fmt: skip
    return Run(path=path, config=config, info={"run_id": "abc"}, models=build_models(config.model, seed=2), epoch=1)


def pictures(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def test_a_trained_prior_is_saved_and_loads_back_the_same(tmp_path):
    run = vqvae_run(tmp_path)
    data = make_dataset({"x_train": pictures(200), "x_test": pictures(20)}, name="t", source="t")
    prior = train_prior(run, data, PriorConfig(epochs=2, hidden=16, embedding=4))
    assert [row["epoch"] for row in prior.history] == [1, 2] and (tmp_path / CODE_PRIOR).exists()
    assert not list(tmp_path.glob(".*partial*"))  # written atomically
    codes = run.codes(pictures(20))
    loaded = load_prior(run)
    np.testing.assert_allclose(loaded.log_prob(codes), prior.log_prob(codes), rtol=1e-6)
    assert loaded.config == prior.config and loaded.history == prior.history
    run.info["run_id"] = "trained again over it"
    with pytest.raises(VaelabError, match="belongs to an earlier run") as err:
        load_prior(run)
    assert "vaelab train-prior" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / CODE_PRIOR).write_bytes(b"not a zip")
    with pytest.raises(VaelabError, match="is damaged"):
        load_prior(run)


def test_a_prior_for_a_run_that_is_not_a_vqvae_is_one_line(small_run, vaelab):
    one_line_error(vaelab("train-prior", small_run.path), "train-prior fits a prior over a vqvae's codes")
    assert not (small_run.path / CODE_PRIOR).exists()
