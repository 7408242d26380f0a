"""The networks: shapes of every preset, the ConvNet layer by layer, shared layers, the loss."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from vaelab.config import PRESETS, ModelConfig
from vaelab.models import (
    Binarize,
    FixedLogVariance,
    Sampling,
    bernoulli_log_likelihood,
    build_models,
    kl_loss,
    parameter_count,
    reconstruction_loss,
)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_maps_images_to_codes_and_back(preset):
    models = build_models(PRESETS[preset], seed=0)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    z_mean, z_log_var = models.encoder.predict(x, verbose=0)
    assert z_mean.shape == z_log_var.shape == (3, 2)
    decoded = models.generator.predict(np.array([[0.5, 0.2]], np.float32), verbose=0)  # the exercise's z_sample
    assert decoded.shape == (1, 28, 28, 1)
    assert decoded.min() >= 0.0 and decoded.max() <= 1.0
    out = models.vae.predict(x, verbose=0)
    assert set(out) == {"x_decoded_mean", "z_mean", "z_log_var"}
    assert out["x_decoded_mean"].shape == (3, 28, 28, 1)


def test_latent_dim_sets_the_code_size():
    models = build_models(ModelConfig(latent_dim=5))
    assert models.encoder.outputs[0].shape == (None, 5)
    assert models.generator.inputs[0].shape == (None, 5)


def test_conv_preset_has_the_exercises_shapes_layer_by_layer():
    models = build_models(dataclasses.replace(PRESETS["conv"], implementation="keras"))
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in models.encoder.layers}
    assert shapes == {
        "x": (28, 28, 1),
        "encoder_conv1": (28, 28, 16),
        "encoder_pool1": (14, 14, 16),
        "encoder_conv2": (14, 14, 8),
        "encoder_pool2": (7, 7, 8),
        "flatten": (392,),
        "encoder_h": (16,),
        "z_mean": (2,),
        "z_log_var": (2,),
    }
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in models.generator.layers}
    assert shapes == {
        "decoder_input": (2,),
        "decoder_h": (16,),
        "decoder_upsample": (512,),
        "decoder_reshape": (8, 8, 8),
        "decoder_conv1": (8, 8, 8),
        "decoder_up1": (16, 16, 8),
        "decoder_conv2": (14, 14, 16),  # valid padding
        "decoder_up2": (28, 28, 16),
        "decoder_mean": (28, 28, 1),
    }
    kinds = {layer.name: (type(layer).__name__, getattr(layer, "kernel_size", None)) for layer in models.vae.layers}
    assert kinds["encoder_conv1"] == ("Conv2D", (3, 3)) and kinds["decoder_mean"] == ("Conv2D", (3, 3))
    assert models.generator.get_layer("decoder_mean").activation.__name__ == "sigmoid"


def test_fused_conv_preset_has_the_same_variables_and_shapes():
    fused = build_models(PRESETS["conv"])
    stock = build_models(dataclasses.replace(PRESETS["conv"], implementation="keras"))
    assert [(v.path, v.shape) for v in fused.vae.variables] == [(v.path, v.shape) for v in stock.vae.variables]
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in fused.encoder.layers}
    assert shapes["encoder_conv1"] == (14, 14, 16)  # conv 28x28x16 and its 2x2 pooling, in one layer
    assert shapes["encoder_conv2"] == (7, 7, 8) and "encoder_pool2" not in shapes  # the same for the second pair
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in fused.generator.layers}
    assert shapes["decoder_conv2"] == (14, 14, 16) and shapes["decoder_mean"] == (28, 28, 1)


def test_mlp_preset_is_the_course_script():
    models = build_models(PRESETS["mlp"])
    assert models.encoder.get_layer("encoder_h").units == 256
    assert models.generator.get_layer("decoder_h").units == 256
    assert models.generator.get_layer("decoder_mean").units == 784
    assert parameter_count(models.vae) == (784 * 256 + 256) + 2 * (256 * 2 + 2) + (2 * 256 + 256) + (256 * 784 + 784)


def test_the_dense_network_takes_hidden_widths_and_an_activation():
    """Burda et al.'s network: two tanh layers of 200 units each side; the decoder mirrors the encoder."""
    models = build_models(ModelConfig(latent_dim=50, hidden=(200, 100), activation="tanh"))
    encoder = [(layer.name, layer.units) for layer in models.encoder.layers if hasattr(layer, "units")]
    decoder = [(layer.name, layer.units) for layer in models.generator.layers if hasattr(layer, "units")]
    assert encoder == [("encoder_h", 200), ("encoder_h2", 100), ("z_mean", 50), ("z_log_var", 50)]
    assert decoder == [("decoder_h", 100), ("decoder_h2", 200), ("decoder_mean", 784)]
    assert models.encoder.get_layer("encoder_h2").activation.__name__ == "tanh"
    default = build_models(PRESETS["mlp"], seed=0)
    explicit = build_models(dataclasses.replace(PRESETS["mlp"], hidden=(256,)), seed=0)  # the same network
    for a, b in zip(default.vae.variables, explicit.vae.variables, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_generator_reuses_the_vaes_decoder_layers():
    models = build_models(PRESETS["mlp"])
    for name in ("decoder_h", "decoder_mean"):
        assert models.generator.get_layer(name) is models.vae.get_layer(name)
    assert models.encoder.get_layer("z_mean") is models.vae.get_layer("z_mean")


@pytest.mark.parametrize("preset", ["mlp-fixed-var", "conv-fixed-var"])
def test_fixed_variance_learns_only_the_mean(preset):
    models = build_models(PRESETS[preset])
    assert not any("z_log_var" in w.path for w in models.vae.trainable_weights)
    _, z_log_var = models.encoder.predict(np.ones((2, 28, 28, 1), np.float32), verbose=0)
    np.testing.assert_array_equal(z_log_var, 0.0)


def test_loss_parts_match_their_definitions():
    rng = np.random.default_rng(0)
    x = rng.random((4, 28, 28, 1)).astype(np.float32)
    p = rng.uniform(0.01, 0.99, (4, 28, 28, 1)).astype(np.float32)
    expected = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reconstruction_loss(x, p)), expected, rtol=1e-4)
    mu, lv = rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)
    expected_kl = (-0.5 * (1 + lv - mu**2 - np.exp(lv))).sum(axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kl_loss(mu, lv)), expected_kl, rtol=1e-5)
    # Part (f): with z_log_var = 0 the KL term is 1/2 * sum(z_mean^2).
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(kl_loss(mu, np.zeros_like(mu))), 0.5 * (mu**2).sum(1), rtol=1e-6
    )


def test_sampling_draws_z_from_the_encoders_distribution():
    from vaelab.models import Sampling

    sampling = Sampling(epsilon_std=1.0, seed=3)
    z_mean = np.full((20000, 2), [1.0, -2.0], np.float32)
    z_log_var = np.full((20000, 2), np.log([0.25, 4.0]), np.float32)
    z = keras.ops.convert_to_numpy(sampling([z_mean, z_log_var]))
    np.testing.assert_allclose(z.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), [0.5, 2.0], rtol=0.03)


def test_bernoulli_log_likelihood_sums_each_image_over_all_its_axes():
    rng = np.random.default_rng(4)
    x = (rng.random((3, 784)) < 0.4).astype(np.float32)
    p = rng.uniform(0.05, 0.95, (3, 784)).astype(np.float32)
    expected = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=1)
    flat = keras.ops.convert_to_numpy(bernoulli_log_likelihood(x, p))
    image = keras.ops.convert_to_numpy(bernoulli_log_likelihood(x.reshape(3, 28, 28, 1), p.reshape(3, 28, 28, 1)))
    assert flat.shape == image.shape == (3,)
    np.testing.assert_allclose(flat, expected, rtol=1e-5)
    np.testing.assert_allclose(image, expected, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reconstruction_loss(x, p)), -expected, rtol=1e-5)


def test_sampling_scales_the_noise_by_sigma_and_epsilon_std():
    n = 40000
    z_mean = np.full((n, 2), [0.5, -1.0], np.float32)
    z_log_var = np.full((n, 2), np.log([0.25, 9.0]), np.float32)
    for layer, epsilon_std in ((Sampling(seed=1), 1.0), (Sampling(epsilon_std=0.1, seed=2), 0.1)):
        z = keras.ops.convert_to_numpy(layer([z_mean, z_log_var]))
        sigma = epsilon_std * np.array([0.5, 3.0])
        assert (np.abs(z.mean(axis=0) - [0.5, -1.0]) < 5 * sigma / np.sqrt(n)).all()
        np.testing.assert_allclose(z.std(axis=0), sigma, rtol=0.02)
        assert abs(np.corrcoef(z.T)[0, 1]) < 0.03  # independent dimensions


def test_sampling_is_seeded_and_round_trips_its_config():
    z_mean, z_log_var = np.zeros((5, 3), np.float32), np.zeros((5, 3), np.float32)
    a = keras.ops.convert_to_numpy(Sampling(seed=11)([z_mean, z_log_var]))
    b = keras.ops.convert_to_numpy(Sampling(seed=11)([z_mean, z_log_var]))
    np.testing.assert_array_equal(a, b)
    again = Sampling.from_config(Sampling(epsilon_std=0.3, seed=11, name="z").get_config())
    assert (again.epsilon_std, again.seed, again.name) == (0.3, 11, "z")


def test_binarize_draws_each_pixel_with_its_grey_level_during_training_only():
    grey = np.tile(np.linspace(0.0, 1.0, 11, dtype=np.float32), (20000, 1))  # 0, 0.1, ..., 1 in every row
    layer = Binarize(seed=5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(grey)), grey)  # inference: unchanged
    drawn = keras.ops.convert_to_numpy(layer(grey, training=True))
    assert drawn.dtype == np.float32 and set(np.unique(drawn)) == {0.0, 1.0}
    rate = drawn.mean(axis=0)
    np.testing.assert_allclose(rate, grey[0], atol=4 * 0.5 / np.sqrt(len(grey)))
    assert rate[0] == 0.0 and rate[-1] == 1.0  # black stays black, white stays white
    same = keras.ops.convert_to_numpy(Binarize(seed=5)(grey, training=True))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Binarize(seed=5)(grey, training=True)), same)
    half = keras.ops.convert_to_numpy(Binarize(seed=5, dtype="float16")(grey, training=True))
    assert half.dtype == np.float16  # in the layer's compute dtype (mixed precision computes in float16)
    again = Binarize.from_config(Binarize(seed=5, name="binarize").get_config())
    assert (again.seed, again.name) == (5, "binarize")


def test_the_variables_checkpoints_record_keep_their_paths():
    """checkpoint.npz stores the VAE's variables by path and refuses a mismatch: a renamed variable
    (the sampling noise's seed state included) would make every saved run unloadable."""
    for _ in range(2):  # names are fixed, not numbered by how many networks the process built
        models = build_models(ModelConfig(intermediate_dim=8), seed=0, binarize=True)
        assert models.vae.name == "vae"
        assert [v.path for v in models.vae.variables] == [
            "kl_weight",  # the KL term's weight, set every epoch (training.schedule); runs saved before it still load
            "binarize_seed/seed_generator_state",
            "encoder_h/kernel",
            "encoder_h/bias",
            "z_mean/kernel",
            "z_mean/bias",
            "z_log_var/kernel",
            "z_log_var/bias",
            "z_seed/seed_generator_state",
            "decoder_h/kernel",
            "decoder_h/bias",
            "decoder_mean/kernel",
            "decoder_mean/bias",
        ]


def test_fixed_log_variance_is_zero_with_the_codes_shape():
    z_mean = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(FixedLogVariance()(z_mean)), np.zeros((4, 3)))


def test_compute_loss_is_the_mean_negative_elbo_scored_against_the_binarised_input():
    models = build_models(ModelConfig(intermediate_dim=8), seed=0)
    vae = models.vae
    rng = np.random.default_rng(6)
    x = rng.random((4, 28, 28, 1)).astype(np.float32)
    binary = (x > 0.5).astype(np.float32)
    p = rng.uniform(0.05, 0.95, (4, 28, 28, 1)).astype(np.float32)
    mu, lv = rng.normal(size=(4, 2)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)
    y_pred = {"x_decoded_mean": p, "z_mean": mu, "z_log_var": lv}
    recon = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(4, -1).sum(axis=1)
    kl = (-0.5 * (1 + lv - mu**2 - np.exp(lv))).sum(axis=1)
    loss = keras.ops.convert_to_numpy(vae.compute_loss(x=x, y_pred=y_pred))
    assert float(loss) == pytest.approx(float(np.mean(recon + kl)), rel=1e-5)
    assert float(vae.reconstruction_loss_tracker.result()) == pytest.approx(float(recon.mean()), rel=1e-5)
    assert float(vae.kl_loss_tracker.result()) == pytest.approx(float(kl.mean()), rel=1e-5)
    with_binary = keras.ops.convert_to_numpy(vae.compute_loss(x=x, y_pred={**y_pred, "x": binary}))
    recon_binary = -(binary * np.log(p) + (1 - binary) * np.log(1 - p)).reshape(4, -1).sum(axis=1)
    assert float(with_binary) == pytest.approx(float(np.mean(recon_binary + kl)), rel=1e-5)
    assert {"reconstruction_loss", "kl_loss"} <= {m.name for m in vae.metrics}


def test_the_kl_weight_scales_the_objective_and_nothing_else():
    """beta and warm-up (vaelab.training.schedule): the loss minimised is reconstruction + w * KL, while the logged
    `elbo_loss` stays reconstruction + KL, the negative ELBO. w starts at 1 and is a setting, never trained."""
    vae = build_models(ModelConfig(intermediate_dim=8), seed=0).vae
    assert float(vae.kl_weight.numpy()) == 1.0
    assert not vae.kl_weight.trainable and all(v is not vae.kl_weight for v in vae.trainable_variables)
    rng = np.random.default_rng(8)
    x = rng.random((3, 28, 28, 1)).astype(np.float32)
    p = rng.uniform(0.05, 0.95, (3, 28, 28, 1)).astype(np.float32)
    mu, lv = rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(3, 2)).astype(np.float32)
    recon = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(3, -1).sum(axis=1)
    kl = (-0.5 * (1 + lv - mu**2 - np.exp(lv))).sum(axis=1)
    vae.kl_weight.assign(0.25)
    loss = vae.compute_loss(x=x, y_pred={"x_decoded_mean": p, "z_mean": mu, "z_log_var": lv})
    assert float(loss) == pytest.approx(float(np.mean(recon + 0.25 * kl)), rel=1e-5)
    logged = {m.name: float(m.result()) for m in vae.metrics if m.name != "loss"}
    expected = {"reconstruction_loss": recon.mean(), "kl_loss": kl.mean(), "elbo_loss": (recon + kl).mean()}
    assert logged == pytest.approx({**expected, "kl_weight": 0.25}, rel=1e-5)
