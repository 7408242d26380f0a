"""Samplers after training (vaelab.analysis.samplers): the mixture's draws and density against their definitions, its
fit,
its file in the run (the documented arrays, read back, fitted again only when the run changed), and
`vaelab generate --sampler` on a trained run and a vqvae."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy import stats

from vaelab.analysis import samplers
from vaelab.analysis.samplers import GaussianMixture, SamplerSpec, fit_gmm, parse_sampler, read_gmm, save_gmm
from vaelab.errors import VaelabError

MIXTURE = GaussianMixture(
    weights=np.array([0.25, 0.75]),
    means=np.array([[-4.0, 0.0], [3.0, 1.0]]),
    covariances=np.array([[[1.0, 0.5], [0.5, 2.0]], [[0.5, 0.0], [0.0, 0.25]]]),
)


def test_sampler_names_parse_and_bad_ones_are_refused():
    assert parse_sampler("prior") == SamplerSpec("prior")
    assert parse_sampler("gmm") == SamplerSpec("gmm", samplers.DEFAULT_COMPONENTS)
    assert parse_sampler("gmm:7") == SamplerSpec("gmm", 7) and str(SamplerSpec("gmm", 7)) == "gmm:7"
    for bad in ("gmm:0", "gmm:x", "prior:3", "flow", "gmm:", f"gmm:{samplers.MAX_COMPONENTS + 1}"):
        with pytest.raises(VaelabError):
            parse_sampler(bad)


def test_mixture_draws_have_its_weights_means_and_covariances():
    z = MIXTURE.sample(200_000, np.random.default_rng(0))
    assert z.dtype == np.float32 and z.shape == (200_000, 2)
    left = z[:, 0] < -0.5  # the components lie far apart along z[0]
    assert left.mean() == pytest.approx(0.25, abs=0.005)
    for part, k in ((z[left], 0), (z[~left], 1)):
        np.testing.assert_allclose(part.mean(0), MIXTURE.means[k], atol=0.02)
        np.testing.assert_allclose(np.cov(part, rowvar=False), MIXTURE.covariances[k], atol=0.03)


def test_mixture_density_is_the_weighted_sum_of_scipys_normals():
    z = np.random.default_rng(1).standard_normal((3, 4, 2)) * 3
    expected = np.log(
        sum(
            w * stats.multivariate_normal(m, c).pdf(z)
            for w, m, c in zip(MIXTURE.weights, MIXTURE.means, MIXTURE.covariances, strict=True)
        )
    )
    np.testing.assert_allclose(MIXTURE.log_density(z), expected, rtol=1e-10)


def test_the_fit_finds_well_separated_clusters():
    rng = np.random.default_rng(2)
    codes = MIXTURE.sample(4000, rng)
    fitted = fit_gmm(codes, 2)
    order = np.argsort(fitted.means[:, 0])
    np.testing.assert_allclose(fitted.weights[order], MIXTURE.weights, atol=0.03)
    np.testing.assert_allclose(fitted.means[order], MIXTURE.means, atol=0.1)
    np.testing.assert_allclose(fitted.covariances[order], MIXTURE.covariances, atol=0.15)
    with pytest.raises(VaelabError, match="at least 5 codes"):
        fit_gmm(codes[:4], 5)


def test_gmm_npz_holds_the_documented_arrays_and_reads_back(tmp_path):
    save_gmm(tmp_path, MIXTURE, run_id="abc", epoch=3, images=4000, mean_log_likelihood=-2.5)
    assert [p.name for p in tmp_path.iterdir()] == [samplers.GMM_FILE]  # written atomically: no leftovers
    with np.load(tmp_path / samplers.GMM_FILE) as saved:
        assert set(saved.files) == {
            "weights", "means", "covariances", "run_id", "epoch", "images", "seed", "mean_log_likelihood"
        }  # fmt: skip
    gmm, record = read_gmm(tmp_path)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(gmm, name), getattr(MIXTURE, name))
    assert record == {
        "run_id": "abc", "epoch": 3, "images": 4000, "seed": samplers.FIT_SEED, "mean_log_likelihood": -2.5
    }  # fmt: skip
    (tmp_path / samplers.GMM_FILE).write_bytes(b"not a zip")
    assert read_gmm(tmp_path) is None  # damaged: fitted again
    assert read_gmm(tmp_path / "elsewhere") is None


@pytest.fixture
def run_copy(small_run, tmp_path):
    """A copy of the shared 2-epoch mlp run, so that its gmm.npz stays out of the shared run's file set."""
    from vaelab.run import load_run

    shutil.copytree(small_run.path, tmp_path / "mlp")
    return load_run(tmp_path / "mlp")


def test_the_runs_mixture_is_fitted_once_saved_and_fitted_again_for_new_weights(run_copy, mnist, monkeypatch):
    import dataclasses

    log = []
    gmm = samplers.gmm_of_run(run_copy, mnist, 4, log=log.append)
    _, record = read_gmm(run_copy.path)
    assert gmm.components == 4 and gmm.means.shape == (4, run_copy.config.model.latent_dim)
    assert record["images"] == run_copy.config.train.train_subset and record["epoch"] == run_copy.epoch
    assert record["run_id"] == run_copy.info["run_id"] and len(log) == 1
    codes = samplers.training_codes(run_copy, mnist)
    assert record["mean_log_likelihood"] == pytest.approx(gmm.log_density(codes).mean())

    fits = []
    monkeypatch.setattr(samplers, "fit_gmm", lambda codes, k: fits.append(k) or MIXTURE)
    again = samplers.sampler(run_copy, "gmm:4", mnist)
    np.testing.assert_array_equal(again.means, gmm.means)
    assert fits == []  # read from gmm.npz
    samplers.sampler(run_copy, "gmm:3", mnist)  # another K
    samplers.sampler(dataclasses.replace(run_copy, epoch=run_copy.epoch + 1), "gmm:3", mnist)  # newer weights
    assert fits == [3, 3]
    assert samplers.sampler(run_copy, "prior").name == "N(0, I)"


def test_generate_draws_from_the_mixture(run_copy, vaelab, tmp_path):
    done = vaelab("generate", run_copy.path, "--sampler", "gmm:3", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "samples.png").exists() and (run_copy.path / samplers.GMM_FILE).exists()
    assert "fitting a 3-component GMM" in done.stderr
    assert read_gmm(run_copy.path)[0].components == 3
    bad = vaelab("generate", run_copy.path, "--sampler", "gmm:-1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_generate_and_quality_refuse_a_mixture_for_a_vqvae(tmp_path, mnist, vaelab):
    run = tmp_path / "vq"
    tiny = ["--model", "vqvae", "--codes", "16", "--latent-dim", "4", "--hidden", "32", "--epochs", "1",
            "--train-subset", "300", "--test-subset", "100", "--no-snapshots"]  # fmt: skip
    assert vaelab("train", *tiny, "--out", run).returncode == 0
    refused = vaelab("generate", run, "--sampler", "gmm")
    assert refused.returncode == 2 and not refused.stdout
    assert refused.stderr.count("\n") == 1 and "vqvae" in refused.stderr and "--sampler prior" in refused.stderr
    assert not (run / samplers.GMM_FILE).exists()
    drawn = vaelab("generate", run, "--sampler", "prior", "--samples", "4", "--out", tmp_path / "out")
    assert drawn.returncode == 0, drawn.stderr
    measured = vaelab("quality", run, "--out", tmp_path / "quality")
    assert measured.returncode == 2 and measured.stderr.count("\n") == 1 and "vqvae" in measured.stderr


@pytest.mark.slow
def test_the_reports_sample_grid_draws_from_the_sampler_chosen(run_copy, mnist, tmp_path):
    from vaelab.report.exercise import build_report

    build_report([run_copy], mnist, tmp_path / "report", sampler="gmm:3")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "--sampler gmm:3" in markdown  # the command that made it
    assert "Twenty draws from a 3-component GMM of q(z) (`--sampler gmm:3`)" in markdown
    assert read_gmm(run_copy.path)[0].components == 3
