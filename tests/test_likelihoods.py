"""The pixel likelihoods against their definitions (scipy), their normalisation, bits per dimension, and the
evaluation's bounds computed with each likelihood on a network whose log p(x) is known in closed form."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from scipy import integrate, stats

from vaelab.analysis.evaluate import evaluate
from vaelab.config import LIKELIHOODS, ModelConfig, RunConfig, TrainConfig
from vaelab.data.dataset import make_dataset, scale_pixels
from vaelab.models import build_models, likelihoods
from vaelab.models.likelihoods import bits_per_dim, likelihood_note, log_likelihood
from vaelab.run import Run

LEVELS = np.arange(256) / 255.0


def per_pixel(name: str, x, mean, log_scale=None) -> np.ndarray:
    """The likelihood of single pixels: each value its own one-pixel image (mean and log_scale: one number, or one
    per pixel)."""
    x = np.asarray(x, np.float32).reshape(-1, 1)
    mean = np.broadcast_to(np.asarray(mean, np.float32).reshape(-1, 1), x.shape)
    scale = None if log_scale is None else np.broadcast_to(np.asarray(log_scale, np.float32).reshape(-1, 1), x.shape)
    return keras.ops.convert_to_numpy(log_likelihood(name, x, mean, scale)).astype(np.float64)


# The decoder's linear output puts the location anywhere on the line (a black pixel's below 0, a white one's above 1).
@pytest.mark.parametrize("mean", [-2.0, -0.4, 0.0, 0.02, 0.3, 0.5, 0.93, 1.0, 1.3])
@pytest.mark.parametrize("log_scale", [-5.0, -3.0, -1.0, 0.5])
def test_the_discretised_logistic_is_a_distribution_over_the_256_levels(mean, log_scale):
    p = np.exp(per_pixel("logistic", LEVELS, mean, log_scale))
    assert p.sum() == pytest.approx(1.0, abs=1e-4)
    # Each inner level's probability is the logistic's mass over its bin of width 1/255.
    s = math.exp(log_scale)
    for k in (1, 77, 128, 254):
        mass = stats.logistic.cdf(LEVELS[k] + 0.5 / 255, mean, s) - stats.logistic.cdf(LEVELS[k] - 0.5 / 255, mean, s)
        assert p[k] == pytest.approx(mass, rel=2e-3, abs=1e-9)
    # The end levels take the tails.
    assert p[0] == pytest.approx(stats.logistic.cdf(0.5 / 255, mean, s), rel=2e-3)
    assert p[255] == pytest.approx(stats.logistic.sf(1 - 0.5 / 255, mean, s), rel=2e-3)


@pytest.mark.parametrize(
    ("location", "log_scale", "logit"), [((0.3, -0.2), -2.0, 0.5), ((1.2, 0.01), -4.0, -3.0), ((-1.0, 0.5), 0.0, 4.0)]
)
def test_black_with_its_own_mass_is_a_distribution_over_the_256_levels_of_every_channel(location, log_scale, logit):
    """logistic-black on 2-channel pixels: its probabilities of all 256^2 pixel values sum to 1; a black pixel's is
    1 - pi plus pi times the logistics' own mass at level 0, any other pixel's pi times theirs."""
    x = np.stack(np.meshgrid(LEVELS, LEVELS, indexing="ij"), axis=-1).reshape(-1, 1, 2).astype(np.float32)
    mean = np.broadcast_to(np.array([*location, logit], np.float32), (len(x), 1, 3))
    scale = np.full((len(x), 1, 2), log_scale, np.float32)
    p = np.exp(keras.ops.convert_to_numpy(log_likelihood("logistic-black", x, mean, scale)).astype(np.float64))
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    pi = 1 / (1 + math.exp(-logit))
    channels = [np.exp(per_pixel("logistic", LEVELS, m, log_scale)) for m in location]
    assert p[0] == pytest.approx(1 - pi + pi * channels[0][0] * channels[1][0], rel=1e-4)
    assert p[77 * 256 + 200] == pytest.approx(pi * channels[0][77] * channels[1][200], rel=1e-3, abs=1e-12)


def test_the_image_shown_for_black_with_its_own_mass_is_pi_times_the_clipped_locations():
    decoded = np.array([[[[-0.5, 0.4, 1.7, 0.0], [0.2, 0.2, 0.2, -50.0]]]], np.float32)  # (1, 1, 2, 3 + 1)
    shown = likelihoods.image("logistic-black", decoded)
    np.testing.assert_allclose(shown, [[[[0.0, 0.2, 0.5], [0.0, 0.0, 0.0]]]], atol=1e-6)
    assert (
        likelihoods.parameter_channels("logistic-black", 3) == 4 and likelihoods.parameter_channels("logistic", 3) == 3
    )


def test_a_location_past_the_end_bins_makes_black_and_white_certain_where_a_sigmoids_mean_cannot():
    # Why the logistic's decoder output is linear: at the smallest scale s = 1/256 a mean in (0, 1) gives a black
    # pixel at most sigmoid(256 / 510) = 0.62 (0.47 nats per background pixel, every image), a location below 0 all.
    smallest = -math.log(256)
    assert np.exp(per_pixel("logistic", [0.0], 0.0, smallest))[0] == pytest.approx(1 / (1 + math.exp(-256 / 510)))
    assert np.exp(per_pixel("logistic", [0.0, 1.0], [-0.1, 1.1], smallest)) == pytest.approx([1.0, 1.0], abs=1e-9)


def test_the_logistic_stays_finite_where_a_bins_mass_underflows():
    # s = 1/256 and the mean far from the pixel: the mass is below float32's resolution; the density at the bin's
    # centre times its width takes over, still a finite, very negative number with a finite gradient.
    x = np.full((1, 1), 200 / 255, np.float32)
    mean = keras.Variable(np.full((1, 1), 0.1, np.float32))
    value = per_pixel("logistic", x, 0.1, -math.log(256))
    assert np.isfinite(value).all() and value[0] < -100
    import jax

    grad = jax.grad(lambda m: log_likelihood("logistic", x, m, np.full((1, 1), -5.5, np.float32)).sum())(mean.value)
    assert np.isfinite(np.asarray(grad)).all()


@pytest.mark.parametrize("mean", [0.001, 0.2, 0.499, 0.5, 0.5004, 0.7, 0.999])
def test_the_continuous_bernoulli_integrates_to_one_over_the_unit_interval(mean):
    total, _ = integrate.quad(lambda x: math.exp(per_pixel("continuous-bernoulli", [x], mean)[0]), 0, 1, limit=200)
    assert total == pytest.approx(1.0, rel=2e-4)


def test_the_continuous_bernoulli_normaliser_is_smooth_through_one_half():
    lam = np.linspace(0.48, 0.52, 41)
    u = 1 - 2 * lam
    safe = np.where(u == 0, 0.5, u)
    exact = np.where(u == 0, math.log(2), np.log(2 * np.arctanh(safe) / safe))
    ours = per_pixel("continuous-bernoulli", np.zeros_like(lam), lam) - per_pixel("bernoulli", np.zeros_like(lam), lam)
    np.testing.assert_allclose(ours, exact, atol=2e-5)


@pytest.mark.parametrize("log_scale", [-4.0, -1.0, 0.3])
def test_the_gaussian_is_the_normal_density(log_scale):
    x = np.array([0.0, 0.1, 0.5, 0.99])
    np.testing.assert_allclose(
        per_pixel("gaussian", x, 0.4, log_scale), stats.norm.logpdf(x, 0.4, math.exp(log_scale)), rtol=1e-5
    )


def test_the_gaussian_sigma_has_a_floor_of_one_256th():
    assert per_pixel("gaussian", [0.5], 0.5, -20.0)[0] == pytest.approx(stats.norm.logpdf(0, 0, 1 / 256), rel=1e-5)


def test_the_bernoulli_is_kerass_binary_cross_entropy_and_sums_to_one_on_binary_pixels():
    p = np.exp(per_pixel("bernoulli", [0.0, 1.0], 0.3))
    assert p == pytest.approx([0.7, 0.3], rel=1e-6)


def test_an_image_sums_its_pixels_in_any_shape():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 4, 5, 3)).astype(np.float32) / 255
    mean = rng.uniform(0.05, 0.95, x.shape).astype(np.float32)
    scale = rng.uniform(-4, -1, x.shape).astype(np.float32)
    for name in set(LIKELIHOODS) - {"logistic-black"}:  # one parameter per pixel value (logistic-black's below)
        image = keras.ops.convert_to_numpy(log_likelihood(name, x, mean, scale))
        pixels = per_pixel(name, x.ravel(), mean.ravel(), scale.ravel()).reshape(3, -1)
        np.testing.assert_allclose(image, pixels.sum(axis=1), rtol=1e-5, err_msg=name)


def test_bits_per_dimension():
    # A probability: nats / (D ln 2); a density: the levels' bins of width 1/255 added.
    assert bits_per_dim(3072 * math.log(2), (32, 32, 3), "logistic") == pytest.approx(1.0)
    assert bits_per_dim(784 * math.log(2), (28, 28, 1), "bernoulli") == pytest.approx(1.0)
    assert bits_per_dim(0.0, (32, 32, 3), "gaussian") == pytest.approx(math.log2(255))
    assert bits_per_dim(-3072 * math.log(255), (32, 32, 3), "continuous-bernoulli") == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("likelihood", ["continuous-bernoulli", "gaussian"])
def test_a_densitys_bits_per_dim_are_a_code_length_over_the_256_levels(likelihood):
    """2^-(bits of one pixel) is the probability bits/dim give level k: over the 256 levels it sums to at most 1
    (up to the trapezoid rule's error for the continuous Bernoulli, whose end bins are half as wide)."""
    levels = np.arange(256, dtype=np.float32) / 255
    for mean in (1e-7, 1e-3, 0.02, 0.3, 0.5, 0.77, 0.999, 1 - 1e-7):
        nats = -keras.ops.convert_to_numpy(
            log_likelihood(likelihood, levels[:, None], np.full((256, 1), mean, np.float32), np.full((256, 1), -3.0))
        ).astype(np.float64)
        ends = (levels == 0) | (levels == 1)
        bits = [bits_per_dim(n, (1,), likelihood, end_pixels=float(e)) for n, e in zip(nats, ends, strict=True)]
        total = np.sum(np.exp2(-np.array(bits)))
        assert total <= 1.0004, (mean, total)  # full end bins gave up to 1.032
        if likelihood == "continuous-bernoulli":
            assert total >= 0.999, (mean, total)  # the levels share the whole density


def test_densities_on_binary_pixels_have_no_bits_per_dim():
    for likelihood in ("continuous-bernoulli", "gaussian"):
        assert bits_per_dim(100.0, (28, 28, 1), likelihood, binarized=True) is None
    assert bits_per_dim(784 * math.log(2), (28, 28, 1), "bernoulli", binarized=True) == pytest.approx(1.0)
    assert "no bits/dim" in likelihood_note("gaussian", binarized=True)


def colour_images(n: int, shape=(6, 5, 3), seed: int = 0) -> np.ndarray:
    """uint8 colour images, every level from 0 to 255 represented, the end levels more often."""
    rng = np.random.default_rng(seed)
    return rng.choice(np.r_[0, 0, 255, np.arange(256)], size=(n, *shape)).astype(np.uint8)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_the_bound_is_exact_with_every_likelihood_when_q_is_the_prior(tmp_path, likelihood):
    """A dense network on 6x5 colour images whose generator ignores z and whose encoder is the prior: every
    importance weight is p(x), so the bound and the ELBO equal log p(x), computed here from the definition."""
    model = ModelConfig(latent_dim=2, intermediate_dim=8, image_shape=(6, 5, 3), likelihood=likelihood)
    config = RunConfig(model=model, train=TrainConfig())
    models = build_models(config.model, seed=0)
    rng = np.random.default_rng(1)
    bias = rng.normal(0.0, 1.5, 90)
    decoder = models.generator.get_layer("decoder_mean")
    decoder.kernel.assign(np.zeros(decoder.kernel.shape, np.float32))
    p = 1 / (1 + np.exp(-bias.astype(np.float32).astype(np.float64)))  # each pixel's mean, through the sigmoid
    if model.output_activation == "linear":  # the logistic's location: the same means, the bias itself
        bias = p
        p = p.astype(np.float32).astype(np.float64)
    logit = rng.normal(0.0, 2.0, 30).astype(np.float32)  # logistic-black's pi per pixel, after its 3 locations
    if likelihood == "logistic-black":
        bias = np.concatenate([bias.reshape(30, 3), logit[:, None].astype(np.float64)], axis=1).ravel()
    decoder.bias.assign(bias.astype(np.float32))
    for name in ("z_mean", "z_log_var"):
        head = models.encoder.get_layer(name)
        head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
        head.bias.assign(np.zeros(2, np.float32))
    log_scale = -2.5
    if likelihood in likelihoods.SCALED:
        models.vae.get_layer("x_log_scale").log_scale.assign(np.full((1, 1, 1), log_scale, np.float32))
    run = Run(path=tmp_path, config=config, info={}, models=models, epoch=0)
    x_uint8 = colour_images(10)
    data = make_dataset({"x_train": x_uint8[:1], "x_test": x_uint8}, name="closed-form", source="made in the test")

    x = scale_pixels(x_uint8).reshape(10, -1).astype(np.float64)
    s = math.exp(log_scale)
    half = 0.5 / 255
    logistic = np.log(
        np.where(x > 1 - half, 1.0, stats.logistic.cdf(x + half, p, s))  # the last bin reaches +inf
        - np.where(x < half, 0.0, stats.logistic.cdf(x - half, p, s))  # the first bin reaches -inf
    )
    pi = 1 / (1 + np.exp(-logit.astype(np.float64)))
    lit = np.log(pi) + logistic.reshape(10, 30, 3).sum(axis=-1)  # not black: pi times the channels' logistics
    black = (x.reshape(10, 30, 3) == 0).all(axis=-1)
    exact = {
        "logistic-black": np.where(black, np.logaddexp(np.log1p(-pi), lit), lit),
        "logistic": logistic,
        "bernoulli": x * np.log(p) + (1 - x) * np.log1p(-p),
        "continuous-bernoulli": x * np.log(p)
        + (1 - x) * np.log1p(-p)
        + np.log(2 * np.arctanh(1 - 2 * p) / (1 - 2 * p)),
        "gaussian": stats.norm.logpdf(x, p, s),
    }[likelihood].sum(axis=1)
    result = evaluate(run, data, samples=5)
    assert result.likelihood == likelihood
    assert result.iwae == pytest.approx(exact.mean(), rel=1e-4)
    assert result.elbo == pytest.approx(exact.mean(), rel=1e-4)
    ends = likelihoods.end_pixels(scale_pixels(x_uint8))  # the colour images' pixels at level 0 or 255
    assert ends > 0
    expected_bits = bits_per_dim(-exact.mean(), (6, 5, 3), likelihood, end_pixels=ends)
    assert result.bits_per_dim == pytest.approx(expected_bits, rel=1e-4)
    # The VAE's training loss scores the same image with the same likelihood.
    out = models.vae(scale_pixels(x_uint8), training=False)
    loss = keras.ops.convert_to_numpy(models.vae.compute_loss(scale_pixels(x_uint8), None, out, training=False))
    assert float(loss) == pytest.approx(-exact.mean(), rel=1e-4)
