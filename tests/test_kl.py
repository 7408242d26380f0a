"""Question 2: vaelab's one Gaussian-KL function against the definition, integrated numerically."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, stats

from vaelab.models.kl import gaussian_kl, gaussian_kl_float64, gaussian_kl_sigmas, kl_by_integration


def quad_kl(mu1: float, s1: float, mu2: float, s2: float) -> float:
    """The definition integrated with SciPy's adaptive quadrature, in log space so tails do not underflow."""

    def integrand(x: float) -> float:
        logp = stats.norm.logpdf(x, mu1, s1)
        return math.exp(logp) * (logp - stats.norm.logpdf(x, mu2, s2))

    value, _ = integrate.quad(integrand, mu1 - 40 * s1, mu1 + 40 * s1, points=[mu1], epsabs=0, epsrel=1e-12, limit=500)
    return value


def random_parameter_sets(n: int = 60) -> list[tuple[float, float, float, float]]:
    rng = np.random.default_rng(2018)
    sets = []
    for _ in range(n):
        mu1, mu2 = rng.uniform(-20, 20, 2)
        s1, s2 = np.exp(rng.uniform(-4, 4, 2))  # sigmas from 0.02 to 55: very unequal variances
        sets.append((float(mu1), float(s1), float(mu2), float(s2)))
    sets += [(0.0, 1.0, 100.0, 1.0), (-50.0, 0.01, 50.0, 100.0), (0.0, 100.0, 0.0, 0.01), (3.0, 1e-3, 3.0, 1e3)]
    return sets


@pytest.mark.parametrize("params", random_parameter_sets())
def test_closed_form_matches_numerical_integration_to_1e_8(params):
    closed = float(gaussian_kl_sigmas(*params))
    assert closed == pytest.approx(quad_kl(*params), rel=1e-8)
    assert closed == pytest.approx(kl_by_integration(*params), rel=1e-8)


def test_closed_form_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    for mu1, s1, mu2, s2 in [(0.0, 1.0, 1.0, 2.0), (2.0, 0.5, -1.0, 1.5), (0.0, 3.0, 0.5, 1.0)]:
        x = rng.normal(mu1, s1, 2_000_000)
        samples = stats.norm.logpdf(x, mu1, s1) - stats.norm.logpdf(x, mu2, s2)
        standard_error = samples.std() / math.sqrt(len(x))
        assert abs(samples.mean() - gaussian_kl_sigmas(mu1, s1, mu2, s2)) < 5 * standard_error


def test_zero_when_p_equals_q_and_never_negative():
    rng = np.random.default_rng(1)
    mu, sigma = rng.uniform(-10, 10, 1000), np.exp(rng.uniform(-5, 5, 1000))
    np.testing.assert_array_equal(gaussian_kl_sigmas(mu, sigma, mu, sigma), 0.0)
    mu2, sigma2 = rng.uniform(-10, 10, 1000), np.exp(rng.uniform(-5, 5, 1000))
    assert (gaussian_kl_sigmas(mu, sigma, mu2, sigma2) >= 0).all()
    near = gaussian_kl_sigmas(mu, sigma * (1 + 1e-6), mu, sigma)
    assert (near >= 0).all()


def test_vae_special_cases():
    mu, sigma = np.array([0.3, -1.2]), np.array([0.5, 2.0])
    np.testing.assert_allclose(
        gaussian_kl_sigmas(mu, sigma, 0.0, 1.0), 0.5 * (mu**2 + sigma**2 - 1 - np.log(sigma**2)), rtol=1e-14
    )
    np.testing.assert_allclose(gaussian_kl_sigmas(mu, 1.0, 0.0, 1.0), 0.5 * mu**2, rtol=1e-14)  # part (f)


def test_the_second_distribution_defaults_to_the_prior():
    mu, log_var = np.array([0.3, -1.2, 0.0]), np.array([-0.7, 1.1, 0.0])
    prior = -0.5 * (1 + log_var - mu**2 - np.exp(log_var))
    np.testing.assert_allclose(gaussian_kl_float64(mu, log_var), prior, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(gaussian_kl(mu, log_var)), prior, rtol=1e-6)


def test_float64_versions_keep_float64_precision_for_float32_inputs():
    # Near q = p the KL is a small difference of O(1) terms: float32 arithmetic would lose most of its digits.
    log_var = np.float32(1e-3)
    x = float(log_var)
    expected = 0.5 * (math.expm1(x) - x)  # KL(N(0, e^x) || N(0, 1)), without cancellation
    assert gaussian_kl_float64(np.float32(0.0), log_var).dtype == np.float64
    assert float(gaussian_kl_float64(np.float32(0.0), log_var)) == pytest.approx(expected, rel=1e-9, abs=0)
    # All four in float32: no float64 operand would promote the others if they were not converted first.
    all_float32 = [np.float32(0.0), log_var, np.float32(0.0), np.float32(0.0)]
    assert float(gaussian_kl_float64(*all_float32)) == pytest.approx(expected, rel=1e-9, abs=0)
    sigma = np.float32(1.001)
    s = float(sigma)
    expected = 0.5 * (s * s - 1) - math.log(s)
    assert float(gaussian_kl_sigmas(0.0, sigma, 0.0, np.float32(1.0))) == pytest.approx(expected, rel=1e-9, abs=0)


@pytest.mark.parametrize("params", [(0.0, 1e300, 0.0, 1e-300), (0.0, 1.0, 1e300, 1.0), (0.0, 5e-324, 0.0, 1e308)])
def test_integration_beyond_float64_says_so_without_warnings(params):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow, 0 * inf and log(0) must not warn: the result says it
        value = kl_by_integration(*params)
    assert not math.isfinite(value)


def test_kl_command_prints_the_closed_form_and_the_check(vaelab):
    result = vaelab("kl", "0", "1", "1", "2", "--check")
    assert result.returncode == 0, result.stderr
    assert "0.44314718055994" in result.stdout  # log 2 + (1 + 1) / 8 - 1/2
    assert "numerical integration" in result.stdout
    bad = vaelab("kl", "0", "0", "1", "2")
    assert bad.returncode == 2 and "must be > 0" in bad.stderr and "Traceback" not in bad.stderr
