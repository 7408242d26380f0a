"""Latent diagnostics: which dimensions of z carry information about the images, and how much.

- Activity of dimension j (Burda et al., 2015, section 5.2): A_j = Cov_x(E_{q(z|x)}[z_j]), the
  variance over the test images of the encoder's mean `z_mean[:, j]` (population variance, over
  every image evaluated). The unit is *active* when A_j > 0.01: its code moves with the image.
  An inactive unit has collapsed to the prior; the decoder learns to ignore it.
- KL per dimension: KL(q(z_j|x) || N(0, 1)), averaged over the test images; the dimensions' values
  sum to the KL term of the ELBO. A collapsed unit has a KL near 0.
- Traversal: one latent dimension at a time swept over `TRAVERSAL_VALUES`, the others at the prior's
  mean 0, decoded: what each dimension draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaelab.models.kl import gaussian_kl_float64
from vaelab.run import Run

ACTIVITY_THRESHOLD = 0.01  # Burda et al.'s threshold on A_j
TRAVERSAL_VALUES = np.linspace(-2.5, 2.5, 11)  # ±2.5 prior standard deviations, 0 in the middle


@dataclass(frozen=True)
class LatentDiagnostics:
    """Per latent dimension: activity A_j and mean KL, over the images encoded."""

    activity: np.ndarray  # (latent_dim,) A_j = variance of z_mean[:, j] over the images
    kl_per_dim: np.ndarray  # (latent_dim,) mean of KL(q(z_j|x) || N(0, 1)) in nats

    @property
    def active(self) -> np.ndarray:
        """(latent_dim,) bool: A_j > 0.01."""
        return self.activity > ACTIVITY_THRESHOLD

    @property
    def active_units(self) -> int:
        return int(self.active.sum())


def latent_diagnostics(z_mean: np.ndarray, z_log_var: np.ndarray) -> LatentDiagnostics:
    """The diagnostics of codes (n, latent_dim): the encoder's z_mean and z_log_var for n images."""
    z_mean = np.asarray(z_mean, np.float64)
    return LatentDiagnostics(
        activity=z_mean.var(axis=0),
        kl_per_dim=gaussian_kl_float64(z_mean, z_log_var).mean(axis=0),
    )


def traversal(run: Run, values: np.ndarray = TRAVERSAL_VALUES) -> np.ndarray:
    """Decodes each latent dimension swept over `values`, the others at 0: (latent_dim, len(values), H, W[, C])."""
    dim = run.config.model.latent_dim
    z = np.zeros((dim, len(values), dim), np.float32)
    z[np.arange(dim), :, np.arange(dim)] = values
    images = run.decode(z.reshape(-1, dim))
    return images.reshape(dim, len(values), *images.shape[1:])
