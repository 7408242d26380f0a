"""The VAE family (vaelab.models): each model's loss against a direct computation on a tiny batch, the settings
that choose a model, the labelled batches of the cvae, and every model end to end through the CLI on MNIST."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from scipy import special

from vaelab import config as settings
from vaelab.config import ModelConfig, RunConfig, make_config
from vaelab.data.batches import Batches, one_hot
from vaelab.errors import VaelabError
from vaelab.models import MODELS, build_models, parameter_count
from vaelab.report.exercise import build_report
from vaelab.run import load_run, run_dir_name

SMALL = {"latent_dim": 3, "intermediate_dim": 16}
LOG_2PI = np.log(2 * np.pi)


def images(n: int = 4, seed: int = 0) -> np.ndarray:
    """`n` binary 28x28 images, float32."""
    return (np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)) < 0.3).astype(np.float32)


def bernoulli_log_px(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """log p(x|z) per image in float64, the probabilities clipped as Keras' cross-entropy clips them."""
    p = np.clip(np.asarray(mean, np.float64).reshape(len(mean), -1), 1e-7, 1 - 1e-7)
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return (x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=1)


def log_normal(z, mean=0.0, log_var=0.0) -> np.ndarray:
    """log N(z; mean, exp(log_var)) summed over the last axis, float64, written out here."""
    z, mean, log_var = (np.asarray(a, np.float64) for a in (z, mean, log_var))
    return -0.5 * np.sum(LOG_2PI + log_var + (z - mean) ** 2 / np.exp(log_var), axis=-1)


def prior_kl(z_mean, z_log_var) -> np.ndarray:
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)) per image, float64."""
    m, lv = np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)
    return 0.5 * np.sum(np.exp(lv) + m**2 - 1 - lv, axis=-1)


def numpy_of(outputs: dict) -> dict[str, np.ndarray]:
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def test_the_registry_names_every_model_the_configuration_takes():
    assert tuple(MODELS) == settings.MODELS
    assert ModelConfig().family == "vae"


def test_the_iwae_loss_is_the_importance_weighted_bound_of_its_own_draws():
    k, x = 3, images()
    models = build_models(ModelConfig(family="iwae", k=k, **SMALL), seed=1)
    out = models.vae(x, training=True)
    loss = float(models.vae.compute_loss(x=x, y_pred=out))
    y = numpy_of(out)
    z = y["z"]
    assert z.shape == (4, k, 3) and y["x_decoded_mean"].shape == (4 * k, 28, 28, 1)
    # The decoder's K x batch rows are image i's K codes in order: each is the generator's image of that code.
    decoded = np.asarray(models.generator.predict(z.reshape(-1, 3), verbose=0))
    np.testing.assert_allclose(y["x_decoded_mean"], decoded, atol=1e-6)

    log_px = bernoulli_log_px(np.repeat(x, k, axis=0), y["x_decoded_mean"]).reshape(4, k)
    log_w = log_px + log_normal(z) - log_normal(z, y["z_mean"][:, None], y["z_log_var"][:, None])
    expected = -np.mean(special.logsumexp(log_w, axis=1) - np.log(k))
    assert loss == pytest.approx(expected, rel=1e-5)
    metrics = {m.name: float(m.result()) for m in models.vae.metrics if m.name != "loss"}
    assert metrics["reconstruction_loss"] == pytest.approx(-log_px.mean(), rel=1e-5)
    assert metrics["kl_loss"] == pytest.approx(prior_kl(y["z_mean"], y["z_log_var"]).mean(), rel=1e-5)
    assert metrics["elbo_loss"] == pytest.approx(metrics["reconstruction_loss"] + metrics["kl_loss"], rel=1e-6)


def test_the_iwae_with_one_sample_is_the_vaes_elbo_at_the_same_draw():
    """Same seed, same weights, same z: the reconstruction agrees exactly; the objective differs from the VAE's
    only by the KL, which the iwae estimates at the draw (log q - log p) and the VAE takes in closed form."""
    x = images(8)
    vae = build_models(ModelConfig(**SMALL), seed=3).vae
    iwae = build_models(ModelConfig(family="iwae", k=1, **SMALL), seed=3).vae
    for a, b in zip(vae.trainable_weights, iwae.trainable_weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    out_v, out_i = vae(x, training=True), iwae(x, training=True)
    loss_v = float(vae.compute_loss(x=x, y_pred=out_v))
    loss_i = float(iwae.compute_loss(x=x, y_pred=out_i))
    y_v, y_i = numpy_of(out_v), numpy_of(out_i)
    np.testing.assert_allclose(y_i["x_decoded_mean"], y_v["x_decoded_mean"], atol=1e-6)  # the same z
    z = y_i["z"][:, 0]
    kl_at_draw = log_normal(z, y_i["z_mean"], y_i["z_log_var"]) - log_normal(z)
    kl = prior_kl(y_v["z_mean"], y_v["z_log_var"])
    assert loss_i - loss_v == pytest.approx(np.mean(kl_at_draw - kl), abs=1e-3)
    reconstruction = [float(next(m for m in model.metrics if m.name == "reconstruction_loss").result())
                      for model in (vae, iwae)]  # fmt: skip
    assert reconstruction[1] == pytest.approx(reconstruction[0], rel=1e-6)


def test_the_vae_with_k_codes_averages_its_elbo_over_the_iwaes_draws():
    """--model vae --k K: the reconstruction term averaged over K draws per image, the KL in closed form (Burda et
    al.'s "VAE, k = 5"). Same seed, same weights: the iwae with the same K draws the same codes, so the two agree
    on the reconstruction term, and the vae's objective is that plus the closed-form KL, weighted by β."""
    k, x = 3, images()
    vae = build_models(ModelConfig(k=k, **SMALL), seed=4).vae
    iwae = build_models(ModelConfig(family="iwae", k=k, **SMALL), seed=4).vae
    vae.kl_weight.assign(0.5)
    out_v, out_i = vae(x, training=True), iwae(x, training=True)
    loss = float(vae.compute_loss(x=x, y_pred=out_v))
    iwae.compute_loss(x=x, y_pred=out_i)
    y, y_i = numpy_of(out_v), numpy_of(out_i)
    assert y["z"].shape == (4, k, 3) and y["x_decoded_mean"].shape == (4 * k, 28, 28, 1)
    np.testing.assert_array_equal(y["z"], y_i["z"])
    log_px = bernoulli_log_px(np.repeat(x, k, axis=0), y["x_decoded_mean"]).reshape(4, k)
    kl = prior_kl(y["z_mean"], y["z_log_var"])
    assert loss == pytest.approx(np.mean(-log_px.mean(axis=1) + 0.5 * kl), rel=1e-5)
    metrics = [{m.name: float(m.result()) for m in model.metrics if m.name != "loss"} for model in (vae, iwae)]
    assert metrics[0]["reconstruction_loss"] == pytest.approx(metrics[1]["reconstruction_loss"], rel=1e-6)
    assert metrics[0]["kl_loss"] == pytest.approx(kl.mean(), rel=1e-5)

    config = make_config("mlp", model="vae", k=k, epochs=1)
    assert config.model.samples == k and run_dir_name(config).startswith("mlp-k3")
    vae.compile(optimizer="adam")
    history = vae.fit(np.concatenate([x, x]), epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["elbo_loss"][0] >= history["reconstruction_loss"][0]


def test_the_cvae_loss_is_the_conditional_elbo_and_both_networks_read_the_label():
    x, labels = images(), np.array([0, 1, 2, 1])
    models = build_models(ModelConfig(family="cvae", classes=3, **SMALL), seed=2)
    y_onehot = one_hot(labels, 3)
    out = models.vae([x, y_onehot], training=True)
    loss = float(models.vae.compute_loss(x=[x, y_onehot], y_pred=out))
    y = numpy_of(out)
    expected = np.mean(-bernoulli_log_px(x, y["x_decoded_mean"]) + prior_kl(y["z_mean"], y["z_log_var"]))
    assert loss == pytest.approx(expected, rel=1e-5)

    other = one_hot((labels + 1) % 3, 3)
    z_a = np.asarray(models.encoder.predict([x, y_onehot], verbose=0)[0])
    z_b = np.asarray(models.encoder.predict([x, other], verbose=0)[0])
    assert not np.allclose(z_a, z_b)
    gen_a = np.asarray(models.generator.predict([z_a, y_onehot], verbose=0))
    gen_b = np.asarray(models.generator.predict([z_a, other], verbose=0))
    assert not np.allclose(gen_a, gen_b)


@pytest.mark.parametrize("family,extra", [("iwae", {"k": 4}), ("cvae", {"classes": 10})])
@pytest.mark.parametrize("arch", ["mlp", "conv", "convnet"])
def test_the_weights_foreseen_are_the_weights_built(family, extra, arch):
    config = ModelConfig(arch=arch, family=family, intermediate_dim=16, **extra)
    assert parameter_count(build_models(config, seed=0).vae) == config.parameters()


def test_the_model_settings_are_checked_in_one_line():
    cases = [
        (
            dict(model="vamp", k=3),
            "--k is the number of codes per image of the vae and the iwae; leave it out with --model vamp",
        ),
        (dict(model="cvae", k=3), "leave it out with --model cvae"),
        (dict(model="vae", k=0), "k must be an integer >= 1"),
        (dict(model="gan"), "unknown model 'gan'; choose one of: vae, iwae, cvae, vamp, betatc"),
        (dict(model="iwae", k=0), "k must be an integer >= 1"),
        (dict(model="iwae", beta=4), "--beta and --kl-warmup weight the ELBO's KL term"),
        (dict(model="iwae", kl_warmup=2), "--beta and --kl-warmup weight the ELBO's KL term"),
    ]
    for kwargs, message in cases:
        with pytest.raises(VaelabError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            make_config("mlp", **kwargs)
        assert "\n" not in str(err.value)
    assert make_config("mlp", model="iwae").model.samples == settings.DEFAULT_K
    assert make_config("mlp", model="cvae", beta=4).train.beta == 4.0  # β weighs the cvae's KL as the VAE's


def test_the_model_is_saved_with_the_run_and_older_runs_load_as_vaes():
    config = make_config("mlp", model="iwae", k=3)
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert (again.model.family, again.model.k) == ("iwae", 3)
    old = config.to_dict()
    for name in ("family", "k", "classes"):
        del old["model"][name]
    assert RunConfig.from_dict(old).model == ModelConfig()
    assert run_dir_name(config) == "mlp-iwae-k3"
    assert run_dir_name(make_config("mlp", model="cvae")) == "mlp-cvae"


def test_a_cvae_takes_the_datas_classes_and_refuses_data_without_labels(mnist):
    from vaelab.data.dataset import make_dataset

    config = make_config("mlp", model="cvae")
    assert config.for_data(mnist).model.classes == 10
    assert make_config("mlp").for_data(mnist).model.classes is None
    unlabelled = make_dataset({"x_train": mnist.x_train[:10], "x_test": mnist.x_test[:10]}, name="mnist", source="t")
    with pytest.raises(VaelabError, match=r"a cvae is conditioned on the labels, and .* has none; give labelled data"):
        config.for_data(unlabelled)


def test_labelled_batches_carry_each_images_own_label():
    labels = np.arange(50) % 7
    pictures = np.repeat(labels.astype(np.uint8)[:, None, None] * 30, 28 * 28).reshape(50, 28, 28)
    batches = Batches(pictures, 16, seed=5, labels=labels, classes=7)
    batches.set_epoch(2)
    seen = 0
    for index in range(len(batches)):
        ((x, y),) = batches[index]
        assert y.shape == (len(x), 7) and y.dtype == np.float32
        np.testing.assert_array_equal(np.argmax(y, axis=1), np.round(x[:, 0, 0, 0] * 255 / 30).astype(int))
        seen += len(x)
    assert seen == 50
    assert isinstance(Batches(pictures, 16)[0], np.ndarray)  # without labels: the images alone, as before


# --- end to end through the CLI -------------------------------------------------------------------------

SUBSET = ["--epochs", "1", "--train-subset", "500", "--test-subset", "200"]


def one_line_error(result, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model,options", [("iwae", ["--k", "3"]), ("vae", ["--k", "2"]), ("cvae", [])])
def test_every_model_trains_evaluates_generates_exports_and_resumes(tmp_path, mnist, vaelab, model, options):
    run = tmp_path / model
    trained = vaelab("train", "--model", model, *options, *SUBSET, "--out", str(run))
    assert trained.returncode == 0, trained.stderr
    config = json.loads((run / "config.json").read_text())["config"]["model"]
    assert config["family"] == model
    metrics = json.loads((run / "metrics.json").read_text())
    bound = "log p(x|y)" if model == "cvae" else "log p(x)"
    assert metrics["test"]["bound"] == bound

    evaluated = vaelab("evaluate", str(run), "--samples", "10", "--images", "100")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{bound} >= IWAE bound" in evaluated.stdout
    evaluation = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert evaluation["bound"] == bound and evaluation["iwae"] >= evaluation["elbo"] - 1.0

    generate = ["--label", "3"] if model == "cvae" else ["--samples", "4"]
    generated = vaelab("generate", str(run), *generate, "--out", str(tmp_path / "figures"))
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "figures" / "samples.png").exists()

    exported = vaelab("export", str(run), "--out", str(tmp_path / "keras"))
    assert exported.returncode == 0, exported.stderr
    generator = keras.saving.load_model(tmp_path / "keras" / "generator.keras")
    if model == "cvae":  # two inputs: z and the one-hot label
        decoded = generator.predict([np.zeros((2, 2), np.float32), one_hot(np.array([3, 7]), 10)], verbose=0)
    else:
        decoded = generator.predict(np.zeros((2, 2), np.float32), verbose=0)
    assert decoded.shape == (2, 28, 28, 1)

    explored = vaelab("explore", str(run), "--export", str(tmp_path / "page"))
    encoded = vaelab("encode", str(run), "--out", str(tmp_path / "encode"))
    assert encoded.returncode == 0, encoded.stderr  # a cvae encodes each test image with its label
    assert (tmp_path / "encode" / "latent_map.png").exists() and (tmp_path / "encode" / "class_table.md").exists()
    assert explored.returncode == 0, explored.stderr  # a cvae's page has a class selector (test_explore_family.py)
    assert (tmp_path / "page" / "index.html").exists()

    build_report([load_run(run)], mnist, tmp_path / "report")  # the report's section of this model
    section = (tmp_path / "report" / "report.md").read_text()
    assert f"the importance-weighted lower bound on {bound} with the same K samples" in section
    flags = ([] if model == "vae" else ["--model", model]) + options  # the command: the member, its own flags
    assert " ".join(flags) in section
    if model == "cvae":  # every class from the same draws, and the figures' class named
        assert f"figures/{run.name}/class_grid.png" in section and "decoded, as the digit 0:" in section
        assert (tmp_path / "report" / "figures" / run.name / "class_grid.png").exists()
    else:
        assert "class_grid" not in section and "decoded:" in section

    resumed = vaelab("train", "--resume", str(run), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_every_bad_model_input_is_one_line_and_exit_2(tmp_path, mnist, vaelab):
    one_line_error(vaelab("train", "--model", "betatc", "--k", "3", *SUBSET, "--out", str(tmp_path / "a")), "--k")
    one_line_error(vaelab("train", "--model", "iwae", "--beta", "2", *SUBSET, "--out", str(tmp_path / "b")), "--beta")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    npz = tmp_path / "unlabelled.npz"
    np.savez(npz, x_train=mnist.x_train[:200], x_test=mnist.x_test[:100])
    cvae = vaelab("train", "--model", "cvae", "--dataset", str(npz), *SUBSET, "--out", str(tmp_path / "c"))
    one_line_error(cvae, "a cvae is conditioned on the labels", "has none")
    assert not (tmp_path / "c" / "config.json").exists()  # nothing written

    run = tmp_path / "vae"
    assert vaelab("train", "--epochs", "1", "--train-subset", "200", "--test-subset", "100", "--out", str(run),
                   "--no-snapshots").returncode == 0  # fmt: skip
    one_line_error(vaelab("generate", str(run), "--label", "7"), "--label picks the class a cvae generates")
    one_line_error(vaelab("train", "--resume", str(run), "--model", "iwae"), "keeps the model")
    one_line_error(vaelab("train", "--resume", str(run), "--k", "5"), "keeps the model")


def test_a_sweep_trains_every_point_as_the_model_it_is_given():
    from vaelab.sweep import grid

    points = grid({"seed": [0, 1]}, {"model": "iwae", "k": 3, "epochs": 1}, "mnist")
    assert [(p.config.model.family, p.config.model.k) for p in points] == [("iwae", 3), ("iwae", 3)]
    assert points[0].name == "mlp-iwae-k3-epochs1"
