"""Does a 2-D code keep the shapes' colour when black has its own mass? (issue 27, docs/colour.md)

    python benchmarks/colour_black_mass.py {black-mass,mixture,plain} [PRESET] [EPOCHS] [TRAIN_SUBSET] [LR] [PNG]

The black mass is now vaelab's `logistic-black` (colour's default); this script keeps the prototype that chose it.
"mixture", the alternative measured against it: each pixel w logistic(mu_1, s) + (1 - w) logistic(mu_2, s), the three
channels independent given the component, w = sigmoid(l) shared by the channels (PixelCNN++'s mixture, 2 components,
without its channel coupling), mu_1, mu_2 and l from 7 decoder channels (the images get 4 all-zero channels); its
reconstructions and grid are scored on the mixture's mean image, lit above 0.25.

A prototype, not yet a vaelab likelihood: each pixel is black, (0, 0, 0) exactly, with probability 1 - pi, else its
three channels are discretised logistics (vaelab.models.likelihoods' "logistic", the location mu and the learned scale
s),
pi = sigmoid(l); the decoder gives l as a fourth channel beside mu (the images get an all-zero fourth channel, which
the encoder reads and the likelihood ignores). A mixture of a point mass and a distribution over the 256^3 levels,
so it sums to 1: bits/dim (of the three real channels) stay an exact code length. "plain" trains the same network the
same way with today's logistic. Trained with Keras' fit (RMSprop at the learning rate, batches of 100, latent_dim 2,
the first TRAIN_SUBSET images of `shapes`), scored on the first 1,000 test images: KL (the model's own kl_loss),
bits/dim of the ELBO, which factors the code holds (benchmarks/colour_collapse.factors_in_code), the share of images
whose reconstructed colour (mu on the image's shape pixels, averaged) is nearest the palette colour it was drawn in, and
how many palette colours the 10x10 latent grid decodes (pixels shown where pi > 0.5, or above 0.25 for "plain").
Prints one JSON line; with PNG, also writes there the first 10 test images over their reconstructions, above the
10x10 grid, each pixel as the mean of its distribution's location (pi * mu with the black mass, mu otherwise), clipped.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    mode = sys.argv[1]
    preset = sys.argv[2] if len(sys.argv) > 2 else "mlp"
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    n_train = int(sys.argv[4]) if len(sys.argv) > 4 else 3000
    lr = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-3
    png = sys.argv[6] if len(sys.argv) > 6 else None

    import vaelab  # sets the Keras backend before keras is imported

    data = vaelab.load_dataset("shapes")
    import keras
    from colour_collapse import factors_in_code

    from vaelab.analysis.latent import manifold_grid
    from vaelab.data.shapes import PALETTE, shapes_factors
    from vaelab.models import build_models, likelihoods

    x_train = data.x_train[:n_train].astype("float32") / 255
    x_test = data.x_test[:1000].astype("float32") / 255
    channels = 3
    if mode == "black-mass":
        likelihoods._PER_PIXEL["logistic"] = _black_mass(likelihoods._logistic)
        x_train, x_test = _fourth_channel(x_train), _fourth_channel(x_test)
        channels = 4
    elif mode == "mixture":
        likelihoods._PER_PIXEL["logistic"] = _mixture(likelihoods._logistic)
        x_train, x_test = _extra_channels(x_train, 4), _extra_channels(x_test, 4)
        channels = 7
    config = vaelab.make_config(preset, dataset="shapes", likelihood="logistic", image_shape=(32, 32, channels))
    models = build_models(config.model.for_data((32, 32, channels)), seed=0)
    models.vae.compile(optimizer=keras.optimizers.RMSprop(lr))
    start = time.time()
    models.vae.fit(x_train, epochs=epochs, batch_size=100, verbose=0, shuffle=True)
    seconds = time.time() - start
    scores = models.vae.evaluate(x_test, batch_size=100, verbose=0, return_dict=True)

    def shown(decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if mode == "mixture":  # the mean image, lit where it is above 0.25
            w = 1 / (1 + np.exp(-decoded[..., 6:7]))
            mu = w * np.clip(decoded[..., :3], 0, 1) + (1 - w) * np.clip(decoded[..., 3:6], 0, 1)
            return mu, mu.max(-1) > 0.25
        mu = np.clip(decoded[..., :3], 0, 1)
        lit = decoded[..., 3] > 0 if mode == "black-mass" else mu.max(-1) > 0.25
        return mu, lit

    palette = PALETTE.astype(np.float32) / 255

    def nearest(colours: np.ndarray) -> np.ndarray:
        return np.argmin(((colours[:, None] - palette[None]) ** 2).sum(-1), 1)

    z_mean, _ = models.encoder.predict(x_test, verbose=0)
    mu, _ = shown(models.generator.predict(z_mean, verbose=0))
    true_lit = x_test[..., :3].max(-1) > 0
    colours = np.stack([m[lit].mean(0) for m, lit in zip(mu, true_lit, strict=True)])
    accuracy = float((nearest(colours) == shapes_factors("test")["colour"][:1000]).mean())
    grid = manifold_grid(10)
    z = np.stack(np.meshgrid(grid, grid[::-1]), -1).reshape(100, 2).astype("float32")
    grid_mu, grid_lit = shown(models.generator.predict(z, verbose=0))
    grid_colours = np.array([m[lit].mean(0) for m, lit in zip(grid_mu, grid_lit, strict=True) if lit.any()])
    print(json.dumps({
        "mode": mode, "preset": preset, "epochs": epochs, "train_subset": n_train, "learning_rate": lr,
        "train_seconds": round(seconds), "kl": round(scores["kl_loss"], 2),
        "bits_per_dim": round(scores["elbo_loss"] / (32 * 32 * 3 * np.log(2)), 4),
        "colour_accuracy": round(accuracy, 3), "grid_lit": int(grid_lit.any((1, 2)).sum()),
        "grid_colours": len(set(nearest(grid_colours.reshape(-1, 3)).tolist())),
        "in_code": factors_in_code(z_mean),
    }))  # fmt: skip
    if png:
        reconstructed = models.generator.predict(z_mean[:10], verbose=0)
        _figure(png, x_test[:10, ..., :3], reconstructed, models.generator.predict(z, verbose=0))


def _figure(path: str, originals: np.ndarray, decoded: np.ndarray, grid: np.ndarray) -> None:
    """Originals over reconstructions (2 x 10), above the 10 x 10 grid, each image the mean location, 2x enlarged."""
    from PIL import Image

    def mean(d: np.ndarray) -> np.ndarray:
        mu = np.clip(d[..., :3], 0, 1)
        if d.shape[-1] == 7:
            w = 1 / (1 + np.exp(-d[..., 6:7]))
            return w * mu + (1 - w) * np.clip(d[..., 3:6], 0, 1)
        return mu / (1 + np.exp(-d[..., 3:4])) if d.shape[-1] == 4 else mu

    def tile(images: np.ndarray, rows: int) -> np.ndarray:
        n, h, w, c = images.shape
        return images.reshape(rows, n // rows, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, n // rows * w, c)

    pair = tile(np.concatenate([originals, mean(decoded)]), 2)
    square = tile(mean(grid), 10)
    gap = np.ones((8, pair.shape[1], 3), np.float32)
    canvas = np.concatenate([pair, gap, square])
    image = Image.fromarray((canvas * 255).round().astype(np.uint8))
    image.resize((image.width * 2, image.height * 2), Image.NEAREST).save(path, optimize=True)


def _extra_channels(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((*x.shape[:-1], n), x.dtype)], -1)


def _mixture(logistic):
    """log p of each pixel under w logistic(mu_1, s) + (1 - w) logistic(mu_2, s), the channels independent given the
    component; `mean` holds mu_1 (3 channels), mu_2 (3) and w's logit (1)."""
    from keras import ops

    def per_pixel(x, mean, log_scale):
        x, s = x[..., :3], log_scale[..., :3]
        first = ops.sum(logistic(x, mean[..., :3], s), axis=-1) - ops.softplus(-mean[..., 6])
        second = ops.sum(logistic(x, mean[..., 3:6], s), axis=-1) - ops.softplus(mean[..., 6])
        return ops.logaddexp(first, second)[..., None]

    return per_pixel


def _fourth_channel(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.zeros((*x.shape[:-1], 1), x.dtype)], -1)


def _black_mass(logistic):
    """log p of each pixel (in its first channel, zeros in the others' place) under the black point mass mixed with
    the channels' logistics; `mean` holds mu in its first three channels and pi's logit in the fourth."""
    from keras import ops

    from vaelab.models.likelihoods import HALF_BIN

    def per_pixel(x, mean, log_scale):
        log_colour = ops.sum(logistic(x[..., :3], mean[..., :3], log_scale[..., :3]), axis=-1)
        logit = mean[..., 3]
        lit = -ops.softplus(-logit) + log_colour  # log pi + log p(colour)
        black = ops.all(x[..., :3] < HALF_BIN, axis=-1)
        return ops.where(black, ops.logaddexp(-ops.softplus(logit), lit), lit)[..., None]

    return per_pixel


if __name__ == "__main__":
    main()
