"""The VAE (Kingma & Welling, 2014), with β: the model the rest of the family builds on.

Its loss per image is reconstruction_loss + w * kl_loss, in nats: -log p(x|z) at one draw z ~ q(z|x), plus
the analytic KL(q(z|x) || N(0, I)) weighted by w (`kl_weight`: 1 for the ELBO, set per epoch for β and warm-up).
With `ModelConfig.k` = K > 1 (`--k`) the reconstruction term is averaged over K draws per image: the same ELBO,
estimated with less noise at K times the decoder's work (Burda et al.'s "VAE, k = 5" and "k = 50"; they estimate the
KL at the draws too, where it is taken here in closed form: the same objective).
"""

from __future__ import annotations

import keras
from keras import ops

from vaelab.config import ModelConfig
from vaelab.models.kl import gaussian_kl
from vaelab.models.likelihoods import log_likelihood
from vaelab.models.networks import FoldSamples, ImportanceSampling, Sampling
from vaelab.models.priors import StandardNormal


def bernoulli_log_likelihood(x, x_decoded_mean):
    """log p(x|z) of each image in nats: the pixels independent Bernoulli(x_decoded_mean), summed.

    Written as Keras' binary cross-entropy (which clips probabilities to [1e-7, 1 - 1e-7]), over all
    axes but the first; for grey levels x in [0, 1] it is the continuous extension the course uses.
    """
    return log_likelihood("bernoulli", x, x_decoded_mean)


def reconstruction_loss(x, x_decoded_mean, likelihood: str = "bernoulli", x_log_scale=None):
    """-log p(x|z) per image, in nats: for the course's Bernoulli, binary cross-entropy summed over the pixels."""
    return -log_likelihood(likelihood, x, x_decoded_mean, x_log_scale)


def kl_loss(z_mean, z_log_var):
    """KL(q(z|x) || N(0, I)) per image, in nats, summed over the latent dimensions."""
    return ops.sum(gaussian_kl(z_mean, z_log_var), axis=-1)


@keras.saving.register_keras_serializable(package="vaelab")
class VAE(keras.Model):
    """The trainable VAE: image -> {x_decoded_mean, z_mean, z_log_var} (and "x", the binarised input,
    for runs with dynamic binarisation: the image the reconstruction is scored against; with K > 1 codes per image,
    "z" (b, K, latent_dim) and x_decoded_mean (b*K, H, W, C)).

    Its loss per image, the objective minimised, is reconstruction_loss + w * kl_loss, in nats, where
    w = `kl_weight` (1 for the ELBO; vaelab.training.schedule sets it per epoch for beta and warm-up) and the
    reconstruction is scored with `likelihood` (vaelab.models.likelihoods; "x_log_scale" is its scale). Training
    logs `loss`, `reconstruction_loss`, `kl_loss`, `elbo_loss` (= reconstruction + KL: the negative
    ELBO, whatever w is) and `kl_weight`, each averaged over images.
    """

    keeps_z = False  # whether the loss reads the drawn z itself (an estimate at the draw), as output "z"
    folds = False  # whether it draws K codes per image even at K = 1 (a loss over their axis: the iwae's)

    def __init__(self, *args, likelihood: str = "bernoulli", **kwargs):
        super().__init__(*args, **kwargs)
        self.likelihood = likelihood
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.elbo_loss_tracker = keras.metrics.Mean(name="elbo_loss")
        self.kl_weight_tracker = keras.metrics.Mean(name="kl_weight")
        # A variable, not a Python number: the compiled step reads its current value, so changing it
        # between epochs needs no recompilation.
        self.kl_weight = keras.Variable(1.0, trainable=False, dtype="float32", name="kl_weight")

    @classmethod
    def draw(cls, config: ModelConfig, seed: int | None, z_mean, z_log_var):
        """The codes the model draws from q(z|x): (what the decoder reads, the outputs its loss needs besides the
        decoded pixels, z_mean and z_log_var). One draw per image; or K = `config.samples` of them, output "z"
        (b, K, latent_dim), which the decoder reads folded into the batch: image i's at rows i*K .. i*K + K-1."""
        if config.samples == 1 and not cls.folds:
            z = Sampling(config.epsilon_std, seed=seed, name="z")([z_mean, z_log_var])
            return z, ({"z": z} if cls.keeps_z else {})
        z = ImportanceSampling(config.samples, config.epsilon_std, seed=seed, name="z")([z_mean, z_log_var])
        return FoldSamples(name="fold_samples")(z), {"z": z}

    @staticmethod
    def prior_outputs(config: ModelConfig, init, x, encoder: keras.Model) -> dict:
        """The outputs the model's prior adds to the graph (the vamp's mixture), given the input `x`, the `encoder`
        (its layers without the input's binarisation) and `init` (the network's seeded initializers); none for
        N(0, I)."""
        return {}

    @staticmethod
    def options(config: ModelConfig) -> dict:
        """The constructor's arguments besides the likelihood that `config` sets (the betatc's dataset size)."""
        return {}

    def prior(self, encoder: keras.Model) -> StandardNormal:
        """p(z) with the current weights, for evaluation and generation (vaelab.models.priors): N(0, I)."""
        return StandardNormal(encoder.outputs[0].shape[-1])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z, kl = y_pred.get("z"), self.kl_term(y_pred)
        weighted_kl = ops.cast(self.kl_weight, kl.dtype) * kl
        if z is not None and len(z.shape) == 3:  # K codes per image (`draw`): the term averaged over them
            log_px = self.log_px_per_code(x, y_pred, z.shape[1])
            self.track(-ops.mean(log_px, axis=1), kl)
            # mean(reconstruction + w kl) as one mean over all the codes: averaged per image first, XLA:CPU fused the
            # pixels' logs into a library reduction over codes and pixels, 4.2 against 2.7 ms per step for Burda's
            # network at K = 5 (benchmarks/dense_step.py --network vae5 --variants XLA).
            return -ops.mean(log_px) + ops.mean(weighted_kl)
        reconstruction = reconstruction_loss(
            y_pred.get("x", x), y_pred["x_decoded_mean"], self.likelihood, y_pred.get("x_log_scale")
        )
        self.track(reconstruction, kl)
        return ops.mean(reconstruction + weighted_kl)

    def log_px_per_code(self, x, y_pred, k: int):
        """log p(x|z_k) of each image at each of its K codes, (b, K), from the K x batch decodings."""
        image = y_pred.get("x", x)
        # Image i's K decodings at rows i*K .. i*K + K-1 (FoldSamples) seen as (b, K, H, W, C), scored against
        # the image broadcast over them: a copy of the batch K times made the K = 50 step twice as slow.
        unfold = (-1, k, *image.shape[1:])
        log_scale = y_pred.get("x_log_scale")
        decoded = y_pred["x_decoded_mean"]  # (b*K, H, W, parameter channels): the image's, and logistic-black's pi
        return log_likelihood(
            self.likelihood,
            image[:, None],
            ops.reshape(decoded, (-1, k, *decoded.shape[1:])),
            None if log_scale is None else ops.reshape(log_scale, unfold),
            batch_dims=2,
        )

    def kl_term(self, y_pred):
        """KL(q(z|x) || p(z)) per image as the loss weighs it: for the VAE in closed form, against N(0, I)."""
        return kl_loss(y_pred["z_mean"], y_pred["z_log_var"])

    def track(self, reconstruction, kl) -> None:
        """Updates the logged metrics from the reconstruction loss and the KL of each image."""
        self.reconstruction_loss_tracker.update_state(reconstruction)
        self.kl_loss_tracker.update_state(kl)
        self.elbo_loss_tracker.update_state(reconstruction + kl)
        self.kl_weight_tracker.update_state(self.kl_weight)

    def get_config(self):
        return {**super().get_config(), "likelihood": self.likelihood}
