"""The vamp (VampPrior) and the betatc (β-TCVAE): each loss against a direct NumPy computation with the model's own
draws, the VampPrior's density and draws, evaluation against the VampPrior, the betatc's decomposition, the
settings that choose them, and both end to end through the CLI on MNIST."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from scipy import special, stats

from tests.test_models import SMALL, SUBSET, bernoulli_log_px, images, log_normal, numpy_of, one_line_error
from vaelab import config as settings
from vaelab.analysis.evaluate import evaluate
from vaelab.config import ModelConfig, RunConfig, make_config
from vaelab.data.dataset import make_dataset
from vaelab.errors import VaelabError
from vaelab.models import build_models, parameter_count, priors
from vaelab.report.exercise import build_report
from vaelab.run import Run, load_run, run_dir_name


def mixture_log_density(z, means, log_vars) -> np.ndarray:
    """log (1/N) sum_n N(z; means[n], diag(exp(log_vars[n]))) in float64, with scipy's densities."""
    z = np.asarray(z, np.float64)
    components = [
        stats.multivariate_normal(m, np.diag(np.exp(lv))).logpdf(z.reshape(-1, z.shape[-1])) for m, lv in
        zip(np.asarray(means, np.float64), np.asarray(log_vars, np.float64), strict=True)
    ]  # fmt: skip
    return (special.logsumexp(np.stack(components, axis=-1), axis=-1) - np.log(len(means))).reshape(z.shape[:-1])


def metric_values(model) -> dict[str, float]:
    return {m.name: float(m.result()) for m in model.metrics if m.name != "loss"}


# --- vamp ------------------------------------------------------------------------------------------------


def test_the_vamp_loss_is_the_reconstruction_plus_the_weighted_kl_at_the_draw_against_its_mixture():
    x = images()
    models = build_models(ModelConfig(family="vamp", pseudo_inputs=5, **SMALL), seed=1, binarize=True)
    out = models.vae(x, training=True)  # x is binary: binarisation leaves it as it is
    models.vae.kl_weight.assign(0.5)
    loss = float(models.vae.compute_loss(x=x, y_pred=out))
    y = numpy_of(out)
    # The mixture's components are the encoder's codes of the pseudo-inputs, never binarised: grey levels in (0, 1).
    u = models.vae.get_layer("pseudo_inputs").images()
    assert u.shape == (5, 28, 28, 1) and u.min() > 0 and u.max() < 1 and len(np.unique(u)) > 100
    means, log_vars = (np.asarray(a) for a in models.encoder.predict(u, verbose=0))
    np.testing.assert_allclose(y["prior_mean"], means, atol=1e-5)
    np.testing.assert_allclose(y["prior_log_var"], log_vars, atol=1e-5)

    z = y["z"]
    reconstruction = -bernoulli_log_px(x, y["x_decoded_mean"])
    kl = log_normal(z, y["z_mean"], y["z_log_var"]) - mixture_log_density(z, means, log_vars)
    assert loss == pytest.approx(np.mean(reconstruction + 0.5 * kl), rel=1e-5)
    metrics = metric_values(models.vae)
    assert metrics["kl_loss"] == pytest.approx(kl.mean(), rel=1e-4, abs=1e-4)
    assert metrics["elbo_loss"] == pytest.approx(np.mean(reconstruction + kl), rel=1e-5)
    assert "pseudo_inputs/logits" in [v.path for v in models.vae.trainable_variables]  # trained, checkpointed


def test_the_vampprior_density_and_draws_are_the_mixtures():
    rng = np.random.default_rng(0)
    means, log_vars = rng.normal(size=(4, 3)) * 3, rng.normal(size=(4, 3))
    prior = priors.VampMixture(means, log_vars)
    z = rng.normal(size=(5, 6, 3)) * 3
    expected = mixture_log_density(z, means, log_vars)
    np.testing.assert_allclose(prior.log_density(z), expected, rtol=1e-12)
    in_float32 = keras.ops.convert_to_numpy(
        priors.log_mixture_density(z.astype("float32"), means.astype("float32"), log_vars.astype("float32"))
    )  # the training loss's, the same function
    np.testing.assert_allclose(in_float32, expected, rtol=1e-5)
    assert prior.kl(means, log_vars) is None  # no closed form

    two = priors.VampMixture(np.array([[-20.0, 0.0], [20.0, 0.0]]), np.log(np.array([[1.0, 1.0], [4.0, 4.0]])))
    draws = two.sample(4000, np.random.default_rng(1))
    assert draws.dtype == np.float32 and draws.shape == (4000, 2)
    right = draws[:, 0] > 0
    assert right.mean() == pytest.approx(0.5, abs=0.03)  # a pseudo-input chosen uniformly
    assert draws[~right].std(axis=0) == pytest.approx([1, 1], rel=0.1)
    assert draws[right].std(axis=0) == pytest.approx([2, 2], rel=0.1)


@pytest.mark.parametrize("log_var", [-5.0, -12.5, -30.0, -40.0])
def test_the_vampprior_density_stays_exact_for_components_of_tiny_variance(log_var):
    """Points drawn from a component with sigma^2 = e^log_var: the expanded squares lost 0.049 nats at -30, 37 at -40"""
    rng = np.random.default_rng(2)
    means = rng.normal(size=(6, 40)) * 3
    log_vars = rng.normal(size=(6, 40)) * 0.5
    log_vars[2] = log_var  # one sharp component among wide ones
    log_vars[4, :3] = log_var  # and one sharp in only a few dimensions
    z = np.concatenate([means[2] + np.exp(0.5 * log_var) * rng.normal(size=(20, 40)), rng.normal(size=(5, 40)) * 3])
    z[-1, :3] = means[4, :3]
    # scipy's univariate densities summed over the dimensions (its multivariate normal refuses so ill-conditioned a
    # covariance)
    per_component = stats.norm.logpdf(z[:, None, :], means, np.exp(0.5 * log_vars)).sum(-1)
    expected = special.logsumexp(per_component, axis=-1) - np.log(len(means))
    np.testing.assert_allclose(priors.VampMixture(means, log_vars).log_density(z), expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the written-out gradient is the JAX backend's")
@pytest.mark.parametrize(("codes", "components", "log_var"), [(100, 500, 0.0), (7, 3, 0.0), (20, 41, -30.0)])
def test_the_training_density_and_its_gradient_are_the_references(codes, components, log_var):
    """`log_mixture_density` on JAX (its components a few at a time, its gradient written out) against the keras.ops
    reference differentiated by JAX: a number of components that does not fill its last step, and a sharp one."""
    import jax

    rng = np.random.default_rng(3)
    dims = 40 if components == 500 else 5
    means = rng.normal(size=(components, dims)).astype(np.float32)
    log_vars = (rng.normal(size=(components, dims)) - 1).astype(np.float32)
    log_vars[1] = log_var
    z = np.concatenate([rng.normal(size=(codes - 1, dims)), means[1:2] + np.exp(0.5 * log_var) * 0.3])
    z = z.astype(np.float32)
    g = rng.normal(size=codes).astype(np.float32)
    value, pullback = jax.vjp(priors.log_mixture_density, z, means, log_vars)
    reference, reference_pullback = jax.vjp(priors._log_mixture_density_ops, z, means, log_vars)
    np.testing.assert_allclose(value, reference, rtol=1e-6, atol=1e-4)
    for grad, expected in zip(pullback(g), reference_pullback(g), strict=True):
        np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    in_three = priors.log_mixture_density(z.reshape(codes, 1, dims), means, log_vars)  # (..., d) as well
    np.testing.assert_allclose(np.asarray(in_three)[:, 0], value, rtol=1e-6)


def test_a_vamps_snapshots_decode_draws_from_its_vampprior_as_it_learns(tmp_path):
    from vaelab.training.snapshots import PRIOR_DRAWS, SnapshotCallback, to_uint8

    models = build_models(ModelConfig(family="vamp", pseudo_inputs=4, **SMALL), seed=6)
    callback = SnapshotCallback(tmp_path, models, images(3)[..., 0], None, seed=0, first_epoch=0)
    assert callback.pick.shape == (PRIOR_DRAWS,) and set(callback.pick) <= set(range(4))
    shifted = next(v for v in models.vae.trainable_variables if v.path == "pseudo_inputs/logits")
    for epoch in range(2):  # the pseudo-inputs change between the epochs, and the draws follow them
        shifted.assign(shifted + 3.0 * epoch)
        callback.on_epoch_end(epoch)
        prior = models.prior()
        z = prior.means[callback.pick] + np.exp(0.5 * prior.log_vars[callback.pick]) * callback.z
        decoded = to_uint8(models.generator.predict(z.astype(np.float32), verbose=0))
        np.testing.assert_allclose(callback.samples[-1], decoded, atol=1)  # uint8 levels, rounded once each way
    callback.on_train_end()
    assert not np.array_equal(callback.samples[0], callback.samples[1])
    straight = to_uint8(models.generator.predict(callback.z, verbose=0))  # N(0, I) draws would decode otherwise
    assert not np.array_equal(callback.samples[-1], straight)


def test_the_vamps_evaluation_bounds_log_px_with_its_prior():
    k, n = 4, 3
    config = RunConfig(model=ModelConfig(family="vamp", pseudo_inputs=3, **SMALL))
    models = build_models(config.model, seed=2)
    pictures = (images(n, seed=3)[..., 0] * 255).astype(np.uint8)
    data = make_dataset({"x_train": pictures[:1], "x_test": pictures}, name="tiny", source="generated for the tests")
    run = Run(path=None, config=config, info={}, models=models, epoch=1)
    result = evaluate(run, data, samples=k, seed=5)

    x = pictures[..., None].astype(np.float32) / 255
    z_mean, z_log_var = (np.asarray(a, np.float64) for a in models.encoder.predict(x, verbose=0))
    prior = models.prior()
    noise = np.random.default_rng(5).standard_normal((n, k, 3))  # evaluate's draws: one call for these few
    z = z_mean[:, None] + np.exp(0.5 * z_log_var[:, None]) * noise
    decoded = np.asarray(models.generator.predict(z.reshape(-1, 3).astype(np.float32), verbose=0))
    log_px = bernoulli_log_px(np.repeat(x, k, axis=0), decoded).reshape(n, k)
    log_pz = mixture_log_density(z, prior.means, prior.log_vars)
    log_qz = log_normal(z, z_mean[:, None], z_log_var[:, None])
    iwae = special.logsumexp(log_px + log_pz - log_qz, axis=1) - np.log(k)
    assert result.iwae == pytest.approx(iwae.mean(), rel=1e-5)
    assert result.kl_loss == pytest.approx(np.mean(log_qz - log_pz), rel=1e-5)
    assert result.elbo == pytest.approx(np.mean(log_px + log_pz - log_qz), rel=1e-5)
    assert result.bound == "log p(x)"


# --- betatc ----------------------------------------------------------------------------------------------


def test_the_betatc_loss_weights_the_total_correlation_of_its_minibatch_estimate():
    x, dataset_size = images(6), 50
    models = build_models(ModelConfig(family="betatc", dataset_size=dataset_size, **SMALL), seed=4)
    out = models.vae(x, training=True)
    models.vae.kl_weight.assign(3.0)
    loss = float(models.vae.compute_loss(x=x, y_pred=out))
    y = numpy_of(out)
    z, mean, log_var = (y[k].astype(np.float64) for k in ("z", "z_mean", "z_log_var"))
    m = len(z)
    # log q(z_i,j | x_m), every draw i against every image m, dimension by dimension: (M, M, d)
    per_dim = -0.5 * (np.log(2 * np.pi) + log_var[None] + (z[:, None] - mean[None]) ** 2 / np.exp(log_var[None]))
    log_qz = special.logsumexp(per_dim.sum(axis=2), axis=1) - np.log(dataset_size * m)
    log_qz_product = (special.logsumexp(per_dim, axis=1) - np.log(dataset_size * m)).sum(axis=1)
    log_qz_x = log_normal(z, mean, log_var)
    mi, tc, dim_kl = log_qz_x - log_qz, log_qz - log_qz_product, log_qz_product - log_normal(z)
    reconstruction = -bernoulli_log_px(x, y["x_decoded_mean"])
    assert loss == pytest.approx(np.mean(reconstruction + mi + 3.0 * tc + dim_kl), rel=1e-5)

    metrics = metric_values(models.vae)
    for name, term in (("mutual_information", mi), ("total_correlation", tc), ("dimension_kl", dim_kl)):
        assert metrics[name] == pytest.approx(term.mean(), rel=1e-4, abs=1e-3), name
    # The three terms are the KL at the draw, split: their sum is log q(z|x) - log p(z), the estimate logged as kl_loss
    assert metrics["kl_loss"] == pytest.approx(np.mean(log_qz_x - log_normal(z)), rel=1e-4, abs=1e-3)
    assert metrics["elbo_loss"] == pytest.approx(np.mean(reconstruction + log_qz_x - log_normal(z)), rel=1e-5)
    assert metrics["kl_weight"] == 3.0
    assert models.prior() == priors.StandardNormal(3)


# --- settings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,extra,arch",
    [("vamp", {"pseudo_inputs": 3}, "mlp"), ("vamp", {"pseudo_inputs": 3}, "conv"), ("betatc", {}, "mlp")],
)
def test_the_weights_foreseen_are_the_weights_built(family, extra, arch):
    config = ModelConfig(arch=arch, family=family, intermediate_dim=16, **extra)
    assert parameter_count(build_models(config, seed=0).vae) == config.parameters()


def test_the_vamp_and_betatc_settings_are_checked_in_one_line(mnist, vaelab):
    cases = [
        (dict(model="vae", pseudo_inputs=3), "--pseudo-inputs is the vamp's number of pseudo-inputs; leave it out"),
        (dict(model="betatc", pseudo_inputs=3), "leave it out with --model betatc"),
        (dict(model="vamp", pseudo_inputs=0), "pseudo_inputs must be an integer >= 1"),
        (dict(model="vamp", k=3), "--k is the number of codes per image of the vae and the iwae"),
    ]
    for kwargs, message in cases:
        with pytest.raises(VaelabError, match=message) as err:
            make_config("mlp", **kwargs)
        assert "\n" not in str(err.value)
    for model, message in (("vamp", "the vamp weighs codes drawn"), ("vae", "dataset_size is the betatc's")):
        with pytest.raises(VaelabError, match=message):
            ModelConfig(family=model, epsilon_std=2.0 if model == "vamp" else 1.0,
                        dataset_size=None if model == "vamp" else 10).validate()  # fmt: skip
    assert make_config("mlp", model="vamp").model.pseudo_input_count == settings.DEFAULT_PSEUDO_INPUTS
    assert make_config("mlp", model="vae").model.pseudo_input_count == 0
    assert make_config("mlp", model="betatc", beta=4, kl_warmup=2).train.beta == 4.0  # β weighs the TC
    # The betatc's N is the training images the run reads; the other models take none.
    assert make_config("mlp", model="betatc", train_subset=300).for_data(mnist).model.dataset_size == 300
    assert make_config("mlp", model="betatc").for_data(mnist).model.dataset_size == 60_000
    assert make_config("mlp", model="vamp").for_data(mnist).model.dataset_size is None
    # The report passes --pseudo-inputs on to its networks' settings (it once dropped it without a word).
    one_line_error(vaelab("report", "--pseudo-inputs", "3", "--epochs", "1"), "--pseudo-inputs is the vamp's")


def test_the_models_settings_are_saved_with_the_run_and_name_it():
    config = make_config("mlp", model="vamp", pseudo_inputs=10)
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert (again.model.family, again.model.pseudo_inputs) == ("vamp", 10)
    assert run_dir_name(config) == "mlp-vamp-pseudo-inputs10"
    assert run_dir_name(make_config("mlp", model="betatc", beta=4)) == "mlp-betatc-beta4.0"
    old = config.to_dict()
    for name in ("pseudo_inputs", "dataset_size"):  # runs made before these models existed
        del old["model"][name]
    assert RunConfig.from_dict(old).model.pseudo_inputs is None


def test_a_sweep_trains_vamp_points_with_their_pseudo_inputs():
    from vaelab.sweep import grid

    points = grid({"seed": [0, 1]}, {"model": "vamp", "pseudo_inputs": 7, "epochs": 1}, "mnist")
    assert [p.config.model.pseudo_inputs for p in points] == [7, 7]
    assert points[0].name == "mlp-vamp-pseudo-inputs7-epochs1"


# --- end to end through the CLI --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model,options", [("vamp", ["--pseudo-inputs", "10"]), ("betatc", ["--beta", "4"])])
def test_vamp_and_betatc_train_evaluate_generate_export_and_resume(tmp_path, mnist, vaelab, model, options):
    run = tmp_path / model
    tiny = ["--latent-dim", "2", "--no-snapshots"]
    trained = vaelab("train", "--model", model, *options, *SUBSET, *tiny, "--out", str(run))
    assert trained.returncode == 0, trained.stderr
    history = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert ("total_correlation" in history and "val_mutual_information" in history) == (model == "betatc")
    test = json.loads((run / "metrics.json").read_text())["test"]
    if model == "betatc":  # the objective weighs the TC by β; the ELBO's KL is the three terms' sum
        terms = test["mutual_information"] + test["total_correlation"] + test["dimension_kl"]
        assert test["kl_loss"] == pytest.approx(terms, abs=1e-3)
        assert test["loss"] == pytest.approx(test["elbo_loss"] + 3 * test["total_correlation"], abs=1e-2)

    evaluated = vaelab("evaluate", str(run), "--samples", "10", "--images", "100")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "log p(x) >= IWAE bound" in evaluated.stdout
    assert ("estimated at the K samples" in evaluated.stdout) == (model == "vamp")
    evaluation = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert evaluation["iwae"] >= evaluation["elbo"] - 1.0

    generated = vaelab("generate", str(run), "--samples", "4", "--out", str(tmp_path / "figures"))
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "figures" / "samples.png").exists()
    exported = vaelab("export", str(run), "--out", str(tmp_path / "keras"))
    assert exported.returncode == 0, exported.stderr
    generator = keras.saving.load_model(tmp_path / "keras" / "generator.keras")
    assert generator.predict(np.zeros((2, 2), np.float32), verbose=0).shape == (2, 28, 28, 1)
    assert (tmp_path / "keras" / "pseudo_inputs.npy").exists() == (model == "vamp")
    if model == "vamp":  # plain Keras rebuilds the VampPrior: the exported encoder on the exported pseudo-inputs
        encoder = keras.saving.load_model(tmp_path / "keras" / "encoder.keras")
        means, _ = encoder.predict(np.load(tmp_path / "keras" / "pseudo_inputs.npy"), verbose=0)
        assert means.shape == (10, 2)
        np.testing.assert_allclose(means, load_run(run).models.prior().means, atol=1e-5)

    build_report([load_run(run)], mnist, tmp_path / "report")  # the report's section of this model
    section = (tmp_path / "report" / "report.md").read_text()
    prior = "the VampPrior" if model == "vamp" else "N(0, I)"
    assert f"Twenty draws from the prior {prior}, decoded:" in section
    assert (tmp_path / "report" / "figures" / run.name / "samples.png").exists()

    refused = ["--model", "vae"] if model == "vamp" else ["--pseudo-inputs", "5"]  # one each, to keep it short
    one_line_error(vaelab("train", "--resume", str(run), *refused), "keeps the model")
    resumed = vaelab("train", "--resume", str(run), "--epochs", "2", "--no-snapshots")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    if model == "vamp":  # the pseudo-inputs are the checkpoint's: the reloaded prior is the one trained
        with np.load(run / "checkpoint.npz") as saved:
            index = list(saved["model_paths"]).index("pseudo_inputs/logits")
            logits = saved[f"model/{index:03d}"]
        reloaded = load_run(run).vae.get_layer("pseudo_inputs").images()
        np.testing.assert_allclose(reloaded, 1 / (1 + np.exp(-logits)), atol=1e-6)
    if model == "betatc":
        refused = vaelab("train", "--model", model, "--pseudo-inputs", "5", *SUBSET, "--out", str(tmp_path / "a"))
        one_line_error(refused, "--pseudo-inputs is the vamp's")
        assert not (tmp_path / "a").exists()
