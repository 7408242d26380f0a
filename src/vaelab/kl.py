"""The Kullback-Leibler divergence between two normal distributions: question 2 of the exercise.

    KL(N(mu1, s1^2) || N(mu2, s2^2)) = log(s2 / s1) + (s1^2 + (mu1 - mu2)^2) / (2 s2^2) - 1/2

The derivation is in docs/kl-divergence.md. This is the one KL function of vaelab: the VAE loss, the
tests and the `vaelab kl` command all call it.
"""

from __future__ import annotations

from keras import ops


def gaussian_kl(mu1, log_var1, mu2=0.0, log_var2=0.0):
    """KL(N(mu1, exp(log_var1)) || N(mu2, exp(log_var2))) in nats, elementwise.

    Variances are given as logs, as the encoder's `z_log_var` is; with the defaults the second
    distribution is the prior N(0, 1), and the result is -1/2 (1 + log_var1 - mu1^2 - exp(log_var1)).
    """
    return 0.5 * (
        (log_var2 - log_var1) + ops.exp(log_var1 - log_var2) + ops.square(mu1 - mu2) * ops.exp(-log_var2) - 1.0
    )
