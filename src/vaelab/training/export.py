"""A run's encoder and generator as `.keras` files that plain Keras opens, without vaelab.

    encoder.keras    x (n, H, W, C) in [0, 1] -> [z_mean, z_log_var], each (n, latent_dim)
    generator.keras  z (n, latent_dim) -> x_decoded_mean (n, H, W, C): the mean of each pixel, or for the
                     discretised logistic its location, unbounded: clip it to [0, 1] to show it (for the gaussian
                     and the logistics their learned scale stays in the run's checkpoint); for logistic-black
                     (colour's default) (n, H, W, C + 1): the C locations, then the logit l of pi, the chance the
                     pixel is not black: sigmoid(l) * clip(location, 0, 1) shows it (`vaelab.models.likelihoods.image`)

(H, W, C) is the run's image shape: (28, 28, 1) for MNIST. A vamp's prior needs its pseudo-inputs too:

    pseudo_inputs.npy  u (N, H, W, C) float32 in (0, 1): `encoder.predict(u)` gives the VampPrior's N components
                       (means and log-variances), the uniform mixture of which is p(z)

A vqvae's (vaelab.models.vqvae) differ:

    encoder.keras    x -> codes (n, L) int32, each the index of the nearest of the K codebook vectors (a Dense of
                     scores 2 z.e_k - ||e_k||^2, then an argmax)
    generator.keras  codes (n, L) int32 -> x_decoded_mean (the codebook as an Embedding, then the decoder)

Both hold stock Keras layers only: the fused ConvNet layers are saved as the layer pairs they
compute (Conv2D + MaxPooling2D, UpSampling2D + Conv2D, with the same weights), and the fixed
variance of part (f) as a frozen all-zero Dense. `keras.saving.load_model("encoder.keras")` works in
any Python with Keras 3, on any backend. Every completed training writes them into its run directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from vaelab._files import atomic_path
from vaelab.models import Models, build_models
from vaelab.run import KERAS_FILES, Run

PSEUDO_INPUTS = "pseudo_inputs.npy"


def stock_models(run: Run) -> Models:
    """The run's networks rebuilt from stock Keras layers, with its weights copied in by layer name."""
    stock = build_models(run.config.model, seed=run.config.train.seed, stock=True)
    for model, source in ((stock.encoder, run.encoder), (stock.generator, run.generator)):
        weighted = {layer.name: layer for layer in source.layers if layer.weights}
        for layer in model.layers:
            if layer.weights and layer.trainable:
                origin = weighted[layer.name]
                if hasattr(origin, "weights_for"):  # a vqvae's codebook: its weights in the stock layer's form
                    layer.set_weights(origin.weights_for(layer))
                else:
                    layer.set_weights(origin.get_weights())
    return stock


def export_run(run: Run, out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Writes encoder.keras and generator.keras (stock Keras layers) into `out` (default: the run directory), and a
    vamp's pseudo_inputs.npy."""
    out = Path(out) if out is not None else run.path
    models = stock_models(run)
    written = []
    for name, model in zip(KERAS_FILES, (models.encoder, models.generator), strict=True):
        with atomic_path(out / name, suffix=".keras") as tmp:
            keras.saving.save_model(model, tmp)
        written.append(out / name)
    if run.config.model.pseudo_input_count:  # a vamp's prior reads them
        with atomic_path(out / PSEUDO_INPUTS, suffix=".npy") as tmp:
            np.save(tmp, np.asarray(run.models.vae.get_layer("pseudo_inputs").images(), np.float32))
        written.append(out / PSEUDO_INPUTS)
    return written
