"""A vqvae's evaluation on the test set: the bound on log p(x) under the uniform prior over its codes, and code usage.

q(z|x) is a point mass on z_q(x), the nearest codebook vectors, and the prior p(z) is uniform over the K^L code
combinations, so KL(q || p) = L log K exactly and

    log p(x) >= log p(x|z_q(x)) - L log K        (`elbo`)

The importance-weighted bound with any number of samples draws the same z_q every time, so it equals the ELBO:
`iwae` holds the same number, and `samples` is 1. There is nothing random to estimate. The Gaussian latent
diagnostics (active units, KL per dimension) mean nothing here; code usage replaces them: how many of the K
vectors the test images use, and the perplexity of their frequencies.

With a learned prior over the codes (`vaelab.analysis.code_prior`, code_prior.npz in the run), the bound with it
stands beside the uniform one: KL(q || p) = -log p(z_q(x)), so

    log p(x) >= log p(x|z_q(x)) + log p(z_q(x))        (`prior_elbo`)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from keras import ops

from vaelab import _interrupt
from vaelab.analysis.code_prior import load_prior
from vaelab.data import Dataset, test_images
from vaelab.models.likelihoods import bits_per_dim, end_pixels, log_likelihood
from vaelab.run import Run

IMAGES_PER_CALL = 1000
SAMPLES = 1  # the samples an evaluation records: q is a point mass, so one sample gives the bound exactly


@dataclass(frozen=True)
class CodeEvaluation:
    """A vqvae's test-set figures in nats per image; the bounds are negative, the losses positive."""

    images: int
    samples: int  # SAMPLES
    binarized: bool
    likelihood: str  # p(x|z) of the bounds (vaelab.models.likelihoods)
    bound: str  # "log p(x), uniform prior over codes": what elbo and iwae bound
    elbo: float  # log p(x|z_q(x)) - L log K
    reconstruction_loss: float  # -log p(x|z_q(x))
    kl_loss: float  # L log K, KL(one-hot q || uniform prior), the same for every image
    elbo_at_mean: float  # the elbo: z_q is the code itself
    reconstruction_loss_at_mean: float
    iwae: float  # the elbo again: every importance sample is z_q
    nll: float  # -iwae
    bits_per_dim: float | None
    elbo_bits_per_dim: float | None
    seconds: float
    codes_per_image: int  # L
    codebook_size: int  # K
    codes_used: int  # codebook vectors any test image's codes use
    perplexity: float  # exp of the entropy of the codes' frequencies over the test images: K if all used alike
    prior_elbo: float | None = None  # log p(x|z_q(x)) + log p(z_q(x)) under the learned prior; None without one
    prior_kl: float | None = None  # -log p(z_q(x)) under the learned prior, KL(one-hot q || it), averaged


def evaluate_codes(run: Run, data: Dataset, *, images: int | None = None, progress=None) -> CodeEvaluation:
    """Evaluates the vqvae `run` on the first `images` test images (default: all)."""
    model = run.config.model
    x_all = test_images(data, binarized=run.config.train.binarize)[:images]
    n, started = len(x_all), time.perf_counter()
    log_px, codes = np.empty(n), np.empty((n, model.latent_dim), np.int64)
    for start in range(0, n, IMAGES_PER_CALL):
        _interrupt.check("evaluation interrupted; metrics.json is unchanged")
        x = np.asarray(x_all[start : start + IMAGES_PER_CALL], np.float32)
        out = run.vae.predict_on_batch(x)
        ll = log_likelihood(model.pixel_likelihood, x, out["x_decoded_mean"], out.get("x_log_scale"))
        log_px[start : start + len(x)] = ops.convert_to_numpy(ll)
        codes[start : start + len(x)] = np.asarray(out["codes"])
        if progress is not None:
            progress(start + len(x), n)
    kl = model.latent_dim * math.log(model.codebook_size)
    elbo = float(np.mean(log_px)) - kl
    prior, learned = load_prior(run), {}
    if prior is not None:
        log_pz = prior.log_prob(codes)
        learned = {"prior_elbo": float(np.mean(log_px + log_pz)), "prior_kl": float(-np.mean(log_pz))}
    counts = code_counts(codes, model.codebook_size)
    shape, likelihood = model.input_shape, model.pixel_likelihood
    code_length = {"binarized": run.config.train.binarize, "end_pixels": end_pixels(x_all)}
    return CodeEvaluation(
        images=n,
        samples=SAMPLES,
        binarized=run.config.train.binarize,
        likelihood=likelihood,
        bound=model.bound,
        elbo=elbo,
        reconstruction_loss=float(-np.mean(log_px)),
        kl_loss=kl,
        elbo_at_mean=elbo,
        reconstruction_loss_at_mean=float(-np.mean(log_px)),
        iwae=elbo,
        nll=-elbo,
        bits_per_dim=bits_per_dim(-elbo, shape, likelihood, **code_length),
        elbo_bits_per_dim=bits_per_dim(-elbo, shape, likelihood, **code_length),
        seconds=round(time.perf_counter() - started, 2),
        codes_per_image=model.latent_dim,
        codebook_size=model.codebook_size,
        codes_used=int(np.count_nonzero(counts)),
        perplexity=usage_perplexity(counts),
        **learned,
    )


def code_counts(codes: np.ndarray, k: int) -> np.ndarray:
    """How often each of the `k` codebook vectors occurs among `codes` (any shape): (k,) integers."""
    return np.bincount(np.asarray(codes).ravel(), minlength=k)


def usage_perplexity(counts: np.ndarray) -> float:
    """exp of the entropy of the codebook vectors' frequencies `counts`: K if all K are used alike, 1 for one."""
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def describe(result: CodeEvaluation) -> list[str]:
    """The lines `vaelab evaluate` prints for a vqvae."""
    length, k = result.codes_per_image, result.codebook_size
    learned = (
        [f"  with the learned prior     {result.prior_elbo:9.2f} nats = -(reconstruction "
         f"{result.reconstruction_loss:.2f} + KL {result.prior_kl:.2f} = -log p(z_q), code_prior.npz)"]
        if result.prior_elbo is not None
        else []
    )  # fmt: skip
    return [
        f"  {result.bound} >= ELBO = IWAE bound (q is one point) {result.elbo:9.2f} nats, i.e. NLL <= {result.nll:.2f}",
        f"    = -(reconstruction {result.reconstruction_loss:.2f} + KL {result.kl_loss:.2f} = {length} log {k})",
        *([] if result.bits_per_dim is None else [f"  bits per dimension         {result.bits_per_dim:9.4f}"]),
        *learned,
        f"  codes used                 {result.codes_used:9d} of {k} (perplexity {result.perplexity:.1f})",
    ]
