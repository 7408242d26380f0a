"""The networks: shapes of every preset, the ConvNet layer by layer, shared layers, the loss."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from vaelab.config import PRESETS, ModelConfig
from vaelab.model import build_models, kl_loss, reconstruction_loss


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
    assert models.vae.count_params() == (784 * 256 + 256) + 2 * (256 * 2 + 2) + (2 * 256 + 256) + (256 * 784 + 784)


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
    from vaelab.model import Sampling

    sampling = Sampling(epsilon_std=1.0, seed=3)
    z_mean = np.full((20000, 2), [1.0, -2.0], np.float32)
    z_log_var = np.full((20000, 2), np.log([0.25, 4.0]), np.float32)
    z = keras.ops.convert_to_numpy(sampling([z_mean, z_log_var]))
    np.testing.assert_allclose(z.mean(axis=0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), [0.5, 2.0], rtol=0.03)
