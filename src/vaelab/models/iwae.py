"""The IWAE (Burda, Grosse & Salakhutdinov, 2015): the VAE's networks trained on the importance-weighted bound.

    loss per image = -log (1/K) sum_k w_k,   log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),   z_k ~ q(z|x)

K = `ModelConfig.k` (`--k`, default `DEFAULT_K`). The bound tightens with K and is the single-sample ELBO at
K = 1 (with the KL estimated by log q - log p at the draw, not in closed form). The sum is a log-sum-exp.
The codes are drawn as the VAE draws K of them (`VAE.draw`), and the decoder runs once per step on the K x batch
codes (`FoldSamples`), so a step costs about K times the decoder's work of a VAE step, the encoder's work unchanged
(benchmarks/iwae_cost.py). A vae with --k K trains on the same K codes, its ELBO averaged over them.

β and KL warm-up weight the KL term of the ELBO; the bound has no such term, so an iwae run refuses them.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from vaelab.models.priors import log_normal
from vaelab.models.vae import VAE, kl_loss


@keras.saving.register_keras_serializable(package="vaelab")
class IWAE(VAE):
    """The trainable IWAE: image -> {x_decoded_mean (b*K, H, W, C), z_mean, z_log_var, z (b, K, latent_dim)}.

    Its loss per image is the negative importance-weighted bound with the K codes of `z` (module docstring).
    The logged `loss` is that objective; `reconstruction_loss` is -log p(x|z_k) averaged over the K codes,
    `kl_loss` the analytic KL(q(z|x) || N(0, I)), `elbo_loss` their sum: the negative ELBO estimated with
    the same K codes, never below the objective on average. `kl_weight` stays 1 (no β for the bound).
    """

    folds = True  # K codes per image, even at K = 1: the bound weighs each by q(z|x) and p(z) at it

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z, z_mean, z_log_var = y_pred["z"], y_pred["z_mean"], y_pred["z_log_var"]
        k = z.shape[1]
        log_px = self.log_px_per_code(x, y_pred, k)
        log_w = log_px + log_normal(z) - log_normal(z, z_mean[:, None], z_log_var[:, None])
        bound = ops.logsumexp(log_w, axis=1) - math.log(k)
        self.track(-ops.mean(log_px, axis=1), kl_loss(z_mean, z_log_var))
        return -ops.mean(bound)
