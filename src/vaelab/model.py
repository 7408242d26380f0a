"""The names `vaelab.model` has always given, now kept in `vaelab.models` (the family) and `vaelab.networks`.

Import from here or from there: `build_models`, `Models`, `VAE`, `Sampling`, the loss terms are the same objects.
"""

from __future__ import annotations

from vaelab.models import MODELS, Models, build_models, parameter_count
from vaelab.models.vae import VAE, bernoulli_log_likelihood, kl_loss, reconstruction_loss
from vaelab.networks import Binarize, FixedLogVariance, LogScale, Sampling

__all__ = [
    "MODELS",
    "VAE",
    "Binarize",
    "FixedLogVariance",
    "LogScale",
    "Models",
    "Sampling",
    "bernoulli_log_likelihood",
    "build_models",
    "kl_loss",
    "parameter_count",
    "reconstruction_loss",
]
