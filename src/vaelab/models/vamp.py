"""The VAE with a VampPrior (Tomczak & Welling, 2018): the prior learned as a mixture of the encoder's posteriors.

    p(z) = (1/N) sum_n q(z | u_n)

The u_n are N learned pseudo-inputs, images of the network's input shape (`ModelConfig.pseudo_inputs`,
`--pseudo-inputs`, default `DEFAULT_PSEUDO_INPUTS` = 500, the paper's for MNIST), each read by the same encoder
as the data. A pseudo-input is sigmoid(a_n), so its pixels stay in (0, 1), the data's range, and always have a
gradient (the paper clips with a hard tanh instead); they start as dark noise, pixels about 0.05 +- 0.01 as in the
paper, seeded like the network's weights, nothing taken from the data. They are weights of the trained model, so
checkpoint.npz holds them and a resumed or reloaded run has the same prior.

The KL from a mixture has no closed form, so the loss per image, in nats, is

    reconstruction_loss + w * (log q(z|x) - log p(z)),   z ~ q(z|x), one draw,

the single-sample Monte Carlo estimate of the negative ELBO at w = 1 (`kl_weight`: β and warm-up as for the VAE).
Evaluation takes log p(z) from this mixture (`Vamp.prior`), and `vaelab generate` draws from it: a pseudo-input
chosen uniformly, z ~ q(z | u_n).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from vaelab.config import ModelConfig
from vaelab.models.networks import initial
from vaelab.models.priors import VampMixture, log_mixture_density, log_normal
from vaelab.models.vae import VAE

# The pseudo-inputs start as dark images, their pixels about 0.05 +- 0.01: the paper's start for MNIST, near the data's
# background, where grey noise (sigmoid of N(0, 1)) lies far from every image. (Neither start keeps 40 latent tanh units
# from collapsing onto the prior without a KL warm-up: benchmarks/reproduce.py gives the vamp one.)
INITIAL_LOGIT = float(np.log(0.05 / 0.95))
INITIAL_SPREAD = 0.01 / (0.05 * 0.95)  # the logit's, for a pixel spread of 0.01 around 0.05


@keras.saving.register_keras_serializable(package="vaelab")
class PseudoInputs(layers.Layer):
    """The VampPrior's `count` pseudo-inputs u_n = sigmoid(a_n), images (count, H, W, C); the logits a_n are
    the weights learned. The layer's input only places it in the model's graph."""

    def __init__(self, count: int, shape: tuple[int, ...], seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.count, self.shape, self.seed = count, tuple(shape), seed

    def build(self, input_shape):
        self.logits = self.add_weight(
            shape=(self.count, *self.shape),
            initializer=initial(keras.initializers.RandomNormal(INITIAL_LOGIT, INITIAL_SPREAD, seed=self.seed)),
            name="logits",
        )

    def call(self, x):
        return ops.cast(ops.sigmoid(self.logits), x.dtype)

    def compute_output_shape(self, input_shape):
        return (self.count, *self.shape)

    def images(self) -> np.ndarray:
        """The pseudo-inputs now, float32 (count, H, W, C) in (0, 1)."""
        return np.asarray(ops.convert_to_numpy(ops.sigmoid(self.logits)), np.float32)

    def get_config(self):
        return {**super().get_config(), "count": self.count, "shape": self.shape, "seed": self.seed}


@keras.saving.register_keras_serializable(package="vaelab")
class Vamp(VAE):
    """The trainable VAE with a VampPrior: image -> {x_decoded_mean, z_mean, z_log_var, z, prior_mean, prior_log_var}
    ((N, latent_dim) each: the encoder's codes of the pseudo-inputs, the mixture's components).

    Its loss per image is reconstruction_loss + w * kl_loss (module docstring); `kl_loss` is log q(z|x) - log p(z)
    at the draw z, the Monte Carlo estimate of KL(q(z|x) || p(z)), and `elbo_loss` the negative ELBO with it.
    """

    keeps_z = True

    @staticmethod
    def prior_outputs(config: ModelConfig, init, x, encoder: keras.Model) -> dict:
        """The pseudo-inputs and their codes, the mixture's components; `encoder` never binarises them."""
        seed = init().get_config()["seed"]  # the pseudo-inputs' own seed, drawn as each layer's is
        u = PseudoInputs(config.pseudo_input_count, config.input_shape, seed=seed, name="pseudo_inputs")(x)
        prior_mean, prior_log_var = encoder(u)
        return {"prior_mean": prior_mean, "prior_log_var": prior_log_var}

    def kl_term(self, y_pred):
        """log q(z|x) - log p(z) at the draw z: the Monte Carlo estimate of KL(q(z|x) || p(z)), per image."""
        z = y_pred["z"]
        log_qz = log_normal(z, y_pred["z_mean"], y_pred["z_log_var"])
        return log_qz - log_mixture_density(z, y_pred["prior_mean"], y_pred["prior_log_var"])

    def prior(self, encoder: keras.Model) -> VampMixture:
        """The VampPrior with the current pseudo-inputs and encoder, in float64."""
        means, log_vars = encoder.predict(self.get_layer("pseudo_inputs").images(), verbose=0)
        return VampMixture(np.asarray(means, np.float64), np.asarray(log_vars, np.float64))
