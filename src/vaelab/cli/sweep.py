"""`vaelab sweep`: train and evaluate a grid of settings, and compare them on one page."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vaelab.cli._args import add_data_options, image_keywords, path, positive_int
from vaelab.cli.settings import add_settings, given, several

# a setting given once where several values make an axis: one --model is a fixed setting (run names as before);
# several are an axis, compared per model
ONE_IS_FIXED = ("model",)


def register(sub) -> None:
    p = sub.add_parser("sweep", help="train and evaluate a grid of settings, and compare them on one page")
    add_settings(p, "sweep")
    p.add_argument(
        "--iwae-samples", type=positive_int, default=100, metavar="K", help="importance samples (default: 100)"
    )
    p.add_argument("--images", type=positive_int, metavar="N", help="evaluate on the first N test images only")
    p.add_argument(
        "--workers", type=positive_int, metavar="W", help="training processes at once (default: one per two cores)"
    )
    p.add_argument(
        "--ray", metavar="auto|ADDRESS", help="run each point as a Ray task on a cluster (pip install 'vaelab[ray]')"
    )
    p.add_argument("--out", type=path, default=Path("sweep"), help="sweep directory (default: sweep)")
    add_data_options(p)
    p.set_defaults(func=cmd_sweep)


def axes_and_fixed(args: argparse.Namespace) -> tuple[dict, dict]:
    """The sweep's axes (the settings given several values) and its fixed settings, by make_config's keywords."""
    axes, fixed = {}, {}
    swept = several("sweep")
    for name, value in given(args, "sweep").items():
        if value is None:
            continue
        if name in swept and name in ONE_IS_FIXED and len(value) == 1:
            fixed[name] = value[0]
        elif name in swept:
            axes[name] = value
        else:
            fixed[name] = value
    return axes, fixed


def cmd_sweep(args: argparse.Namespace) -> int:
    """Trains and evaluates a grid of settings, then writes the comparison page."""
    from vaelab.sweep import sweep

    started = time.perf_counter()
    axes, fixed = axes_and_fixed(args)
    points = sweep(
        axes,
        args.out,
        fixed=fixed,
        dataset=args.dataset or "mnist",
        **image_keywords(args),
        samples=args.iwae_samples,
        images=args.images,
        workers=args.workers,
        ray_address=args.ray,
    )
    print((args.out / "sweep.md").read_text().split("## Every point")[0].strip())
    failed = [p for p in points if p.status != "done"]
    print(f"\nwritten to {args.out / 'index.html'} in {time.perf_counter() - started:.0f} s")
    if failed:
        print(
            f"vaelab sweep: {len(failed)} of {len(points)} points failed ({failed[0].name}: {failed[0].error}); "
            "the others are done; see the table",
            file=sys.stderr,
        )
        return 1
    return 0
