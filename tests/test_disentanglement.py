"""The disentanglement metrics (vaelab.analysis.disentanglement) on codes whose answers are known: an encoder that
reads the
factors out exactly, one that ignores them, and one that rotates two of them, computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaelab.analysis import disentanglement as dis
from vaelab.data.dataset import Factors

N = 10_000


def _levels(seed: int = 0, k: int = 3, levels: int = 10) -> np.ndarray:
    """K independent factors (n, K), each uniform over `levels` values."""
    return np.random.default_rng(seed).integers(0, levels, (N, k)).astype(np.float64)


def _factors(values: np.ndarray, categorical=None) -> Factors:
    k = values.shape[1]
    return Factors(values, tuple(f"f{i}" for i in range(k)), tuple(categorical or (False,) * k))


def test_an_encoder_that_reads_the_factors_out_scores_one():
    values = _levels()
    codes = np.concatenate([3 * values[:, ::-1] - 7, np.zeros((N, 2))], axis=1)  # permuted, scaled, two dead codes
    result = dis.disentanglement(codes, _factors(values))
    assert result.mig > 0.98
    assert result.dci_disentanglement == pytest.approx(1.0, abs=1e-9)
    assert result.dci_completeness == pytest.approx(1.0, abs=1e-9)
    assert result.dci_informativeness > 0.99
    assert result.factorvae_score == 1.0
    assert result.sap > 0.99
    assert np.argmax(np.asarray(result.dci_importance), axis=0).tolist() == [2, 1, 0]


def test_categorical_factors_read_out_exactly_score_one():
    values = np.stack([np.random.default_rng(1).integers(0, 5, N), np.random.default_rng(2).integers(0, 8, N)], 1)
    result = dis.disentanglement(values.astype(float), _factors(values.astype(float), (True, True)))
    assert result.mig > 0.99
    assert result.dci_disentanglement == pytest.approx(1.0)
    assert result.sap > 0.99  # the nearest class mean is exact; chance (1/C) scores 0
    assert result.factorvae_score == 1.0


def test_an_encoder_that_ignores_the_factors_scores_zero():
    values = _levels()
    codes = np.random.default_rng(5).standard_normal((N, 6))
    result = dis.disentanglement(codes, _factors(values))
    assert result.mig < 0.01
    assert result.dci_disentanglement == 0.0  # the lasso gives every code exactly zero weight
    assert result.dci_completeness == 0.0
    assert result.dci_informativeness == 0.0
    assert result.sap < 0.01
    assert result.factorvae_score == pytest.approx(1 / 3, abs=0.05)  # chance: one of three factors


def _rotated(theta: float, seed: int = 3) -> tuple[np.ndarray, Factors]:
    values = np.random.default_rng(seed).standard_normal((N, 2))
    c, s = math.cos(theta), math.sin(theta)
    return values @ np.array([[c, s], [-s, c]]), _factors(values)


def _by_hand(theta: float) -> float:
    """D (= C, by symmetry) of a rotation by theta: the lasso on standardised, uncorrelated codes soft-thresholds the
    least-squares weights |cos|, |sin| by alpha, so each code's importance is (cos - alpha, sin - alpha)."""
    alpha = dis.lasso_alpha(N // 2)
    r = np.array([math.cos(theta) - alpha, max(math.sin(theta) - alpha, 0)])
    p = r / r.sum()
    p = p[p > 0]
    return 1 + float((p * np.log2(p)).sum())


@pytest.mark.parametrize("degrees", [0, 15, 30, 45])
def test_a_rotated_encoder_scores_what_the_hand_computation_says(degrees):
    theta = math.radians(degrees)
    codes, factors = _rotated(theta)
    result = dis.disentanglement(codes, factors)
    assert result.dci_disentanglement == pytest.approx(_by_hand(theta), abs=0.01)
    assert result.dci_completeness == pytest.approx(_by_hand(theta), abs=0.01)
    assert result.dci_informativeness > 0.99  # a rotation loses nothing: the factors are linear in the codes


def test_mig_falls_as_the_rotation_mixes_the_factors():
    migs = [dis.disentanglement(*_rotated(math.radians(d))).mig for d in (0, 15, 30, 45)]
    assert migs[0] > 0.95
    assert migs[0] > migs[1] > migs[2] > migs[3]
    assert migs[3] < 0.02  # at 45 degrees both codes know each factor equally: no gap


def test_dci_scores_of_hand_made_importance_matrices():
    assert dis.dci_scores(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert dis.dci_scores(np.ones((3, 3))) == pytest.approx((0.0, 0.0))
    assert dis.dci_scores(np.zeros((3, 2))) == (0.0, 0.0)
    # one code predicts both factors equally, the other nothing: D = 0, C = 1 (each factor has one code)
    assert dis.dci_scores(np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx((0.0, 1.0))
    # codes 1 and 2 share factor 1, code 3 alone predicts factor 2: every code serves one factor (D = 1); factor 1
    # is spread over two of three codes, C_1 = 1 - H_3(1/2, 1/2) = 1 - log 2 / log 3, and C_2 = 1
    d, c = dis.dci_scores(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    assert d == pytest.approx(1.0) and c == pytest.approx((1 - math.log(2) / math.log(3) + 1) / 2)
    assert dis.dci_scores(np.array([[1.0, 0.0], [1.0, 0.0]]))[1] == 0.0  # factor 2, predicted by none, counts 0


def test_the_lasso_soft_thresholds_least_squares_on_an_orthogonal_design():
    x = np.linalg.qr(np.random.default_rng(0).standard_normal((400, 3)))[0] * math.sqrt(400)  # x'x / n = I
    w_true = np.array([[0.9], [-0.3], [0.01]])
    w = dis.lasso(x, x @ w_true, 0.05)
    assert w[:, 0] == pytest.approx([0.85, -0.25, 0.0], abs=1e-8)


def test_mutual_information_of_copies_is_the_entropy():
    a = np.random.default_rng(0).integers(0, 4, 1000)
    p = np.bincount(a) / len(a)
    assert dis.mutual_information(a, a) == pytest.approx(-(p * np.log(p)).sum())
    assert dis.mutual_information(a, np.zeros_like(a)) == 0.0


def test_a_constant_factor_is_left_out_of_mig():
    values = _levels()
    values[:, 1] = 4.0
    result = dis.disentanglement(values.copy(), _factors(values))
    assert math.isnan(result.mig_per_factor[1]) and result.mig > 0.98


def test_ten_thousand_images_take_seconds():
    values = _levels(k=5)
    codes = np.random.default_rng(0).standard_normal((N, 10))
    result = dis.disentanglement(codes, _factors(values))
    assert result.seconds < 30  # a shared 2-core machine; about 2 s alone (docs/disentanglement.md)


def test_collapsed_dimensions_are_left_out_and_all_collapsed_scores_zero():
    values = _levels()
    wobble = values @ np.array([[1e-3], [2e-3], [0.0]])  # a collapsed code that still follows the factors, faintly
    result = dis.disentanglement(np.concatenate([wobble, np.zeros((N, 2))], 1), _factors(values))
    assert result.active == 0
    assert (result.mig, result.dci_disentanglement, result.dci_completeness, result.factorvae_score, result.sap) == (
        0.0, 0.0, 0.0, 0.0, 0.0
    )  # fmt: skip
    exact = dis.disentanglement(np.concatenate([values, wobble], 1), _factors(values))
    assert exact.active == 3 and exact.dci_disentanglement == pytest.approx(1.0)
