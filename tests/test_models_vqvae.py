"""The VQ-VAE (vaelab.models.vqvae): its loss against a direct computation on a tiny batch, the straight-through
gradient, the evaluation's bound under the uniform prior, the exported files, and the model end to end through
the CLI on MNIST."""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.test_models import bernoulli_log_px, images, numpy_of, one_line_error
from vaelab.analysis.evaluate import evaluate
from vaelab.analysis.evaluate_codes import code_counts, usage_perplexity
from vaelab.config import CODE_DIM, DEFAULT_CODES, ModelConfig, RunConfig, make_config
from vaelab.data.dataset import make_dataset, scale_pixels
from vaelab.errors import VaelabError
from vaelab.models import build_models, parameter_count
from vaelab.models.vqvae import COMMITMENT, DEAD, DECAY
from vaelab.report.exercise import build_report, report_presets
from vaelab.run import OPTIONAL_VARIABLES, Run, load_checkpoint, load_run, run_dir_name, save_checkpoint
from vaelab.training.export import stock_models
from vaelab.training.loop import train

K, L = 8, 3  # a codebook of 8 vectors, 3 codes per image
SMALL = {"family": "vqvae", "codes": K, "latent_dim": L, "intermediate_dim": 16}


def nearest(z_e: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The index of each code vector's nearest codebook vector, by brute force over all K: (n, L)."""
    distances = np.array([[[np.sum((z - e) ** 2) for e in codebook] for z in codes] for codes in z_e])
    return distances.argmin(axis=-1)


def codebook_of(models) -> np.ndarray:
    return np.asarray(models.vae.get_layer("codebook").codebook, np.float64)


def test_the_vqvae_loss_is_reconstruction_and_commitment_with_no_kl():
    x = images()
    models = build_models(ModelConfig(**SMALL), seed=1)
    out = models.vae(x)
    loss = float(models.vae.compute_loss(x=x, y_pred=out))
    y = numpy_of(out)
    z_e = y["z_e"].astype(np.float64)
    assert z_e.shape == (4, L, CODE_DIM)
    codes = nearest(z_e, codebook_of(models))
    np.testing.assert_array_equal(y["codes"], codes)
    z_q = codebook_of(models)[codes]
    np.testing.assert_allclose(y["z_q"], z_q, atol=1e-6)
    # The decoder read z_q (the straight-through output's value): the generator's image of the codes.
    np.testing.assert_allclose(y["x_decoded_mean"], models.generator.predict(codes, verbose=0), atol=1e-5)

    reconstruction = -bernoulli_log_px(x, y["x_decoded_mean"])
    squared = np.sum((z_e - z_q) ** 2, axis=(1, 2))  # ||z_e - sg[e]||^2: the codebook learns by EMA, not by a loss
    assert loss == pytest.approx(np.mean(reconstruction + COMMITMENT * squared), rel=1e-5)
    metrics = {m.name: float(m.result()) for m in models.vae.metrics if m.name != "loss"}
    assert set(metrics) == {"reconstruction_loss", "elbo_loss", "commitment_loss", "perplexity"}  # no KL, no weight
    assert metrics["reconstruction_loss"] == pytest.approx(reconstruction.mean(), rel=1e-5)
    assert metrics["commitment_loss"] == pytest.approx(squared.mean(), rel=1e-4)
    assert metrics["elbo_loss"] == pytest.approx(reconstruction.mean() + L * math.log(K), rel=1e-5)
    frequencies = np.bincount(codes.ravel(), minlength=K) / codes.size
    used = frequencies[frequencies > 0]
    assert metrics["perplexity"] == pytest.approx(np.exp(-np.sum(used * np.log(used))), rel=1e-4)
    assert models.vae.get_layer("codebook").trainable_weights == []  # no gradient reaches the codebook


def test_the_first_training_step_starts_every_code_at_one_of_the_encoders_vectors():
    models = build_models(ModelConfig(**SMALL), seed=1)
    layer = models.vae.get_layer("codebook")
    before = codebook_of(models)
    y = numpy_of(models.vae(images(), training=True))
    np.testing.assert_array_equal(y["codes"], nearest(y["z_e"].astype(np.float64), before))  # before the update
    vectors = y["z_e"].reshape(-1, CODE_DIM)
    share = len(vectors) / K  # every code was dead (its usage 0): each restarts at a batch vector with the share
    distances = ((codebook_of(models)[:, None, :] - vectors[None]) ** 2).sum(-1)
    np.testing.assert_allclose(distances.min(axis=1), 0.0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(layer.usage), share, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(layer.sums), codebook_of(models) * share, rtol=1e-5, atol=1e-6)
    after = codebook_of(models)
    models.vae(images(3, seed=5))
    np.testing.assert_array_equal(codebook_of(models), after)  # outside training: no update


def test_a_training_step_moves_live_codes_by_moving_averages_and_restarts_dead_ones():
    """e_k = m_k / N_k after N_k <- γ N_k + (1 - γ) n_k and m_k <- γ m_k + (1 - γ) Σ z over the batch's vectors that
    chose k (van den Oord et al., A.1); a code whose N_k falls under DEAD times the share restarts."""
    models = build_models(ModelConfig(**SMALL), seed=3)
    layer = models.vae.get_layer("codebook")
    x = images(6, seed=1)
    models.vae(x, training=True)  # the codebook now starts at the encoder's vectors
    rng = np.random.default_rng(0)
    share = 6 * L / K
    usage = np.where(np.arange(K) == K - 1, 0.5 * DEAD * share, rng.uniform(1, 2, K))  # the last code about to die
    sums = codebook_of(models) * usage[:, None]
    layer.usage.assign(usage.astype(np.float32))
    layer.sums.assign(sums.astype(np.float32))
    y = numpy_of(models.vae(x, training=True))
    z, codes = y["z_e"].reshape(-1, CODE_DIM).astype(np.float64), y["codes"].ravel()
    chosen = np.eye(K)[codes]
    n = DECAY * usage + (1 - DECAY) * chosen.sum(0)
    m = DECAY * sums + (1 - DECAY) * chosen.T @ z
    live = n >= DEAD * share
    assert not live[K - 1] and live.sum() > K / 2
    np.testing.assert_allclose(np.asarray(layer.usage)[live], n[live], rtol=1e-5)
    np.testing.assert_allclose(codebook_of(models)[live], (m / n[:, None])[live], rtol=1e-4, atol=1e-5)
    dead = ~live
    np.testing.assert_allclose(np.asarray(layer.usage)[dead], share, rtol=1e-6)
    assert all(np.abs(z - e).sum(-1).min() < 1e-5 for e in codebook_of(models)[dead])


def test_a_short_training_on_mnist_uses_many_codes(tmp_path, mnist):
    """Issue 27: with a gradient-trained codebook far from the encoder's outputs, this training used 2 of the 512
    codes (perplexity 2.0); started at the encoder's outputs, moved by moving averages and with dead codes
    restarted, it uses hundreds (305, perplexity 192, when this test was written)."""
    config = make_config("mlp", model="vqvae", epochs=4, train_subset=2000, test_subset=500)
    run = train(config, tmp_path / "vq", data=mnist, snapshots=False, verbose=0)
    counts = code_counts(run.codes(mnist.x_test[:1000]), DEFAULT_CODES)
    assert np.count_nonzero(counts) >= 64 and usage_perplexity(counts) >= 32
    assert run.history[-1]["val_perplexity"] >= 32


def test_a_checkpoint_from_before_the_moving_averages_loads(tmp_path):
    """A vqvae trained before the EMA codebook saved no codebook statistics: it loads, its codebook as saved."""
    run = tiny_run(tmp_path)
    save_checkpoint(tmp_path, run.vae, None, 1)
    with np.load(tmp_path / "checkpoint.npz") as saved:
        arrays = dict(saved)
    paths = [str(p) for p in arrays.pop("model_paths")]
    old = [i for i, path in enumerate(paths) if path not in OPTIONAL_VARIABLES[1:]]
    kept = {k: v for k, v in arrays.items() if not k.startswith("model/")}
    kept.update({f"model/{j:03d}": arrays[f"model/{i:03d}"] for j, i in enumerate(old)})
    np.savez(tmp_path / "checkpoint.npz", model_paths=np.asarray([paths[i] for i in old]), **kept)
    assert len(old) == len(paths) - 3
    other = build_models(run.config.model, seed=7)
    assert load_checkpoint(tmp_path, other.vae) == 1
    np.testing.assert_array_equal(codebook_of(other), codebook_of(run.models))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="takes the gradient with jax.grad")
def test_the_encoder_gets_the_decoders_gradient_at_the_codes():
    """Straight through: d(-log p(x|z_q))/d z_e is the decoder's gradient at z_q, whatever z_e is, and z_q gets none
    of it (the codebook learns by moving averages)."""
    import jax
    import jax.numpy as jnp

    x = images(2)
    models = build_models(ModelConfig(**SMALL), seed=4)
    vae = models.vae
    decode = keras.Model(vae.get_layer("z").input, vae.output["x_decoded_mean"])  # [z_e, z_q] -> pixel means

    def reconstruction(z_e, z_q):
        return -jnp.sum(jnp.asarray(bernoulli_log_px_jax(x, decode([z_e, z_q]))))

    y = numpy_of(vae(x))
    z_e, z_q = jnp.asarray(y["z_e"]), jnp.asarray(y["z_q"])
    through_encoder, to_codebook = jax.grad(reconstruction, argnums=(0, 1))(z_e, z_q)
    at_the_codes = jax.grad(reconstruction)(z_q, z_q)  # the decoder's gradient at z_q: there z_e = z_q
    np.testing.assert_allclose(through_encoder, at_the_codes, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(through_encoder)).max() > 0
    np.testing.assert_array_equal(to_codebook, 0.0)


def bernoulli_log_px_jax(x, mean):
    p = keras.ops.clip(keras.ops.reshape(mean, (len(x), -1)), 1e-7, 1 - 1e-7)
    x = x.reshape(len(x), -1)
    return keras.ops.sum(x * keras.ops.log(p) + (1 - x) * keras.ops.log1p(-p), axis=1)


def tiny_run(tmp_path: Path, seed: int = 2) -> Run:
    """An untrained vqvae run on 28x28 images: its networks as built, enough for evaluating and exporting."""
    config = RunConfig(model=ModelConfig(**SMALL, image_shape=(28, 28, 1), likelihood="bernoulli"))
    models = build_models(config.model, seed=seed)
    return Run(path=tmp_path, config=config, info={}, models=models, epoch=1)


def test_the_evaluation_is_the_bound_under_the_uniform_prior_over_codes(tmp_path):
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    data = make_dataset({"x_train": pictures, "x_test": pictures}, name="t", source="t")
    run = tiny_run(tmp_path)
    result = evaluate(run, data, samples=7)

    x = scale_pixels(pictures)
    codes = nearest(np.asarray(run.vae.predict(x, verbose=0)["z_e"], np.float64), codebook_of(run.models))
    log_px = bernoulli_log_px(x, run.generator.predict(codes, verbose=0))
    bound = log_px.mean() - L * math.log(K)
    assert result.bound == "log p(x), uniform prior over codes"
    assert result.elbo == pytest.approx(bound, rel=1e-5)
    assert result.iwae == result.elbo and result.nll == -result.elbo and result.samples == 1  # q is a point mass
    assert result.kl_loss == pytest.approx(L * math.log(K))
    assert result.codes_used == len(np.unique(codes))
    np.testing.assert_array_equal(run.codes(pictures), codes)


def test_the_exported_files_hold_stock_layers_that_give_the_same_codes_and_images(tmp_path):
    run = tiny_run(tmp_path / "run")
    stock = stock_models(run)
    x = images(6, seed=3)
    codes = run.encoder.predict(x, verbose=0)
    np.testing.assert_array_equal(stock.encoder.predict(x, verbose=0), codes)
    np.testing.assert_allclose(
        stock.generator.predict(codes, verbose=0), run.generator.predict(codes, verbose=0), atol=1e-6
    )
    names = {type(layer).__module__.split(".")[0] for m in (stock.encoder, stock.generator) for layer in m.layers}
    assert names == {"keras"}


@pytest.mark.parametrize("arch", ["mlp", "convnet"])  # (the exercise's conv takes 15 s to build on a busy CPU)
def test_the_weights_foreseen_are_the_weights_built(arch):
    config = ModelConfig(arch=arch, family="vqvae", codes=32, intermediate_dim=16, implementation="keras")
    assert parameter_count(build_models(config, seed=0).vae) == config.parameters()


def test_the_vqvae_settings_are_checked_in_one_line():
    cases = [
        (dict(model="vae", codes=16), "--codes is the vqvae's codebook size; leave it out with --model vae"),
        (dict(model="vqvae", codes=1), "must be an integer >= 2"),
        (dict(model="vqvae", beta=2), "--beta and --kl-warmup weight the ELBO's KL term"),
        (dict(model="vqvae", kl_warmup=3), "leave them out with --model vqvae"),
        (dict(preset="mlp-fixed-var", model="vqvae"), "no variance to fix"),
    ]
    for kwargs, message in cases:
        with pytest.raises(VaelabError, match=message) as err:
            make_config(**kwargs)
        assert "\n" not in str(err.value)
    config = make_config("mlp", model="vqvae")
    assert config.model.codebook_size == DEFAULT_CODES and run_dir_name(config) == "mlp-vqvae"
    assert run_dir_name(make_config("mlp", model="vqvae", codes=64)) == "mlp-vqvae-codes64"
    again = RunConfig.from_dict(json.loads(json.dumps(make_config("mlp", model="vqvae", codes=64).to_dict())))
    assert again.model.codes == 64


def test_the_report_trains_a_vqvae_on_the_networks_without_a_fixed_variance():
    assert report_presets((28, 28, 1), "vqvae") == ("mlp", "conv")
    assert report_presets((32, 32, 3), "vqvae") == ("mlp", "convnet")
    assert report_presets((28, 28, 1)) == ("mlp", "mlp-fixed-var", "conv")


def test_a_sweep_point_is_a_vqvae_with_its_codebook_size():
    from vaelab.sweep import grid

    (point,) = grid({"seed": [0]}, {"model": "vqvae", "codes": 16, "epochs": 1}, "mnist")
    assert (point.config.model.family, point.config.model.codebook_size) == ("vqvae", 16)
    assert point.name == "mlp-vqvae-codes16-epochs1"


# --- end to end through the CLI -------------------------------------------------------------------------

TINY = ["--model", "vqvae", "--codes", "16", "--latent-dim", "4", "--hidden", "32", "--epochs", "1",
        "--train-subset", "300", "--test-subset", "100"]  # fmt: skip


@pytest.mark.slow
def test_the_vqvae_trains_evaluates_reports_generates_exports_and_resumes(tmp_path, mnist, vaelab):
    run = tmp_path / "vq"
    trained = vaelab("train", *TINY, "--out", run)
    assert trained.returncode == 0, trained.stderr
    history = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"commitment_loss", "perplexity", "val_perplexity", "elbo_loss"} <= set(history)
    assert not {"kl_loss", "kl_weight", "val_kl_loss", "codebook_loss"} & set(history)  # none it does not have
    assert "kl_" not in trained.stdout + trained.stderr  # nor in the progress bar
    assert "(a squared distance); -ELBO (log p(x), uniform prior over codes)" in trained.stdout
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["bound"] == "log p(x), uniform prior over codes" and "kl_loss" not in test
    assert test["elbo_loss"] == pytest.approx(test["reconstruction_loss"] + 4 * math.log(16), rel=1e-5)

    evaluated = vaelab("evaluate", run, "--images", "100")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "log p(x), uniform prior over codes >= ELBO = IWAE bound" in evaluated.stdout
    evaluation = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert evaluation["iwae"] == evaluation["elbo"] < 0 and 1 <= evaluation["codes_used"] <= 16
    assert "active_units" not in evaluation
    assert_report_section(load_run(run), mnist, tmp_path / "report")

    generated = vaelab("generate", run, "--samples", "3", "--z", "0", "1", "2", "3", "--out", tmp_path / "g")
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "g" / "samples.png").exists() and (tmp_path / "g" / "generated.png").exists()

    encoder = keras.saving.load_model(run / "encoder.keras")  # written by training, stock Keras only
    generator = keras.saving.load_model(run / "generator.keras")
    codes = encoder.predict(images(2), verbose=0)
    assert codes.shape == (2, 4) and codes.min() >= 0 and codes.max() < 16
    assert generator.predict(codes, verbose=0).shape == (2, 28, 28, 1)

    resumed = vaelab("train", "--resume", run, "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2

    prior = vaelab("train-prior", run, "--epochs", "2")  # issue 29: a learned prior over the codes
    assert prior.returncode == 0, prior.stderr
    assert "(uniform prior: L log K = 11.09)" in prior.stdout and (run / "code_prior.npz").exists()
    evaluated = vaelab("evaluate", run, "--images", "100")
    assert "with the learned prior" in evaluated.stdout, evaluated.stdout
    evaluation = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert evaluation["prior_elbo"] == pytest.approx(-evaluation["reconstruction_loss"] - evaluation["prior_kl"])
    assert vaelab("generate", run, "--samples", "3", "--out", tmp_path / "g2").returncode == 0

    one_line_error(vaelab("generate", run, "--z", "0", "1", "2", "16"), "integers from 0 to 15")
    one_line_error(vaelab("generate", run, "--z", "0", "1", "2", "3", "--z", "1"), "is 4 codebook indices")
    one_line_error(vaelab("generate", run, "--manifold"), "no Gaussian grid")
    for command in ("encode", "interpolate"):
        one_line_error(vaelab(command, run, "--out", tmp_path / "e"), "a vqvae's codes are codebook indices")
    assert not (tmp_path / "e").exists()
    explored = vaelab("explore", run, "--export", tmp_path / "page")  # a code grid (test_explore_family.py)
    assert explored.returncode == 0, explored.stderr
    assert "no drawing pad" not in explored.stdout  # a vqvae's page needs no encoder
    assert '"kind":"codes"' in (tmp_path / "page" / "index.html").read_text()
    one_line_error(vaelab("train", "--resume", run, "--model", "vae"), "keeps the model")
    one_line_error(vaelab("train", "--resume", run, "--codes", "8"), "keeps the model")
    one_line_error(vaelab("train", "--model", "vae", "--codes", "8", "--out", tmp_path / "a"), "--codes")
    one_line_error(vaelab("train", *TINY, "--kl-warmup", "2", "--out", tmp_path / "b"), "--kl-warmup")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def assert_report_section(run: Run, mnist, out: Path) -> None:
    """The vqvae's section of the report shows its reconstructions, code table, uniform prior draws, bound and
    codebook use, and none of the Gaussian parts."""
    build_report([run], mnist, out)
    md = (out / "report.md").read_text()
    figures = out / "figures" / run.name
    for name in ("reconstruction", "code_table", "samples", "code_usage"):
        assert f"(figures/{run.name}/{name}.png)" in md and (figures / f"{name}.png").exists()
    first = (figures / "code_table.csv").read_text().splitlines()[1].split(",")  # the first test image of digit 0
    assert first[:3] == ["0", "0", "3"] and all(0 <= int(c) < 16 for c in first[3:]) and len(first) == 3 + 4
    assert "| digit | test index | code[0] | code[1] | code[2] | code[3] |" in md
    assert "log p(x), uniform prior over codes ≥ ELBO = IWAE bound" in md and "of the 16 codebook vectors" in md
    assert "| codes used |" in md and "## Comparison of the networks" in md
    assert "as a vqvae; trained 1 epoch (" in md and "| test objective | reconstruction | commitment |" in md
    for gaussian in ("latent_map", "manifold", "interpolation", "latent_kl", "class_table", "live latent map"):
        assert gaussian not in md and not (figures / f"{gaussian}.png").exists()
    assert '<div class="live"' not in (out / "index.html").read_text()
