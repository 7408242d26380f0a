"""The Kullback-Leibler divergence between two normal distributions: question 2 of the exercise.

    KL(N(mu1, s1^2) || N(mu2, s2^2)) = log(s2 / s1) + (s1^2 + (mu1 - mu2)^2) / (2 s2^2) - 1/2

The derivation is in resources/kl-divergence.md (the report embeds it; so does the docs site). This is the one KL
function of vaelab: the VAE loss, the tests and the `vaelab kl` command all call it.
"""

from __future__ import annotations

import contextlib
import math
import sys

import keras
import numpy as np
from keras import ops

from vaelab.errors import VaelabError


def gaussian_kl(mu1, log_var1, mu2=0.0, log_var2=0.0):
    """KL(N(mu1, exp(log_var1)) || N(mu2, exp(log_var2))) in nats, elementwise.

    Variances are given as logs, as the encoder's `z_log_var` is; with the defaults the second
    distribution is the prior N(0, 1), and the result is -1/2 (1 + log_var1 - mu1^2 - exp(log_var1)).
    """
    # (mu1 - mu2)^2 / s2^2 written as ((mu1 - mu2) / s2)^2, so equal means give 0 even where 1 / s2^2 overflows
    return 0.5 * (
        (log_var2 - log_var1) + ops.exp(log_var1 - log_var2) + ops.square((mu1 - mu2) * ops.exp(-0.5 * log_var2)) - 1.0
    )


def gaussian_kl_float64(mu1, log_var1, mu2=0.0, log_var2=0.0) -> np.ndarray:
    """`gaussian_kl` evaluated in float64 on NumPy inputs (JAX computes in float32 unless 64-bit mode is on)."""
    args = [np.asarray(a, np.float64) for a in (mu1, log_var1, mu2, log_var2)]
    with float64_ops(), np.errstate(over="ignore", invalid="ignore"):  # beyond float64 the answer is inf, no warning
        return np.asarray(ops.convert_to_numpy(gaussian_kl(*args)), dtype=np.float64)


def gaussian_kl_sigmas(mu1, sigma1, mu2, sigma2) -> np.ndarray:
    """KL(N(mu1, sigma1^2) || N(mu2, sigma2^2)) in float64, the distributions given by standard deviations.

    For the CLI, the report and the tests: question 2 is posed with sigmas.
    """
    log_var1, log_var2 = (2 * np.log(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    return gaussian_kl_float64(mu1, log_var1, mu2, log_var2)


def check_normals(mu1: float, sigma1: float, mu2: float, sigma2: float) -> None:
    """A one-line error unless N(mu1, sigma1^2) and N(mu2, sigma2^2) are normal distributions float64 computes
    with: finite means, and standard deviations no smaller than the smallest normal float64."""
    if not all(math.isfinite(v) for v in (mu1, sigma1, mu2, sigma2)):
        raise VaelabError("MU1 SIGMA1 MU2 SIGMA2 must be finite numbers")
    if sigma1 <= 0 or sigma2 <= 0:
        raise VaelabError("SIGMA1 and SIGMA2 are standard deviations and must be > 0")
    if min(sigma1, sigma2) < sys.float_info.min:
        raise VaelabError(f"SIGMA1 and SIGMA2 must be at least {sys.float_info.min:.3g}, the smallest normal float64")


def kl_by_integration(mu1: float, sigma1: float, mu2: float, sigma2: float, points: int = 20001) -> float:
    """The definition, integrated numerically: E_P[log p(X) - log q(X)] by Simpson's rule.

    With x = mu1 + sigma1 * t the integrand is the standard normal density times a quadratic in t,
    so the grid t in [-40, 40] covers all of P's mass that float64 can see.
    """
    t = np.linspace(-40.0, 40.0, points)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # beyond float64 the result says nan or inf
        x = mu1 + sigma1 * t
        log_ratio = np.log(sigma2 / sigma1) - 0.5 * t**2 + 0.5 * ((x - mu2) / sigma2) ** 2
        f = np.exp(-0.5 * t**2) / math.sqrt(2 * math.pi) * log_ratio
        h = t[1] - t[0]
        return float(h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))


def float64_ops():
    """A context in which keras.ops compute float64 NumPy inputs in float64 (JAX's 64-bit mode; other backends do)."""
    if keras.backend.backend() != "jax":
        return contextlib.nullcontext()
    import jax

    return jax.enable_x64(True) if hasattr(jax, "enable_x64") else jax.experimental.enable_x64()
