"""Samplers after training: where z comes from when a trained model generates (`vaelab generate --sampler`).

    prior     p(z), the model's own prior: N(0, I), a vamp's VampPrior (vaelab.models.priors)
    gmm[:K]   a Gaussian mixture of K components (default `DEFAULT_COMPONENTS`), full covariances, fitted by EM
              (scikit-learn's GaussianMixture) to the posterior means E[z|x] of the run's training images

The VAE's decoder learns from codes drawn from q(z|x), and the aggregate posterior q(z) = E_x q(z|x) is seldom
the prior: draws from N(0, I) land in holes q(z) never filled, and decode into blurs. A density fitted to the
codes the training images actually have, after training, draws where the decoder learned (Ghosh et al. 2020,
"From variational to deterministic autoencoders", section 4: "ex-post density estimation"; pythae's
GaussianMixtureSampler). It costs one pass of the encoder over the training set and a few seconds of EM.

The fitted mixture is saved in the run directory as `GMM_FILE` (gmm.npz, written atomically; run.py lists it):

    weights       (K,)       the components' weights, summing to 1
    means         (K, d)     their means
    covariances   (K, d, d)  their full covariance matrices
    run_id, epoch            the run and the epoch whose encoder gave the codes: a later epoch, or another run
                             in the same directory (--overwrite), fits it again
    images                   how many training images were encoded (the run's --train-subset, or all)
    seed                     EM's seed (`FIT_SEED`)
    mean_log_likelihood      the fitted mixture's mean log density of those codes, nats per image

Only the mixture's parameters are saved, no pickled scikit-learn object: `GaussianMixture` draws from them in
NumPy, and any later scikit-learn (or none) reads the file.
"""

from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vaelab._files import atomic_path
from vaelab.errors import VaelabError
from vaelab.run import GMM_FILE

if TYPE_CHECKING:
    from vaelab.data import Dataset
    from vaelab.run import Run

DEFAULT_COMPONENTS = 10  # Ghosh et al.'s for MNIST, CIFAR-10 and CelebA alike (one per digit, on MNIST)
MAX_COMPONENTS = 1000  # more than this is a lookup table of the codes rather than a density
FIT_SEED = 0  # EM's k-means start: the same run always gives the same mixture
COVARIANCE_FLOOR = 1e-6  # added to each covariance's diagonal (scikit-learn's reg_covar): a collapsed latent
# dimension (posterior means all equal) leaves the matrices positive definite
ENCODE_CHUNK = 10_000  # training images encoded at a time: the whole set as floats is 4 times its uint8 size


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler as the command line names it: "prior", or "gmm" with its `components` K."""

    kind: str
    components: int = DEFAULT_COMPONENTS

    def __str__(self) -> str:
        return self.kind if self.kind == "prior" else f"gmm:{self.components}"


def parse_sampler(text: str) -> SamplerSpec:
    """`prior`, `gmm` or `gmm:K` -> the SamplerSpec; anything else is a one-line VaelabError."""
    match = re.fullmatch(r"(prior|gmm)(?::(\d+))?", text.strip())
    if not match or (match[1] == "prior" and match[2]):
        raise VaelabError(f"a sampler is prior, gmm or gmm:K (K components, 1 to {MAX_COMPONENTS}); got {text!r}")
    components = int(match[2]) if match[2] else DEFAULT_COMPONENTS
    if not 1 <= components <= MAX_COMPONENTS:
        raise VaelabError(f"gmm:K takes K from 1 to {MAX_COMPONENTS} components, got {components}")
    return SamplerSpec(match[1], components)


@dataclass(frozen=True)
class GaussianMixture:
    """sum_k w_k N(z; mu_k, Sigma_k): weights (K,), means (K, d), covariances (K, d, d), float64."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    @property
    def components(self) -> int:
        return len(self.weights)

    @property
    def name(self) -> str:
        """How a caption names it: "a 10-component GMM of q(z)"."""
        return f"a {self.components}-component GMM of q(z)"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws (n, d), float32: a component k ~ w for each, then z = mu_k + L_k eps with L_k L_k^T = Sigma_k."""
        pick = rng.choice(self.components, size=n, p=self.weights / self.weights.sum())
        noise = rng.standard_normal((n, self.means.shape[1]))
        factors = np.linalg.cholesky(self.covariances)  # (K, d, d), lower
        return (self.means[pick] + np.einsum("nij,nj->ni", factors[pick], noise)).astype(np.float32)

    def log_density(self, z: np.ndarray) -> np.ndarray:
        """log p(z) in float64 nats: z (..., d) -> (...)."""
        z = np.asarray(z, np.float64)
        flat = z.reshape(-1, z.shape[-1])
        factors = np.linalg.cholesky(self.covariances)
        parts = []
        for w, mu, lower in zip(self.weights, self.means, factors, strict=True):
            white = np.linalg.solve(lower, (flat - mu).T)  # L^-1 (z - mu), (d, n)
            log_det = 2 * np.log(np.diag(lower)).sum()
            parts.append(math.log(w) - 0.5 * (np.sum(white**2, 0) + log_det + flat.shape[1] * math.log(2 * math.pi)))
        parts = np.stack(parts)  # (K, n)
        top = parts.max(0)
        return (top + np.log(np.exp(parts - top).sum(0))).reshape(z.shape[:-1])


def fit_gmm(codes: np.ndarray, components: int = DEFAULT_COMPONENTS, seed: int = FIT_SEED) -> GaussianMixture:
    """A `components`-component Gaussian mixture with full covariances fitted by EM to `codes` (n, d)."""
    from sklearn.mixture import GaussianMixture as SklearnMixture

    codes = np.asarray(codes, np.float64)
    if len(codes) < components:
        raise VaelabError(f"a {components}-component mixture needs at least {components} codes; got {len(codes)}")
    fitted = SklearnMixture(components, covariance_type="full", reg_covar=COVARIANCE_FLOOR, random_state=seed)
    fitted.fit(codes)
    return GaussianMixture(fitted.weights_, fitted.means_, fitted.covariances_)


def training_codes(run: Run, data: Dataset) -> np.ndarray:
    """The posterior means E[z|x] (n, d) of the training images the run used (its --train-subset, or all), read as
    the latent map reads the test set (a cvae's with each image's label)."""
    from vaelab.data import scale_pixels

    count = run.config.train.train_subset
    x = data.x_train[:count]
    labels = data.y_train[:count] if run.config.model.conditional else None
    codes = []
    for i in range(0, len(x), ENCODE_CHUNK):
        part = scale_pixels(x[i : i + ENCODE_CHUNK])
        codes.append(run.encode(part, labels=None if labels is None else labels[i : i + ENCODE_CHUNK])[0])
    return np.concatenate(codes).astype(np.float64)


def save_gmm(path: Path, gmm: GaussianMixture, *, run_id: str, epoch: int, images: int, mean_log_likelihood: float):
    """Writes `gmm` and where it came from to path/gmm.npz, atomically (the module docstring lists the arrays)."""
    with atomic_path(Path(path) / GMM_FILE, suffix=".npz") as tmp:
        np.savez(
            tmp,
            weights=gmm.weights,
            means=gmm.means,
            covariances=gmm.covariances,
            run_id=np.asarray(run_id),
            epoch=np.asarray(epoch),
            images=np.asarray(images),
            seed=np.asarray(FIT_SEED),
            mean_log_likelihood=np.asarray(mean_log_likelihood),
        )


def read_gmm(path: Path) -> tuple[GaussianMixture, dict] | None:
    """path/gmm.npz: the mixture and its record (run_id, epoch, images, seed, mean_log_likelihood); None when there
    is none, or when it is damaged (it is fitted again)."""
    file = Path(path) / GMM_FILE
    try:
        with np.load(file, allow_pickle=False) as saved:
            gmm = GaussianMixture(saved["weights"], saved["means"], saved["covariances"])
            record = {k: saved[k].item() for k in ("run_id", "epoch", "images", "seed", "mean_log_likelihood")}
    except FileNotFoundError:
        return None
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    k, d = gmm.means.shape if gmm.means.ndim == 2 else (0, 0)
    if k == 0 or gmm.weights.shape != (k,) or gmm.covariances.shape != (k, d, d):
        return None
    return gmm, record


def gmm_of_run(run: Run, data: Dataset | None = None, components: int = DEFAULT_COMPONENTS, log=None):
    """The run's mixture of `components` components: read from its gmm.npz when that was fitted to this run's
    weights, else fitted to its training codes (`data`, default the run's own) and saved there."""
    gaussian_latent(run, f"gmm:{components}")
    saved = read_gmm(run.path)
    run_id = run.info.get("run_id", "")
    if saved is not None:
        gmm, record = saved
        if (record["run_id"], record["epoch"], gmm.components) == (run_id, run.epoch, components):
            return gmm
    data = data if data is not None else run.load_data()
    if log:
        log(f"vaelab: fitting a {components}-component GMM to {run.name}'s training codes")
    codes = training_codes(run, data)
    gmm = fit_gmm(codes, components)
    mean_ll = float(gmm.log_density(codes).mean())
    save_gmm(run.path, gmm, run_id=run_id, epoch=run.epoch, images=len(codes), mean_log_likelihood=mean_ll)
    return gmm


def sampler(run: Run, spec: str | SamplerSpec = "prior", data: Dataset | None = None, log=None):
    """The distribution `spec` names for `run` (prior, gmm, gmm:K; module docstring), with `sample(n, rng)` and
    `name`: the run's prior, or its mixture (fitted and saved on first use)."""
    spec = parse_sampler(spec) if isinstance(spec, str) else spec
    gaussian_latent(run, str(spec))
    if spec.kind == "prior":
        return run.models.prior()
    return gmm_of_run(run, data, spec.components, log=log)


def gaussian_latent(run: Run, what: str) -> None:
    """A one-line error where `run`'s codes are not points of a Gaussian latent space (a vqvae's indices)."""
    if not run.config.model.member.gaussian_latent:
        todo = "leave out --sampler (its prior is uniform over codes)" if what == "prior" else "use --sampler prior"
        raise VaelabError(
            f"--sampler {what} draws Gaussian codes; {run.name} is a {run.config.model.family}, whose codes are "
            f"codebook indices: {todo}"
        )
