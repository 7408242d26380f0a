"""The IWAE (Burda, Grosse & Salakhutdinov, 2015): the VAE's networks trained on the importance-weighted bound.

    loss per image = -log (1/K) sum_k w_k,   log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),   z_k ~ q(z|x)

K = `ModelConfig.k` (`--k`, default `DEFAULT_K`). The bound tightens with K and is the single-sample ELBO at
K = 1 (with the KL estimated by log q - log p at the draw, not in closed form). The sum is a log-sum-exp.
The decoder runs once per step on the K x batch codes (`FoldSamples`), so a step costs about K times the
decoder's work of a VAE step, the encoder's work unchanged (benchmarks/iwae_cost.py).

β and KL warm-up weight the KL term of the ELBO; the bound has no such term, so an iwae run refuses them.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from vaelab.config import ModelConfig
from vaelab.models.likelihoods import log_likelihood
from vaelab.models.networks import Sampling
from vaelab.models.priors import log_normal
from vaelab.models.vae import VAE, kl_loss


@keras.saving.register_keras_serializable(package="vaelab")
class ImportanceSampling(Sampling):
    """Samples K codes per image from q(z|x): z (b, K, latent_dim) = z_mean + exp(z_log_var / 2) * epsilon."""

    def __init__(self, samples: int, epsilon_std: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(epsilon_std, seed, **kwargs)
        self.samples = samples

    def call(self, inputs):
        z_mean, z_log_var = inputs
        shape = (ops.shape(z_mean)[0], self.samples, ops.shape(z_mean)[-1])
        epsilon = keras.random.normal(shape, stddev=self.epsilon_std, seed=self.seed_generator)
        return z_mean[:, None] + ops.exp(0.5 * z_log_var[:, None]) * epsilon

    def compute_output_shape(self, input_shape):
        batch, dim = input_shape[0]
        return (batch, self.samples, dim)

    def get_config(self):
        return {**super().get_config(), "samples": self.samples}


@keras.saving.register_keras_serializable(package="vaelab")
class FoldSamples(layers.Layer):
    """(b, K, latent_dim) -> (b * K, latent_dim): image i's K codes at rows i*K .. i*K + K-1, decoded in one call."""

    def call(self, z):
        return ops.reshape(z, (-1, ops.shape(z)[-1]))

    def compute_output_shape(self, input_shape):
        batch, k, dim = input_shape
        return (None if batch is None else batch * k, dim)


@keras.saving.register_keras_serializable(package="vaelab")
class IWAE(VAE):
    """The trainable IWAE: image -> {x_decoded_mean (b*K, H, W, C), z_mean, z_log_var, z (b, K, latent_dim)}.

    Its loss per image is the negative importance-weighted bound with the K codes of `z` (module docstring).
    The logged `loss` is that objective; `reconstruction_loss` is -log p(x|z_k) averaged over the K codes,
    `kl_loss` the analytic KL(q(z|x) || N(0, I)), `elbo_loss` their sum: the negative ELBO estimated with
    the same K codes, never below the objective on average. `kl_weight` stays 1 (no β for the bound).
    """

    @staticmethod
    def draw(config: ModelConfig, seed: int | None, z_mean, z_log_var):
        z = ImportanceSampling(config.samples, config.epsilon_std, seed=seed, name="z")([z_mean, z_log_var])
        return FoldSamples(name="fold_samples")(z), {"z": z}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z, z_mean, z_log_var = y_pred["z"], y_pred["z_mean"], y_pred["z_log_var"]
        k = z.shape[1]
        image = y_pred.get("x", x)
        # Image i's K decodings at rows i*K .. i*K + K-1 (FoldSamples) seen as (b, K, H, W, C), scored against
        # the image broadcast over them: a copy of the batch K times made the K = 50 step twice as slow.
        unfold = (-1, k, *image.shape[1:])
        log_scale = y_pred.get("x_log_scale")
        decoded = y_pred["x_decoded_mean"]  # (b*K, H, W, parameter channels): the image's, and logistic-black's pi
        log_px = log_likelihood(
            self.likelihood,
            image[:, None],
            ops.reshape(decoded, (-1, k, *decoded.shape[1:])),
            None if log_scale is None else ops.reshape(log_scale, unfold),
            batch_dims=2,
        )
        log_w = log_px + log_normal(z) - log_normal(z, z_mean[:, None], z_log_var[:, None])
        bound = ops.logsumexp(log_w, axis=1) - math.log(k)
        self.track(-ops.mean(log_px, axis=1), kl_loss(z_mean, z_log_var))
        return -ops.mean(bound)
