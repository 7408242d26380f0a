"""The priors p(z) of the family, and the Gaussian log density they and the bounds are written with.

    StandardNormal  N(0, I): the vae's, iwae's, cvae's and betatc's
    VampMixture     (1/N) sum_n N(z; mu_n, diag(sigma_n^2)), (mu_n, log sigma_n^2) the encoder's codes of the
                    N pseudo-inputs: the vamp's (vaelab.models.vamp)

A trained model gives its prior, with its current weights, as `Models.prior()`: evaluation takes log p(z) from
it (`log_density`, float64) and `vaelab generate` draws from it (`sample`). Training computes the same densities
in `keras.ops` (`log_normal`, `log_mixture_density`; the mixture's in JAX on that backend, tested against its
keras.ops form); the float64 ones compute the same densities in NumPy (the mixture's with its squared distances
expanded into matrix products; tested against scipy).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from vaelab.models.kl import gaussian_kl_float64

LOG_2PI = math.log(2 * math.pi)
# Rows x components per slice of the mixture's float64 density: bounds its memory (~130 MB).
MIXTURE_ELEMENTS = 1 << 24
# A VampPrior component with log sigma^2 below this in some dimension has its density computed from differences, not
# from the expanded square (`VampMixture.log_density`): the expansion's rounding error grows as 1/sigma^2.
SHARP_LOG_VAR = -12.0
# Components per step of the training density on JAX (`_mixture_jax`): a vamp's step took as long with 5 to 50.
COMPONENTS_PER_STEP = 20


def log_normal(z, mean=0.0, log_var=0.0):
    """log N(z; mean, diag(exp(log_var))) summed over the last axis, in nats: the defaults give the prior N(0, I)."""
    return -0.5 * ops.sum(LOG_2PI + log_var + ops.square((z - mean) * ops.exp(-0.5 * log_var)), axis=-1)


def log_mixture_density(z, means, log_vars):
    """log (1/N) sum_n N(z; means[n], diag(exp(log_vars[n]))) in nats: z (..., d), means and log_vars (N, d) -> (...).

    The sum over the N components is a log-sum-exp of each component's density, from the differences z - mean
    (never the expanded squares: see `VampMixture.log_density`). On the JAX backend it runs as `_mixture_jax`, the
    same sums a few components at a time with the gradient written out: a vamp's whole training step (batch 100,
    500 components, 40 dimensions) took 17.4 ms instead of 31.0 (`benchmarks/dense_step.py --network tomczak`, Intel
    Xeon, one core). Elsewhere, and as the reference it is tested against, `_log_mixture_density_ops`.
    """
    if keras.backend.backend() == "jax":
        flat = ops.reshape(z, (-1, z.shape[-1]))
        return ops.reshape(_mixture_jax()(flat, means, log_vars), ops.shape(z)[:-1])
    return _log_mixture_density_ops(z, means, log_vars)


def _log_mixture_density_ops(z, means, log_vars):
    """`log_mixture_density` in keras.ops, differentiated by the backend: its memory is z's size times N."""
    components = log_normal(z[..., None, :], means, log_vars)  # (..., N)
    return ops.logsumexp(components, axis=-1) - math.log(means.shape[0])


@functools.cache
def _mixture_jax():
    """`log_mixture_density` of z (B, d) as a `jax.custom_vjp` that visits the components COMPONENTS_PER_STEP at a
    time (`lax.map` and `lax.scan`), so that no (B, N, d) array is made: XLA compiled the broadcasts over all N at
    once into slow loops, forward and (autodiff's sums over the codes) backward.

    Its gradient, with g the incoming gradient (B,), r (B, N) each code's responsibilities (the components'
    posterior weights), s = g r and p = exp(-log_vars):
        d/dz        = -sum_n s (z - mu) p
        d/dmeans    =  p sum_b s (z - mu)
        d/dlog_vars = (p sum_b s (z - mu)^2 - sum_b s) / 2
    """
    import jax
    import jax.numpy as jnp

    def in_steps(a):  # (N, ...) -> (steps, COMPONENTS_PER_STEP, ...), padded with zeros (components of weight 0)
        pad = -a.shape[0] % COMPONENTS_PER_STEP
        a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a
        return a.reshape(-1, COMPONENTS_PER_STEP, *a.shape[1:])

    def forward(z, means, log_vars):
        def densities(step):  # (C, B): log N(z; mu_n, sigma_n^2) of these C components
            mean, log_var = step
            scaled = (z - mean[:, None]) * jnp.exp(-0.5 * log_var)[:, None]  # (C, B, d)
            return -0.5 * (jnp.sum(LOG_2PI + log_var, -1)[:, None] + jnp.sum(jnp.square(scaled), -1))

        n = means.shape[0]
        components = jax.lax.map(densities, (in_steps(means), in_steps(log_vars))).reshape(-1, z.shape[0])[:n].T
        total = jax.nn.logsumexp(components, axis=-1)
        responsibilities = jnp.exp(components - total[:, None])  # (B, N)
        return total - math.log(n), (z, means, log_vars, responsibilities)

    def backward(saved, g):
        z, means, log_vars, responsibilities = saved

        def gradients(dz, step):
            mean, precision, s = step  # (C, d), (C, d), (C, B)
            diff = z - mean[:, None]  # (C, B, d)
            dz = dz - jnp.einsum("cb,cbd->bd", s, diff * precision[:, None])
            dmean = precision * jnp.einsum("cb,cbd->cd", s, diff)
            dlog_var = 0.5 * (precision * jnp.einsum("cb,cbd->cd", s, jnp.square(diff)) - jnp.sum(s, -1)[:, None])
            return dz, (dmean, dlog_var)

        n, d = means.shape
        steps = (in_steps(means), in_steps(jnp.exp(-log_vars)), in_steps((g[:, None] * responsibilities).T))
        dz, (dmeans, dlog_vars) = jax.lax.scan(gradients, jnp.zeros_like(z), steps)
        return dz, dmeans.reshape(-1, d)[:n], dlog_vars.reshape(-1, d)[:n]

    density = jax.custom_vjp(lambda z, means, log_vars: forward(z, means, log_vars)[0])
    density.defvjp(forward, backward)
    return density


def _log_normal_float64(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """`log_normal` in NumPy float64, from the differences z - mean."""
    return -0.5 * np.sum(LOG_2PI + log_var + ((z - mean) * np.exp(-0.5 * log_var)) ** 2, axis=-1)


@dataclass(frozen=True)
class StandardNormal:
    """p(z) = N(0, I) on `latent_dim` dimensions."""

    latent_dim: int
    name: str = "N(0, I)"

    def log_density(self, z: np.ndarray) -> np.ndarray:
        """log p(z) in float64 nats: z (..., latent_dim) -> (...)."""
        z = np.asarray(z, np.float64)
        return -0.5 * np.sum(z**2 + LOG_2PI, axis=-1)

    components = 1  # a mixture of one: `at` ignores `pick`

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws (n, latent_dim), float32."""
        return rng.standard_normal((n, self.latent_dim)).astype(np.float32)

    def at(self, noise: np.ndarray, pick: np.ndarray) -> np.ndarray:
        """The draws that standard-normal `noise` (n, latent_dim) gives: the noise itself, float32."""
        return np.asarray(noise, np.float32)

    def kl(self, z_mean: np.ndarray, z_log_var: np.ndarray) -> np.ndarray | None:
        """KL(q(z|x) || p(z)) per image in closed form, float64."""
        return np.sum(gaussian_kl_float64(z_mean, z_log_var), axis=1)


@dataclass(frozen=True)
class VampMixture:
    """The VampPrior: the uniform mixture of the posteriors q(z|u_n) of the N pseudo-inputs, (N, d) each."""

    means: np.ndarray
    log_vars: np.ndarray
    name: str = "the VampPrior"

    def log_density(self, z: np.ndarray) -> np.ndarray:
        """log p(z) in float64 nats: z (..., d) -> (...), computed in slices of bounded memory.

        Each component's squared distance, sum_j (z_j - mu_j)^2 / sigma_j^2, is expanded into two matrix products
        with all N components at once (z^2 . 1/sigma^2 and z . mu/sigma^2): the same density as
        `log_mixture_density`, 30 times faster than its (rows, N, d) differences (the K = 5000 evaluation of a
        vamp took over half an hour that way). The expansion subtracts terms of size (z^2 + mu^2) / sigma^2 to get
        one of size (z - mu)^2 / sigma^2: its rounding error grows with 1/sigma^2 (37 nats at log sigma^2 = -40, a
        point drawn from that component), so the components narrower than SHARP_LOG_VAR in any dimension take their
        differences instead (where the expansion's error stays under 1e-6 nats for |z|, |mu| < 10 in 50 dimensions)."""
        z = np.asarray(z, np.float64)
        flat = z.reshape(-1, z.shape[-1])
        means, log_vars = (np.asarray(a, np.float64) for a in (self.means, self.log_vars))
        sharp = log_vars.min(axis=1) < SHARP_LOG_VAR  # (N,)
        wide_means, wide_log_vars = means[~sharp], log_vars[~sharp]
        precision = np.exp(-wide_log_vars)  # (N wide, d)
        scaled_means = (wide_means * precision).T  # (d, N wide)
        # log N(z; mu_n, sigma_n^2) without its z-dependent terms, (N wide,); and the log of the uniform weights
        weight = -math.log(len(means))
        offset = weight - 0.5 * (z.shape[-1] * LOG_2PI + wide_log_vars.sum(1) + (wide_means * scaled_means.T).sum(1))
        rows = max(1, MIXTURE_ELEMENTS // (len(wide_means) + int(sharp.sum()) * z.shape[-1] or 1))
        out = np.empty(len(flat))
        for i in range(0, len(flat), rows):
            part = flat[i : i + rows]
            wide = offset - 0.5 * (part**2 @ precision.T) + part @ scaled_means  # (rows, N wide)
            narrow = weight + _log_normal_float64(part[:, None, :], means[sharp], log_vars[sharp])  # (rows, N sharp)
            components = np.concatenate([wide, narrow], axis=1)
            top = components.max(axis=1, keepdims=True)
            out[i : i + rows] = top[:, 0] + np.log(np.exp(components - top).sum(axis=1))
        return out.reshape(z.shape[:-1])

    @property
    def components(self) -> int:
        """N, the pseudo-inputs."""
        return len(self.means)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws (n, d), float32: a pseudo-input chosen uniformly for each, then z ~ q(z|u_n)."""
        pick = rng.integers(len(self.means), size=n)
        return self.at(rng.standard_normal((n, self.means.shape[1])), pick)

    def at(self, noise: np.ndarray, pick: np.ndarray) -> np.ndarray:
        """The draws that standard-normal `noise` (n, d) gives from the components `pick` (n,): mu + sigma * noise.

        The same noise and picks follow the prior as its pseudo-inputs learn (the training snapshots)."""
        return (self.means[pick] + np.exp(0.5 * self.log_vars[pick]) * noise).astype(np.float32)

    def kl(self, z_mean: np.ndarray, z_log_var: np.ndarray) -> np.ndarray | None:
        """None: a Gaussian's KL from a mixture has no closed form (evaluation estimates it from its samples)."""
        return None
