"""Evaluation on the test set: the ELBO and the importance-weighted bound on log p(x) (Burda et al., 2015).

    log p(x) >= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x)

The bound tightens as K grows and equals the ELBO's single-sample estimate at K = 1. Both use the run's
likelihood (vaelab.models.likelihoods) and its prior p(z) (`Models.prior`: N(0, I), or a vamp's VampPrior, whose KL has
no closed form and is estimated with the same K samples), and are also given in bits per dimension. Latent points
are decoded in batches of a bounded size; the sum over k is taken with log-sum-exp in float64.
The ELBO here is always the true one (KL weight 1), whatever β the run was trained with, and the IWAE
bound the same for every model of the family. A conditional model (cvae) is evaluated on each test image
with its label: its figures bound log p(x|y), and say so (`bound`). The latent diagnostics (active units,
KL per dimension: vaelab.analysis.diagnostics) come with it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import layers, ops

from vaelab import _interrupt, limits
from vaelab._lock import DirectoryLock
from vaelab.analysis.diagnostics import latent_diagnostics
from vaelab.data import Dataset, test_images
from vaelab.data.batches import one_hot
from vaelab.errors import VaelabError
from vaelab.models.likelihoods import SCALED, bits_per_dim, end_pixels, log_likelihood
from vaelab.run import Run, update_metrics

LOG_2PI = math.log(2 * math.pi)
# Decoded latent points per call for 28x28x1 images, fewer for bigger ones: few enough that a call's decodings stay
# in the CPU's caches (the mlp's evaluation took 45% less CPU time at 1,000 than at 20,000: Xeon, 2026-12-05).
POINTS_PER_CALL = {"mlp": 1000, "conv": 1000, "convnet": 1000}


@dataclass(frozen=True)
class Evaluation:
    """Test-set figures in nats per image; log-likelihood bounds are negative, losses positive."""

    images: int
    samples: int  # K, importance samples per image
    binarized: bool  # on the fixed binarised test set (a true likelihood) or on grey levels
    likelihood: str  # p(x|z) of the bounds (vaelab.models.likelihoods)
    bound: str  # what the bounds bound: "log p(x)", or "log p(x|y)" for a conditional model (cvae)
    elbo: float  # E_q[log p(x|z)] - KL, the expectation estimated with the K samples
    reconstruction_loss: float  # -E_q[log p(x|z)]
    kl_loss: float  # KL(q(z|x) || p(z)), analytic; a vamp's: mean over the K samples of log q(z_k|x) - log p(z_k)
    elbo_at_mean: float  # log p(x | z = z_mean) - KL: the reconstruction of the code itself
    reconstruction_loss_at_mean: float
    iwae: float  # the importance-weighted lower bound on log p(x) with K samples
    nll: float  # -iwae: the negative log-likelihood estimate the literature reports
    bits_per_dim: (
        float | None
    )  # nll in bits per pixel value (vaelab.models.likelihoods.bits_per_dim); None: meaningless
    elbo_bits_per_dim: float | None  # -elbo in bits per pixel value
    seconds: float
    active_units: int  # latent dimensions with activity > 0.01 (Burda et al.'s criterion)
    unit_activity: tuple[float, ...]  # per dimension: variance of z_mean over the images
    # per dimension: mean KL(q(z_j|x) || N(0, 1)), nats; sums to kl_loss where the prior is N(0, I). A vamp's prior is
    # not N(0, I): there it measures how far each dimension's code moves from N(0, 1), a split of no term of the ELBO.
    kl_per_dim: tuple[float, ...]


class _LogLikelihood(layers.Layer):
    """log p(x | z) for K latent points per image: the generator decodes them all in one batch."""

    def __init__(self, generator: keras.Model, likelihood: str, log_scale: layers.Layer | None, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.likelihood = likelihood
        self.log_scale = log_scale  # the VAE's LogScale layer, for the likelihoods that have one

    def call(self, x, z, label=None):
        k, dim = z.shape[1], z.shape[2]
        pixels, channels = math.prod(x.shape[1:-1]), x.shape[-1]
        codes = ops.reshape(z, (-1, dim))
        decoded = self.generator(codes if label is None else [codes, ops.repeat(label, k, axis=0)])
        # image i's K decodings, scored against it broadcast; each pixel's parameters (logistic-black's pi after its
        # channels' locations) kept together on the last axis
        x_hat = ops.reshape(decoded, (-1, k, pixels, decoded.shape[-1]))
        log_scale = None if self.log_scale is None else ops.reshape(self.log_scale(decoded), (-1, k, pixels, channels))
        x = ops.reshape(x, (-1, 1, pixels, channels))
        return log_likelihood(self.likelihood, x, x_hat, log_scale, batch_dims=2)


def _log_likelihood_model(run: Run, k: int) -> keras.Model:
    likelihood = run.config.model.pixel_likelihood
    log_scale = run.vae.get_layer("x_log_scale") if likelihood in SCALED else None
    model = run.config.model
    x = keras.Input(model.input_shape, name="x")
    z = keras.Input((k, model.latent_dim), name="z")
    label = keras.Input((model.classes,), name="label") if model.conditional else None
    log_px = _LogLikelihood(run.generator, likelihood, log_scale, name="log_px_given_z")(x, z, label)
    return keras.Model([x, z] if label is None else [x, z, label], log_px)


def evaluate(
    run: Run,
    data: Dataset,
    *,
    samples: int = 1000,
    images: int | None = None,
    seed: int = 0,
    points_per_call: int | None = None,
    progress=None,
) -> Evaluation:
    """Evaluates `run` on the first `images` test images (default: all 10,000) with K = `samples`; a vqvae's is
    `vaelab.analysis.evaluate_codes.evaluate_codes`, exact with one sample."""
    if samples < 1:
        raise VaelabError(f"--samples must be >= 1, got {samples}")
    if not run.config.model.member.gaussian_latent:  # a vqvae: a point mass on codes, its bound needs no samples
        from vaelab.analysis.evaluate_codes import evaluate_codes

        return evaluate_codes(run, data, images=images, progress=progress)
    x_all = test_images(data, binarized=run.config.train.binarize)[:images]
    n, dim = len(x_all), run.config.model.latent_dim
    labels = data.y_test[:images] if run.config.model.conditional else None
    condition = [] if labels is None else [one_hot(labels, run.config.model.classes)]  # the model's third input
    needed = 2 * n * samples * 8  # log w and log p(x|z), float64, for every image and sample
    if needed > MEMORY_SHARE * _physical_memory():
        raise VaelabError(
            f"{n:,} images x {samples:,} samples need {needed / 1e9:.1f} GB; this machine has "
            f"{_physical_memory() / 1e9:.1f} GB: use fewer --samples or --images"
        )
    shape = run.config.model.input_shape
    points = points_per_call or max(1, POINTS_PER_CALL[run.config.model.arch] * 784 // math.prod(shape))
    k_chunk = min(samples, points)
    per_call = max(1, points // k_chunk)
    model = _log_likelihood_model(run, k_chunk)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()

    z_mean, z_log_var = run.encode(x_all, labels=labels)
    at_mean = _log_likelihood_model(run, 1).predict([x_all, z_mean[:, None], *condition], batch_size=points, verbose=0)
    log_px_at_mean = np.asarray(at_mean, np.float64)[:, 0]
    z_mean, z_log_var = z_mean.astype(np.float64), z_log_var.astype(np.float64)
    prior = run.models.prior()
    sigma = np.exp(0.5 * z_log_var)

    log_w = np.empty((n, samples))
    log_px = np.empty((n, samples))
    kl_at_draws = np.zeros(n)  # sum over the samples of log q(z_k|x) - log p(z_k)
    for start in range(0, n, per_call):
        _interrupt.check("evaluation interrupted; metrics.json is unchanged")
        stop = min(n, start + per_call)
        for k0 in range(0, samples, k_chunk):
            k1 = min(samples, k0 + k_chunk)
            noise = rng.standard_normal((stop - start, k_chunk, dim))
            z = z_mean[start:stop, None] + sigma[start:stop, None] * noise
            batch = model.predict_on_batch(
                [x_all[start:stop], z.astype(np.float32), *(c[start:stop] for c in condition)]
            )
            ll = np.asarray(batch, np.float64)[:, : k1 - k0]
            log_pz = prior.log_density(z[:, : k1 - k0])
            log_qz = -0.5 * np.sum(noise**2 + z_log_var[start:stop, None] + LOG_2PI, axis=-1)[:, : k1 - k0]
            log_px[start:stop, k0:k1] = ll
            log_w[start:stop, k0:k1] = ll + log_pz - log_qz
            kl_at_draws[start:stop] += np.sum(log_qz - log_pz, axis=1)
        if progress is not None:
            progress(stop, n)
    iwae = _logsumexp(log_w, axis=1) - math.log(samples)
    kl = prior.kl(z_mean, z_log_var)
    if kl is None:  # no closed form: the K samples' estimate
        kl = kl_at_draws / samples
    reconstruction = -log_px.mean(axis=1)
    latent = latent_diagnostics(z_mean, z_log_var)
    likelihood = run.config.model.pixel_likelihood
    elbo = float(np.mean(-reconstruction - kl))
    code_length = {"binarized": run.config.train.binarize, "end_pixels": end_pixels(x_all)}
    return Evaluation(
        images=n,
        samples=samples,
        binarized=run.config.train.binarize,
        likelihood=likelihood,
        bound=run.config.model.bound,
        elbo=elbo,
        reconstruction_loss=float(reconstruction.mean()),
        kl_loss=float(kl.mean()),
        elbo_at_mean=float(np.mean(log_px_at_mean - kl)),
        reconstruction_loss_at_mean=float(-log_px_at_mean.mean()),
        iwae=float(iwae.mean()),
        nll=float(-iwae.mean()),
        bits_per_dim=bits_per_dim(float(-iwae.mean()), shape, likelihood, **code_length),
        elbo_bits_per_dim=bits_per_dim(-elbo, shape, likelihood, **code_length),
        seconds=round(time.perf_counter() - started, 2),
        active_units=latent.active_units,
        unit_activity=tuple(float(a) for a in latent.activity),
        kl_per_dim=tuple(float(k) for k in latent.kl_per_dim),
    )


def evaluate_and_save(run: Run, data: Dataset, **kwargs) -> Evaluation:
    """`evaluate`, then writes the result into the run's metrics.json under "evaluation".

    Holds the run's lock throughout, so no training changes the run while it is evaluated.
    """
    with DirectoryLock(run.path, "evaluation"), _interrupt.stop_at_step_boundary():
        result = evaluate(run, data, **kwargs)
        recorded = {k: v for k, v in asdict(result).items() if v is not None}  # (a vqvae's bound without a prior)
        run.metrics = update_metrics(run.path, evaluation=recorded)
    return result


MEMORY_SHARE = limits.MEMORY_SHARE  # an evaluation may take at most this share of the machine's memory


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30  # not POSIX: assume 8 GB


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(a - top), axis=axis))
