"""`vaelab report`: train (or reuse) the exercise's three networks and write the report answering it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vaelab.cli._args import add_data_options, image_keywords, path, positive_int, sampler_spec
from vaelab.cli.settings import add_settings, given


def register(sub) -> None:
    from vaelab.config import REPORT_IWAE_SAMPLES

    p = sub.add_parser("report", help="train (or reuse) the exercise's three networks and write the report")
    add_settings(p, "report", only=("epochs",))
    p.add_argument("--out", type=path, default=Path("report"), help="report directory (default: report)")
    p.add_argument("--runs-dir", type=path, default=Path("runs"), help="where the runs live (default: runs)")
    p.add_argument(
        "--iwae-samples",
        type=positive_int,
        default=REPORT_IWAE_SAMPLES,
        metavar="K",
        help=f"importance samples per test image for the log-likelihood bound (default: {REPORT_IWAE_SAMPLES})",
    )
    add_settings(p, "report", skip=("epochs",))
    p.add_argument(
        "--sampler",
        type=sampler_spec,
        default="prior",
        metavar="prior|gmm[:K]",
        help="where the sample grids draw z: the prior (default), or a K-component mixture fitted to each run's "
        "training codes (saved in the run as gmm.npz)",
    )
    add_data_options(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Trains (or reuses) mlp, mlp-fixed-var and conv (convnet for other images; a vqvae has no mlp-fixed-var) and
    writes the report answering the exercise."""
    from vaelab.report.exercise import report

    started = time.perf_counter()
    settings = {name: value for name, value in given(args, "report").items() if value is not None}
    index = report(
        dataset=args.dataset or "mnist",
        out=args.out,
        runs_dir=args.runs_dir,
        iwae_samples=args.iwae_samples,
        **image_keywords(args),
        sampler=str(args.sampler),
        **settings,  # None keeps report's default (make_config's)
    )
    print(f"report written to {index} and {index.with_name('report.md')} in {time.perf_counter() - started:.0f} s")
    return 0
