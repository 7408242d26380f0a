"""Networks for any image shape: the convnet built from the shape, the dense network for any size, the exercise's
ConvNet kept to 28x28 grey, and the configuration's one-line refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vaelab.config import PRESETS, ModelConfig, RunConfig, default_likelihood, make_config
from vaelab.data.dataset import make_dataset
from vaelab.errors import VaelabError
from vaelab.models import build_models, parameter_count


@pytest.mark.parametrize(
    ("preset", "shape"),
    [
        ("convnet", (32, 32, 3)),
        ("convnet", (45, 37, 3)),
        ("convnet", (28, 28, 1)),
        ("convnet", (64, 64, 3)),
        ("mlp", (32, 32, 3)),
        ("mlp-fixed-var", (20, 30, 1)),
    ],
)
def test_every_network_maps_images_of_its_shape_to_codes_and_back(preset, shape):
    config = PRESETS[preset].for_data(shape)
    models = build_models(config, seed=0)
    x = np.random.default_rng(0).uniform(size=(3, *shape)).astype(np.float32)
    z_mean, z_log_var = models.encoder.predict(x, verbose=0)
    assert z_mean.shape == z_log_var.shape == (3, config.latent_dim)
    decoded = models.generator.predict(z_mean, verbose=0)
    if config.output_activation == "sigmoid":  # the mean of each pixel
        assert decoded.shape == (3, *shape) and ((decoded > 0) & (decoded < 1)).all()
    else:  # colour: logistic-black's locations, anywhere on the line, then the logit of pi, the chance of not black
        assert config.likelihood == "logistic-black" and decoded.shape == (3, *shape[:2], shape[2] + 1)
        assert np.isfinite(decoded).all()
    assert parameter_count(models.vae) == config.parameters()  # the size refused before building is the real one


def test_the_convnet_halves_the_image_per_block_and_crops_what_the_decoder_grows_beyond_it():
    models = build_models(PRESETS["convnet"].for_data((45, 37, 3)), seed=0)
    encoder_maps = [models.encoder.get_layer(f"encoder_conv{k}").output.shape[1:3] for k in (1, 2, 3)]
    assert encoder_maps == [(23, 19), (12, 10), (6, 5)]
    assert models.generator.get_layer("decoder_conv3").output.shape[1:] == (48, 40, 16)
    assert models.generator.get_layer("decoder_crop").output.shape[1:] == (45, 37, 16)
    square = build_models(PRESETS["convnet"].for_data((32, 32, 3)), seed=0)
    assert "decoder_crop" not in [layer.name for layer in square.generator.layers]  # nothing to crop


def test_filters_set_the_convnets_blocks():
    config = make_config("convnet", filters=[8, 16]).model.for_data((16, 16, 3))
    models = build_models(config, seed=0)
    assert [models.encoder.get_layer(f"encoder_conv{k}").filters for k in (1, 2)] == [8, 16]
    assert models.encoder.get_layer("flatten").output.shape[-1] == 4 * 4 * 16


def test_the_likelihood_defaults_to_bernoulli_for_grey_and_black_with_its_own_mass_for_colour():
    assert default_likelihood((28, 28, 1)) == "bernoulli"
    assert default_likelihood((32, 32, 3)) == "logistic-black"
    assert PRESETS["mlp"].pixel_likelihood == "bernoulli"  # no data yet: the exercise's MNIST
    assert PRESETS["mlp"].for_data((32, 32, 3)).likelihood == "logistic-black"
    assert PRESETS["mlp"].for_data((32, 32, 3)).output_shape == (32, 32, 4)  # pi's logit, one channel more
    assert make_config("mlp", likelihood="gaussian").model.for_data((32, 32, 3)).likelihood == "gaussian"


def test_the_logistics_location_is_a_linear_output_and_older_runs_keep_their_sigmoid():
    assert PRESETS["convnet"].for_data((32, 32, 3)).decoder_activation == "linear"
    assert make_config("convnet", likelihood="logistic").model.for_data((32, 32, 3)).decoder_activation == "linear"
    assert make_config("convnet", likelihood="gaussian").model.for_data((32, 32, 3)).decoder_activation == "sigmoid"
    sigmoid = dataclasses.replace(PRESETS["mlp"], likelihood="logistic", decoder_activation="sigmoid")
    assert sigmoid.for_data((32, 32, 3)).output_activation == "sigmoid"  # chosen: kept
    old = make_config("convnet", dataset="shapes").to_dict()
    del old["model"]["decoder_activation"]  # a run saved before the setting existed
    assert RunConfig.from_dict(old).model.for_data((32, 32, 3)).output_activation == "sigmoid"


def test_the_exercise_presets_are_unchanged_on_mnist():
    for preset in ("mlp", "mlp-fixed-var", "conv", "conv-fixed-var"):
        resolved = PRESETS[preset].for_data((28, 28, 1))
        assert resolved.output_activation == "sigmoid"
        unresolved = dataclasses.replace(resolved, image_shape=None, likelihood=None, decoder_activation=None)
        assert unresolved == PRESETS[preset]
        assert resolved.parameters() == PRESETS[preset].parameters()


def test_a_run_config_resolves_for_its_data():
    data = make_dataset(
        {"x_train": np.zeros((2, 8, 6, 3), np.uint8), "x_test": np.zeros((2, 8, 6, 3), np.uint8)},
        name="tiny",
        source="made in the test",
    )
    config = make_config("mlp", dataset="tiny").for_data(data)
    assert (config.model.image_shape, config.model.likelihood) == ((8, 6, 3), "logistic-black")
    assert config.for_data(data) == config  # resolving twice changes nothing


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PRESETS["conv"].for_data((32, 32, 3)), "use --preset convnet"),
        (lambda: make_config("convnet", filters=[8, 8, 8, 8, 8]).model.for_data((16, 16, 3)), "give fewer --filters"),
        (lambda: make_config("mlp", filters=[8]), "choose --preset convnet"),
        (lambda: make_config("convnet", hidden=[10]), "not the ConvNets"),
        (lambda: make_config("mlp", likelihood="poisson"), "unknown likelihood 'poisson'"),
        (lambda: make_config("mlp", scale="local"), "unknown scale 'local'"),
        (
            lambda: make_config("mlp", likelihood="logistic", binarize=True),
            "with --binarize use --likelihood bernoulli",
        ),
        (lambda: ModelConfig(image_shape=(28, 28, 1)).for_data((32, 32, 3)), "made for 28x28x1 images, but the data"),
        (
            lambda: ModelConfig(likelihood="bernoulli", decoder_activation="linear").validate(),
            "the bernoulli likelihood needs a mean in (0, 1)",
        ),
        (lambda: ModelConfig(decoder_activation="tanh").validate(), "unknown decoder activation 'tanh'"),
        (lambda: ModelConfig(image_shape=(28, 0, 1)).validate(), "image_shape must be (height, width, channels)"),
    ],
)
def test_settings_that_do_not_fit_the_images_are_one_line_errors(make, message):
    with pytest.raises(VaelabError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        make()
    assert "\n" not in str(err.value)


def test_a_run_saved_with_the_plain_logistic_loads_and_decodes_as_it_was_trained(tmp_path):
    """Colour's default was `logistic` until `logistic-black`: a run's config.json names its likelihood, so such a run
    keeps its C-channel decoder and its image (the location clipped), whatever the default is now."""
    from tests.conftest import shapes_dataset
    from vaelab.analysis.evaluate import evaluate
    from vaelab.models.likelihoods import image
    from vaelab.run import load_run
    from vaelab.training.loop import train

    data = shapes_dataset("shapes", n_train=100, n_test=20)
    config = make_config("mlp", dataset="shapes", epochs=1, likelihood="logistic", hidden=[32])
    train(config, tmp_path / "run", data=data, snapshots=False, verbose=0, log=lambda message: None)
    run = load_run(tmp_path / "run")
    assert run.config.model.pixel_likelihood == "logistic" and run.generator.output_shape == (None, 32, 32, 3)
    z = np.array([[0.5, -1.0], [2.0, 0.3]], np.float32)
    np.testing.assert_allclose(run.decode(z), image("logistic", run.generator.predict(z, verbose=0)), atol=1e-6)
    result = evaluate(run, data, samples=2)
    assert result.likelihood == "logistic" and np.isfinite(result.bits_per_dim)
