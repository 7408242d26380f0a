"""`vaelab kl`: question 2 of the exercise, the KL divergence of two normal distributions."""

from __future__ import annotations

import argparse
import re


def register(sub) -> None:
    p = sub.add_parser("kl", help="question 2: KL(N(MU1, SIGMA1^2) || N(MU2, SIGMA2^2)) in closed form")
    # argparse takes "-1e3" for an option; let negative numbers in any float notation through as values
    p._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)
    for name in ("mu1", "sigma1", "mu2", "sigma2"):
        p.add_argument(name, type=float, metavar=name.upper())
    p.add_argument("--check", action="store_true", help="also integrate the definition numerically")
    p.set_defaults(func=cmd_kl)


def cmd_kl(args: argparse.Namespace) -> int:
    """Question 2: the KL divergence of two normal distributions, in closed form (and checked numerically)."""
    import math

    from vaelab.models.kl import check_normals, gaussian_kl_sigmas, kl_by_integration

    values = (args.mu1, args.sigma1, args.mu2, args.sigma2)
    check_normals(*values)
    kl = float(gaussian_kl_sigmas(*values))
    print(f"KL(N({args.mu1:g}, {args.sigma1:g}^2) || N({args.mu2:g}, {args.sigma2:g}^2))")
    print("  = log(sigma2/sigma1) + (sigma1^2 + (mu1 - mu2)^2) / (2 sigma2^2) - 1/2")
    print(f"  = {kl!r} nats (closed form)")
    if args.check:
        numeric = kl_by_integration(*values)
        if math.isfinite(numeric) and math.isfinite(kl):
            diff = abs(numeric - kl) / max(abs(kl), 1e-300)
            print(f"  = {numeric!r} nats (numerical integration of the definition; relative difference {diff:.1e})")
        else:
            print("  (the numerical integration cannot represent this case in float64: no check)")
    return 0
