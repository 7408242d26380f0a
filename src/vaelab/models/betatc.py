"""β-TCVAE (Chen, Li, Grosse & Duvenaud, 2018): the ELBO's KL split in three, the total correlation weighted by β.

With q(z) = (1/N) sum_n q(z|x_n), the aggregate posterior over the N training images, and z ~ q(z|x):

    log q(z|x) - log p(z) =  [log q(z|x) - log q(z)]                   index-code mutual information (MI)
                           + [log q(z) - sum_j log q(z_j)]               total correlation (TC)
                           + [sum_j log q(z_j) - log p(z)]               dimension-wise KL (dimKL)

The loss per image, in nats, is reconstruction_loss + α MI + w TC + γ dimKL with α = γ = 1 and w = `kl_weight`:
β (`--beta`) once warmed up. So for a betatc β weights the total correlation only, not the whole KL as in a
β-VAE, and KL warm-up (`--kl-warmup`) raises the TC's weight from β/warm-up to β while MI and dimKL keep weight 1.
At β = 1 the loss is the negative ELBO, its KL estimated at the draw.

q(z) and q(z_j) are estimated on the minibatch by minibatch-weighted sampling (the paper's MWS): for a batch of
M images, log q(z_i) ≈ logsumexp_m log q(z_i|x_m) - log(N M), and the same per dimension. N is the number of
training images (`ModelConfig.dataset_size`, set from the data when training starts). The three terms sum to
log q(z|x) - log p(z) exactly, whatever the estimate; the estimate of each is biased for small batches.
Prior N(0, I): evaluation is the VAE's, and its bounds are on log p(x).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from vaelab.config import TERMS, ModelConfig
from vaelab.models.priors import log_normal
from vaelab.models.vae import VAE, reconstruction_loss


def decomposed_kl(z, z_mean, z_log_var, dataset_size: int):
    """(MI, TC, dimKL) per image, in nats, of the batch's draws z (M, d) from q(z|x) = N(z_mean, exp(z_log_var)),
    q(z) estimated by minibatch-weighted sampling with N = `dataset_size`; they sum to log q(z|x) - log p(z)."""
    # log q(z_i,j | x_m) for every draw i, image m, dimension j: (M, M, d); log_normal over a trailing axis of 1
    log_q_dims = log_normal(z[:, None, :, None], z_mean[None, :, :, None], z_log_var[None, :, :, None])
    log_nm = math.log(dataset_size) + ops.log(ops.cast(ops.shape(z)[0], z.dtype))
    log_qz = ops.logsumexp(ops.sum(log_q_dims, axis=-1), axis=1) - log_nm
    log_qz_product = ops.sum(ops.logsumexp(log_q_dims, axis=1) - log_nm, axis=-1)
    log_qz_x = log_normal(z, z_mean, z_log_var)
    return log_qz_x - log_qz, log_qz - log_qz_product, log_qz_product - log_normal(z)


@keras.saving.register_keras_serializable(package="vaelab")
class BetaTC(VAE):
    """The trainable β-TCVAE: image -> {x_decoded_mean, z_mean, z_log_var, z}.

    Its loss per image is reconstruction_loss + MI + w * TC + dimKL (module docstring), with N = `dataset_size`.
    Training logs the VAE's metrics, `kl_loss` being MI + TC + dimKL (log q(z|x) - log p(z) at the draw) and
    `kl_weight` the TC's weight, and also `mutual_information`, `total_correlation` and `dimension_kl`.
    """

    keeps_z = True

    def __init__(self, *args, dataset_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.dataset_size = dataset_size
        self.terms = [keras.metrics.Mean(name=name) for name in TERMS]

    @staticmethod
    def options(config: ModelConfig) -> dict:
        return {"dataset_size": config.training_images}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        reconstruction = reconstruction_loss(
            y_pred.get("x", x), y_pred["x_decoded_mean"], self.likelihood, y_pred.get("x_log_scale")
        )
        mi, tc, dim_kl = decomposed_kl(y_pred["z"], y_pred["z_mean"], y_pred["z_log_var"], self.dataset_size)
        for tracker, term in zip(self.terms, (mi, tc, dim_kl), strict=True):
            tracker.update_state(term)
        self.track(reconstruction, mi + tc + dim_kl)
        return ops.mean(reconstruction + mi + ops.cast(self.kl_weight, tc.dtype) * tc + dim_kl)

    def get_config(self):
        return {**super().get_config(), "dataset_size": self.dataset_size}
