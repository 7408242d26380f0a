"""The CVAE (Sohn, Lee & Yan, 2015): the VAE conditioned on the image's label y.

The encoder reads [x, y] (the one-hot y concatenated to the flattened image, or to the ConvNets' flattened
feature maps), the decoder [z, y] (y concatenated to z); the prior stays N(0, I). Its loss per image is the
VAE's, reconstruction_loss + w * kl_loss with q(z|x, y) and p(x|z, y): the negative conditional ELBO, a
bound on -log p(x|y), with β and warm-up as for the VAE. It needs labelled data; the training batches then
carry the one-hot labels (`vaelab.data.batches.Batches`), and the generator draws a chosen class from
[z, y] (`vaelab generate RUN --label 7`).
"""

from __future__ import annotations

import keras

from vaelab.models.vae import VAE


@keras.saving.register_keras_serializable(package="vaelab")
class CVAE(VAE):
    """The trainable CVAE: [image, one-hot label] -> {x_decoded_mean, z_mean, z_log_var}; the VAE's loss and
    metrics, every one conditional on the label (`elbo_loss` bounds -log p(x|y))."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        image = x[0] if isinstance(x, list | tuple) else x  # [x, label]
        return super().compute_loss(image, y, y_pred, sample_weight, training)
