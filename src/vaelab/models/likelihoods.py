"""p(x|z): the decoder's distribution of the pixels, as log-likelihoods per image in nats, and bits per dimension.

Pixels x are in [0, 1] (8-bit grey levels k/255, or binary after `--binarize`). The decoder gives one
number per pixel, `mean` in (0, 1) (a sigmoid), except for the logistic, whose `mean` is its location on the
real line (a linear output, `ModelConfig.decoder_activation`); the gaussian and the logistic also have a
learned log-scale (`vaelab.models.networks.LogScale`: one number, or one per pixel, not depending on z).

- `bernoulli`: pixels independent Bernoulli(mean), as Keras' binary cross-entropy computes it. A likelihood for binary
  pixels; for grey levels it is the continuous extension the course uses, not a normalised density.
- `continuous-bernoulli`: the Bernoulli's normalised version on [0, 1] (Loaiza-Ganem & Cunningham, 2019):
  Bernoulli(mean) times C(mean) = 2 atanh(1 - 2 mean) / (1 - 2 mean). A density on [0, 1].
- `gaussian`: N(mean, sigma^2), a density on the real line, sigma >= 1/256 (`MIN_LOG_SCALE`) so that it
  cannot shrink onto the 256 levels of 8-bit data.
- `logistic`: the discretised logistic of PixelCNN++ and IAF-VAE: the probability of pixel k/255 is the
  logistic(mean, s) mass of its bin [k/255 - 1/510, k/255 + 1/510], the two end bins open to -inf and +inf.
  A probability of the 256 levels, whatever the location and the scale: exact nats of 8-bit images. The location
  must reach past the end bins' edges (below 1/510, above 1 - 1/510) for a black or a white pixel to be likely,
  which a sigmoid's (0, 1) cannot at s >= 1/256: hence the linear output.
- `logistic-black`: black with a mass of its own. Each pixel is black, every channel at level 0, with probability
  1 - pi, else its channels are the discretised logistics above (which may give level 0 too); pi = sigmoid(l), l from
  one more decoder output channel beside the C locations (`parameter_channels`). A mixture of a point mass and a
  probability over the 256^C levels of a pixel, so it sums to 1: exact nats again. On `shapes` (coloured shapes on
  black) a pixel at a shape's edge then costs at most ln 2 nats when the shape's place is unsure, where the logistic,
  with one mode per channel, charges |difference| / s; so a 2-D code can hold the colour (docs/colour.md).

Bits per dimension are nats / (D ln 2) for the discrete likelihoods; a density's nats become those of
8-bit pixels by its bins' width (the usual reading, without dequantisation noise), so every likelihood reports
on one scale. The gaussian is a density on the real line: level k/255 stands for the bin [k/255 - 1/510,
k/255 + 1/510], width 1/255 (D ln 255 added per image). The continuous Bernoulli is a density on [0, 1]: its
two end bins are cut by the interval to half that width, so each pixel at 0 or 255 adds ln 2 more. Over the 256
levels its implied probabilities then sum to the trapezoid rule's integral of the density, at most 1.00033 (at
the decoder's most extreme means), so its bits/dim are optimistic by at most 0.0005; with full end bins they
summed to up to 1.032. On binarised pixels a density's bits/dim mean nothing (there are no 8-bit bins), and
`bits_per_dim` gives None.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

# The likelihoods' own facts, kept with the settings that choose them; named here too for the models' code.
from vaelab.config import LOCATED, SCALED, parameter_channels  # noqa: F401

LEVELS = 255  # 8-bit pixels are k / LEVELS
HALF_BIN = 0.5 / LEVELS
MIN_LOG_SCALE = -math.log(256.0)  # the gaussian's sigma stays >= 1/256, the logistic's s as well
DENSITIES = ("continuous-bernoulli", "gaussian")  # densities on [0, 1] or R; the others are probabilities
# Where the learned log-scale starts. The logistic's s = e^-2 = 0.14 of the pixel range, not 1, its whole width: one
# number that RMSprop moves by about the learning rate per step (log s 0 -> -0.07 in 90 steps on `shapes`), while the
# location's end bin keeps a wide logistic's black pixels likely only far below 0, where the shapes go dark too
# (docs/colour.md).
INITIAL_LOG_SCALE = {"gaussian": 0.0, "logistic": -2.0, "logistic-black": -2.0}
_CLIP = 1e-7  # Keras' clipping of probabilities in binary cross-entropy


def log_likelihood(likelihood: str, x, mean, log_scale=None, *, batch_dims: int = 1):
    """log p(x|z) of each image in nats: the pixels' log-likelihoods summed over all axes after the first
    `batch_dims`. `x` broadcasts against `mean`: with `batch_dims=2`, x (b, 1, H, W, C) scores the K decodings
    mean (b, K, H, W, C) of each image without K copies of it (the iwae's loss, the evaluation's bound)."""
    per_pixel = _PER_PIXEL[likelihood](x, mean, log_scale)
    return ops.sum(per_pixel, axis=tuple(range(batch_dims, len(per_pixel.shape))))


def image(likelihood: str, decoded: np.ndarray) -> np.ndarray:
    """The decoder's output (n, H, W, parameter channels) -> the image shown for it, (n, H, W, C) in [0, 1]: each
    pixel's mean, or for the logistics the location clipped to [0, 1], the level the distribution is centred on; for
    `logistic-black` that times pi, the mean of the black mass and the clipped location mixed. The pages' network
    computes the same (`vaelab.explore.webmodel.describe`'s "black_mass_mean", static/nn.js)."""
    decoded = np.asarray(decoded)
    if likelihood != "logistic-black":
        return np.clip(decoded, 0.0, 1.0)
    lit = 1.0 / (1.0 + np.exp(-decoded[..., -1:].astype(np.float64)))
    return (lit * np.clip(decoded[..., :-1], 0.0, 1.0)).astype(decoded.dtype)


def bits_per_dim(
    nats: float, image_shape: tuple[int, ...], likelihood: str, *, binarized: bool = False, end_pixels: float = 0.0
) -> float | None:
    """-log p(x) of one image in nats (an NLL, or a negative bound) -> bits per pixel value (dimension).

    `end_pixels` is the images' mean count of pixels at level 0 or 255 (`end_pixels`), which the continuous
    Bernoulli's half-width end bins need; None for a density on binarised pixels, where bits/dim mean nothing.
    """
    dims = math.prod(image_shape)
    if likelihood in DENSITIES and binarized:
        return None
    offset = dims * math.log(LEVELS) if likelihood in DENSITIES else 0.0
    if likelihood == "continuous-bernoulli":
        offset += end_pixels * math.log(2.0)
    return (nats + offset) / (dims * math.log(2.0))


def end_pixels(x) -> float:
    """The mean number of pixels per image at level 0 or 255 (x in [0, 1], images along the first axis)."""
    x = np.asarray(x)
    return float(np.count_nonzero((x == 0.0) | (x == 1.0)) / max(1, len(x)))


def likelihood_note(likelihood: str, binarized: bool) -> str:
    """What the bounds under `likelihood` on these pixels can be compared with, in one sentence."""
    if likelihood == "bernoulli" and not binarized:
        return (
            "On grey-level pixels the Bernoulli likelihood is not a normalised density, so these bounds compare "
            "networks with one another, not with published binarised-MNIST results."
        )
    if likelihood in ("bernoulli", "logistic", "logistic-black"):
        return (
            f"The {likelihood} likelihood gives the probability of each pixel's value, so these are the figures "
            "published results on the same images report."
        )
    if binarized:
        return (
            f"The {likelihood} likelihood is a density, here on binary pixels: its bounds are in nats of a density, "
            "not comparable with a probability's, and it has no bits/dim."
        )
    bins = (
        "each 8-bit level as a bin of width 1/255" if likelihood == "gaussian"
        else "each 8-bit level as a bin of width 1/255, the two end levels' bins of half that width"
    )  # fmt: skip
    return f"The {likelihood} likelihood is a density; its bits/dim count {bins} (no dequantisation noise)."


def _bernoulli(x, mean, log_scale=None):
    # Keras' binary cross-entropy written out (it requires equal shapes; this broadcasts), the same clipping.
    mean = ops.clip(mean, _CLIP, 1.0 - _CLIP)
    return x * ops.log(mean) + (1.0 - x) * ops.log(1.0 - mean)


def _continuous_bernoulli(x, mean, log_scale=None):
    return _bernoulli(x, mean) + _log_normaliser(ops.clip(mean, _CLIP, 1 - _CLIP))


def _log_normaliser(lam):
    """log C(lam) = log(2 atanh(1 - 2 lam) / (1 - 2 lam)), by its Taylor series near lam = 1/2 where it is 0/0."""
    u = 1.0 - 2.0 * lam
    near = ops.abs(u) < 1e-2
    safe = ops.where(near, ops.cast(0.25, lam.dtype), lam)  # keeps the far branch (and its gradient) finite
    far = ops.log((ops.log1p(-safe) - ops.log(safe)) / (1.0 - 2.0 * safe))  # 2 atanh(u) = log((1 - lam) / lam)
    taylor = math.log(2.0) + u**2 / 3.0 + 13.0 * u**4 / 90.0
    return ops.where(near, taylor, far)


def _gaussian(x, mean, log_scale):
    log_scale = ops.maximum(log_scale, MIN_LOG_SCALE)
    return -0.5 * math.log(2 * math.pi) - log_scale - 0.5 * ops.square((x - mean) * ops.exp(-log_scale))


def _logistic(x, mean, log_scale):
    log_scale = ops.maximum(log_scale, MIN_LOG_SCALE)
    inverse_scale = ops.exp(-log_scale)
    centred = x - mean
    upper = inverse_scale * (centred + HALF_BIN)
    lower = inverse_scale * (centred - HALF_BIN)
    log_cdf_upper = upper - ops.softplus(upper)  # log sigmoid(upper): the first bin, (-inf, 1/510]
    log_survival_lower = -ops.softplus(lower)  # log(1 - sigmoid(lower)): the last bin, [1 - 1/510, inf)
    # Above the location both sigmoids near 1 cancel in float32: there the same mass, from their complements.
    mass = ops.where(centred > 0, ops.sigmoid(-lower) - ops.sigmoid(-upper), ops.sigmoid(upper) - ops.sigmoid(lower))
    middle = inverse_scale * centred  # where the bin's mass underflows: its density at the centre times its width
    log_density = middle - log_scale - 2.0 * ops.softplus(middle) - math.log(LEVELS)
    inner = ops.where(mass > 1e-5, ops.log(ops.maximum(mass, 1e-12)), log_density)
    return ops.where(x < HALF_BIN, log_cdf_upper, ops.where(x > 1.0 - HALF_BIN, log_survival_lower, inner))


def _logistic_black(x, mean, log_scale):
    """log p of each pixel (the channels' axis summed away): the black point mass, weight 1 - pi, mixed with the
    channels' discretised logistics, weight pi; `mean` holds the C locations, then pi's logit."""
    channels = x.shape[-1]
    logit = mean[..., channels]
    lit = ops.sum(_logistic(x, mean[..., :channels], log_scale), axis=-1) - ops.softplus(-logit)  # log pi + log p
    black = ops.all(x < HALF_BIN, axis=-1)
    return ops.where(black, ops.logaddexp(-ops.softplus(logit), lit), lit)


_PER_PIXEL = {
    "bernoulli": _bernoulli,
    "continuous-bernoulli": _continuous_bernoulli,
    "gaussian": _gaussian,
    "logistic": _logistic,
    "logistic-black": _logistic_black,
}
