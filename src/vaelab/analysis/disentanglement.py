"""Disentanglement metrics: how well a code z (n, d) separates known factors of variation v (n, K).

Every function here is NumPy over two arrays: `codes` (n, d), one row per image (vaelab uses the encoder's
mean, z_mean), and `factors` (n, K), row k the generative factors of image k (`Factors`). A factor is
categorical (shape, colour: its numbers are labels) or ordinal (size, position: its numbers are values).

    MIG     Mutual Information Gap (Chen et al., 2018): per factor, the gap between the two codes that share
            most information with it, over its entropy; the mean over factors. 0 (no code stands out) to 1.
    DCI     Disentanglement, Completeness, Informativeness (Eastwood & Williams, 2018) from an importance
            matrix R (d, K): D = how much each code matters to one factor only, C = how much each factor is
            captured by one code only (both 1 - entropy of a row or column of R, base K or d), I = how well
            the codes predict the factors on held-out images.
    FactorVAE score (Kim & Mnih, 2018): fix one factor, take L images that share its value, find the code
            dimension (scaled by its spread over all images) that varies least; a majority-vote classifier
            from that dimension to the factor; its accuracy on fresh votes. 1/K (chance) to 1.
    SAP     Separated Attribute Predictability (Kumar et al., 2018): per factor, the gap between the two codes
            that best predict it alone, each on its own; the mean over factors. 0 to 1.

The estimators, and how many samples each uses:

    MIG     the mean codes discretised into `BINS` equal-width bins per dimension, each factor into its own
            values (an ordinal factor with more than `MAX_LEVELS` values into `BINS` equal-width bins), then the
            plug-in mutual information of the histograms over all n images (the estimator of Locatello et al.,
            2019, used by disentanglement_lib; Chen et al. estimate it from q(z|x) by sampling instead).
    DCI     R from lasso regressions (Eastwood & Williams' linear choice; the paper also uses random forests):
            codes and targets standardised, one regression per target, R_jk = |w_jk|; a categorical factor
            is regressed as one indicator per class, its R the mean of theirs. Fitted on the first half of
            the images, I = the held-out R^2 = 1 - NRMSE^2 (mean over a categorical factor's indicators,
            clipped at 0) on the second half. The lasso's strength is `lasso_alpha(n)`: a weight of four
            standard errors of a chance correlation, so codes that carry nothing get exactly zero weight.
    FactorVAE  L = `VOTE_SIZE` images a vote (disentanglement_lib's batch size, Locatello et al., 2019),
            `TRAIN_VOTES` votes to fit the classifier, `EVAL_VOTES` to score it, all drawn from the
            n images given (each dimension scaled by its standard deviation over them); a vote's L images are
            drawn with replacement from those sharing the value.
    SAP     S_jk from each code alone, over all n images: the R^2 of a line for an ordinal factor (Pearson's
            r squared), the balanced accuracy of the nearest class mean for a categorical one, rescaled
            so that chance (1/C for C classes) is 0 and a perfect prediction 1.

A code dimension whose standard deviation over the images is under `COLLAPSED` (the prior's is 1) has collapsed
to the prior: it is left out of all four (every estimator above is blind to a dimension's scale, so its wobble
would count as signal); with every dimension collapsed all four are 0.

With n = 10,000 images and d = 10 codes the four take seconds in all (docs/disentanglement.md has a timing).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from vaelab.data.dataset import Factors

BINS = 20  # equal-width bins a code (and a continuous factor) is cut into for MIG: disentanglement_lib's choice
MAX_LEVELS = 64  # an ordinal factor with up to this many values keeps them as its bins (dSprites' largest has 40)
VOTE_SIZE = 64  # images that share a factor's value in one FactorVAE vote (disentanglement_lib's batch)
TRAIN_VOTES, EVAL_VOTES = 10_000, 5_000  # votes to fit, then to score, the majority-vote classifier
COLLAPSED = 0.05  # a code dimension with a standard deviation under this has collapsed (disentanglement_lib's)
LASSO_SE = 4.0  # the lasso's strength in standard errors of a chance correlation (see lasso_alpha)
LASSO_SWEEPS = 1000  # coordinate-descent sweeps at most; they stop when no weight moves by 1e-10
SEED = 0  # the FactorVAE votes' draws: the same score every time for the same codes


@dataclass(frozen=True)
class Disentanglement:
    """The four metrics of one code on `images` images with known factors; per-factor figures in `factors` order."""

    images: int
    factors: tuple[str, ...]
    active: int  # code dimensions scored: those whose standard deviation over the images is at least COLLAPSED
    mig: float
    mig_per_factor: tuple[float, ...]
    dci_disentanglement: float
    dci_completeness: float
    dci_informativeness: float
    dci_importance: tuple[tuple[float, ...], ...]  # R (d, K): how much code j matters to predicting factor k
    factorvae_score: float
    sap: float
    sap_per_factor: tuple[float, ...]
    seconds: float

    def record(self) -> dict:
        """As metrics.json stores it, with the estimators' settings."""
        settings = {"bins": BINS, "vote_size": VOTE_SIZE, "train_votes": TRAIN_VOTES, "eval_votes": EVAL_VOTES,
                    "collapsed": COLLAPSED, "lasso_alpha": lasso_alpha(self.images - self.images // 2)}  # fmt: skip
        return {**asdict(self), "settings": settings}


def disentanglement(codes: np.ndarray, factors: Factors) -> Disentanglement:
    """All four metrics of `codes` (n, d) against `factors` (their values (n, K))."""
    started = time.perf_counter()
    codes = np.asarray(codes, np.float64)
    values = np.asarray(factors.values, np.float64)
    if codes.ndim != 2 or values.shape[0] != codes.shape[0]:
        raise ValueError(f"codes {codes.shape} and factors {values.shape} must have one row per image")
    cat = factors.categorical
    active = codes.std(axis=0) >= COLLAPSED  # a collapsed dimension's tiny wobble, rescaled, would look like signal
    k_count = values.shape[1]
    importance = np.zeros((codes.shape[1], k_count))
    if active.any():
        kept = codes[:, active]
        mig_k = mig_per_factor(kept, values, cat)
        importance[active], informativeness = dci_importance(kept, values, cat)
        sap_k = sap_per_factor(kept, values, cat)
        vote = factorvae_score(kept, values, cat)
    else:
        mig_k = sap_k = informativeness = np.zeros(k_count)
        vote = 0.0
    d, c = dci_scores(importance)
    return Disentanglement(
        images=len(codes),
        factors=factors.names,
        active=int(active.sum()),
        mig=_mean(mig_k),
        mig_per_factor=tuple(float(m) for m in mig_k),
        dci_disentanglement=d,
        dci_completeness=c,
        dci_informativeness=float(np.mean(informativeness)),
        dci_importance=tuple(tuple(float(r) for r in row) for row in importance),
        factorvae_score=vote,
        sap=_mean(sap_k),
        sap_per_factor=tuple(float(s) for s in sap_k),
        seconds=round(time.perf_counter() - started, 3),
    )


def _mean(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else math.nan


# --- discretising ----------------------------------------------------------------------------------------


def discretise(x: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Each column of x (n, m) as bin numbers 0..bins-1 of `bins` equal-width bins over its range."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    return np.clip(((x - lo) / width).astype(np.int64), 0, bins - 1)


def factor_levels(values: np.ndarray, categorical: tuple[bool, ...]) -> np.ndarray:
    """Each factor (n, K) as level numbers 0..L-1: its own distinct values when categorical or when it has at most
    `MAX_LEVELS` of them, else `BINS` equal-width bins."""
    out = np.empty(values.shape, np.int64)
    for k in range(values.shape[1]):
        distinct, levels = np.unique(values[:, k], return_inverse=True)
        if categorical[k] or len(distinct) <= MAX_LEVELS:
            out[:, k] = levels
        else:
            out[:, k] = discretise(values[:, k : k + 1])[:, 0]
    return out


def _entropy(levels: np.ndarray) -> float:
    p = np.bincount(levels) / len(levels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """The plug-in mutual information (nats) of two level arrays (n,) of non-negative integers."""
    rows, cols = int(a.max()) + 1, int(b.max()) + 1
    joint = np.bincount(a * cols + b, minlength=rows * cols).reshape(rows, cols) / len(a)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


# --- MIG -----------------------------------------------------------------------------------------------------


def mig_per_factor(codes: np.ndarray, values: np.ndarray, categorical: tuple[bool, ...]) -> np.ndarray:
    """(K,): (I(z_a; v_k) - I(z_b; v_k)) / H(v_k) for the two codes a, b most informative about factor k; NaN for a
    factor that does not vary."""
    z = discretise(codes)
    v = factor_levels(values, categorical)
    out = np.full(v.shape[1], math.nan)
    for k in range(v.shape[1]):
        h = _entropy(v[:, k])
        if h == 0:
            continue
        mi = np.sort([mutual_information(z[:, j], v[:, k]) for j in range(z.shape[1])])[::-1]
        out[k] = (mi[0] - (mi[1] if len(mi) > 1 else 0.0)) / h
    return out


# --- DCI -----------------------------------------------------------------------------------------------------


def lasso_alpha(n: int) -> float:
    """The lasso's strength for n training images: `LASSO_SE` standard errors (1/sqrt(n)) of the correlation between
    two independent standardised variables, so that a code unrelated to a target gets exactly zero weight."""
    return LASSO_SE / math.sqrt(max(n, 1))


def lasso(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Weights W (d, T) minimising ||y - x W||^2 / 2n + alpha |W|_1 for standardised x (n, d), y (n, T): coordinate
    descent on the Gram matrix, every target at once."""
    n, d = x.shape
    gram, cov = x.T @ x / n, x.T @ y / n
    w = np.zeros((d, y.shape[1]))
    for _ in range(LASSO_SWEEPS):
        moved = 0.0
        for j in range(d):
            if gram[j, j] == 0:
                continue
            rho = cov[j] - gram[j] @ w + gram[j, j] * w[j]
            new = np.sign(rho) * np.maximum(np.abs(rho) - alpha, 0) / gram[j, j]
            moved = max(moved, float(np.abs(new - w[j]).max()))
            w[j] = new
        if moved < 1e-10:
            break
    return w


def _standardise(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    sd = ref.std(axis=0)
    return (a - ref.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _targets(values: np.ndarray, categorical: tuple[bool, ...]) -> tuple[np.ndarray, list[int]]:
    """The regression targets (n, T): an ordinal factor as itself, a categorical one as one indicator per class;
    and which factor each target belongs to."""
    columns, owner = [], []
    for k in range(values.shape[1]):
        if categorical[k]:
            for level in np.unique(values[:, k]):
                columns.append((values[:, k] == level).astype(np.float64))
                owner.append(k)
        else:
            columns.append(values[:, k])
            owner.append(k)
    return np.stack(columns, 1), owner


def dci_importance(
    codes: np.ndarray, values: np.ndarray, categorical: tuple[bool, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """R (d, K), the lasso's |weights| fitted on the first half of the images, and each factor's informativeness
    (K,): R^2 on the second half (the mean over a categorical factor's indicators; at least 0)."""
    n = len(codes)
    half = n - n // 2
    targets, owner = _targets(values, categorical)
    z_fit, t_fit = codes[:half], targets[:half]
    x_fit, x_held = _standardise(z_fit, z_fit), _standardise(codes[half:], z_fit)
    y_fit, y_held = _standardise(t_fit, t_fit), _standardise(targets[half:], t_fit)
    w = lasso(x_fit, y_fit, lasso_alpha(half))
    err = ((x_held @ w - y_held) ** 2).mean(0)
    held_var = y_held.var(0)
    r2 = np.where(held_var > 0, 1 - err / np.where(held_var > 0, held_var, 1), 0.0)
    owner_ = np.asarray(owner)
    k_count = values.shape[1]
    importance = np.stack([np.abs(w[:, owner_ == k]).mean(1) for k in range(k_count)], 1)
    informativeness = np.array([np.clip(r2[owner_ == k], 0, 1).mean() for k in range(k_count)])
    return importance, informativeness


def dci_scores(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness of an importance matrix R (d, K), as Eastwood & Williams define them:

        D = sum_j rho_j (1 - H_K(P_j.)),  P_jk = R_jk / sum_k R_jk,  rho_j = sum_k R_jk / sum_jk R_jk
        C = (1/K) sum_k (1 - H_d(P~_.k)),  P~_jk = R_jk / sum_j R_jk

    H_K is the entropy in base K. A code of zero importance has no weight in D; a factor no code predicts has
    completeness 0. Both are 0 when nothing is important.
    """
    r = np.asarray(importance, np.float64)
    d, k = r.shape
    total = r.sum()
    if total == 0:
        return 0.0, 0.0

    def one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
        if base == 1:
            return np.ones(p.shape[0])
        logs = np.log(np.where(p > 0, p, 1.0))
        return 1 + (p * logs).sum(1) / math.log(base)

    rows = r.sum(1)
    p_rows = r / np.where(rows > 0, rows, 1.0)[:, None]
    disentangled = float((rows / total * one_minus_entropy(p_rows, k)).sum())
    cols = r.sum(0)
    p_cols = (r / np.where(cols > 0, cols, 1.0)).T
    complete = float(np.where(cols > 0, one_minus_entropy(p_cols, d), 0.0).mean())
    return disentangled, complete


# --- FactorVAE score -------------------------------------------------------------------------------------------


def factorvae_score(codes: np.ndarray, values: np.ndarray, categorical: tuple[bool, ...], seed: int = SEED) -> float:
    """The accuracy of Kim & Mnih's majority-vote classifier on `EVAL_VOTES` fresh votes (see the module's docstring);
    0 when every dimension has collapsed."""
    sd = codes.std(axis=0)
    active = sd >= COLLAPSED
    if not active.any():
        return 0.0
    scaled = (codes[:, active] / sd[active]).astype(np.float32)  # float32: the gathered votes take half the memory
    levels = factor_levels(values, categorical)
    n, k_count = levels.shape
    varying = [k for k in range(k_count) if levels[:, k].max() > 0]  # a constant factor cannot be voted on
    if not varying:
        return math.nan
    # per factor: the images sorted by its level, and where each level's run starts and how long it is
    order = np.argsort(levels, axis=0, kind="stable")
    width = int(levels.max()) + 1
    counts = np.stack([np.bincount(levels[:, k], minlength=width) for k in range(k_count)])  # (K, levels)
    starts = np.cumsum(counts, axis=1) - counts
    rng = np.random.default_rng(seed)

    def votes(count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` votes: the factor fixed, and the dimension that varied least among L images sharing its value
        (the value that of a random image: the factor's distribution over the images)."""
        factor = rng.choice(varying, size=count)
        level = levels[rng.integers(0, n, count), factor]
        run_start, run_length = starts[factor, level], counts[factor, level]
        within = (rng.random((count, VOTE_SIZE)) * run_length[:, None]).astype(np.int64)
        images = order[run_start[:, None] + within, factor[:, None]]
        return scaled[images].var(axis=1).argmin(axis=1), factor

    dims, factor = votes(TRAIN_VOTES)
    table = np.zeros((scaled.shape[1], k_count), np.int64)
    np.add.at(table, (dims, factor), 1)
    classify = table.argmax(1)
    dims, factor = votes(EVAL_VOTES)
    return float(np.mean(classify[dims] == factor))


# --- SAP -----------------------------------------------------------------------------------------------------------


def sap_scores(codes: np.ndarray, values: np.ndarray, categorical: tuple[bool, ...]) -> np.ndarray:
    """S (d, K): how well code j alone predicts factor k (R^2 of a line; a categorical factor: the balanced accuracy
    of the nearest class mean, chance-corrected: (a - 1/C) / (1 - 1/C), 0 at chance, at least 0)."""
    d, k_count = codes.shape[1], values.shape[1]
    s = np.zeros((d, k_count))
    for k in range(k_count):
        v = values[:, k]
        if categorical[k]:
            classes, y = np.unique(v, return_inverse=True)
            counts = np.bincount(y)
            for j in range(d):
                z = codes[:, j]
                means = np.bincount(y, weights=z) / counts
                predicted = np.abs(z[:, None] - means[None, :]).argmin(1)
                balanced = np.mean(np.bincount(y, weights=predicted == y, minlength=len(classes)) / counts)
                s[j, k] = max(0.0, (balanced - 1 / len(classes)) / (1 - 1 / len(classes)))  # chance 0, exact 1
        elif v.std() > 0:
            zc = codes - codes.mean(0)
            vc = v - v.mean()
            denom = np.sqrt((zc**2).sum(0) * (vc**2).sum())
            s[:, k] = np.where(denom > 0, (zc.T @ vc) / np.where(denom > 0, denom, 1), 0.0) ** 2
    return s


def sap_per_factor(codes: np.ndarray, values: np.ndarray, categorical: tuple[bool, ...]) -> np.ndarray:
    """(K,): the gap between the two largest entries of each column of `sap_scores`."""
    s = np.sort(sap_scores(codes, values, categorical), axis=0)[::-1]
    return s[0] - (s[1] if len(s) > 1 else 0.0)


# --- a run ---------------------------------------------------------------------------------------------------------


def no_factors(data) -> str:
    """The one-line error for data without known factors."""
    return (
        f"{data.title} has no known factors of variation, so its codes cannot be scored for disentanglement; use "
        "--dataset shapes or dsprites, or an .npz with a `factors` array (one row per test image)"
    )


def score_run(run, data, *, images: int | None = None) -> Disentanglement:
    """The four metrics of `run`'s codes (z_mean) of the first `images` test images (default all) of `data`."""
    from vaelab.data import test_images
    from vaelab.errors import VaelabError

    if data.factors is None:
        raise VaelabError(no_factors(data))
    if not run.config.model.member.gaussian_latent:
        raise VaelabError(
            f"{run.name} is a {run.config.model.family}: its codes are codebook indices, not coordinates to score"
        )
    x = test_images(data, binarized=run.config.train.binarize)[:images]
    labels = data.y_test[: len(x)] if run.config.model.conditional else None
    z_mean, _ = run.encode(x, labels=labels)
    return disentanglement(z_mean, data.factors[: len(x)])


def score_and_save(run, data, *, images: int | None = None) -> Disentanglement:
    """`score_run`, then writes the result into the run's metrics.json under "disentanglement"."""
    from vaelab._lock import DirectoryLock
    from vaelab.run import update_metrics

    with DirectoryLock(run.path, "disentanglement"):
        result = score_run(run, data, images=images)
        run.metrics = update_metrics(run.path, disentanglement=result.record())
    return result


def describe(result: Disentanglement | dict) -> list[str]:
    """The metrics as lines for the terminal."""
    r = result.record() if isinstance(result, Disentanglement) else result
    per = "  ".join(f"{name} {m:.2f}" for name, m in zip(r["factors"], r["mig_per_factor"], strict=True))
    return [
        f"  disentanglement on {r['images']:,} test images with known factors ({', '.join(r['factors'])}):",
        f"  MIG                        {r['mig']:9.3f} (per factor: {per})",
        f"  DCI                        {r['dci_disentanglement']:9.3f} disentanglement, "
        f"{r['dci_completeness']:.3f} completeness, {r['dci_informativeness']:.3f} informativeness (held-out R^2)",
        f"  FactorVAE score            {r['factorvae_score']:9.3f} (chance {1 / len(r['factors']):.2f})",
        f"  SAP                        {r['sap']:9.3f}",
    ]
