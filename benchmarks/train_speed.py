"""Seconds per training epoch of each preset, per installed Keras backend, printed as a Markdown table.

    python benchmarks/train_speed.py [--presets mlp conv] [--backends jax] [--epochs 4]

Each measurement trains on the full 60,000 MNIST images with `vaelab.train` (batch 100, the test set
as validation, as `vaelab train` does) in a fresh process. s/epoch is the median of the epochs after
the first (which includes compilation); GFLOP/s counts forward and backward FLOPs of the network.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import TRAIN_IMAGES, matmul_peak_gflops, table

from vaelab.run import machine

PRESETS = ["mlp", "mlp-fixed-var", "conv", "conv-fixed-var"]
BACKENDS = ["jax", "tensorflow", "torch"]


def measure(preset: str, backend: str, epochs: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend}
    worker = Path(__file__).parent / "_train_worker.py"
    done = subprocess.run(
        [sys.executable, str(worker), "--preset", preset, "--epochs", str(epochs)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{preset} on {backend} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS, choices=PRESETS)
    parser.add_argument(
        "--backends", nargs="+", default=None, choices=BACKENDS, help="default: every installed backend"
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measurement, the first not timed")
    args = parser.parse_args()
    backends = args.backends or [b for b in BACKENDS if importlib.util.find_spec(b)]

    peak = matmul_peak_gflops()
    print(f"machine: {machine()}; float32 matmul peak {peak:.0f} GFLOP/s\n")
    rows = []
    for preset in args.presets:
        for backend in backends:
            r = measure(preset, backend, args.epochs)
            timed = r["seconds"][1:] or r["seconds"]
            s = statistics.median(timed)
            gflops = r["flops_per_epoch"] / s / 1e9
            rows.append(
                [
                    preset,
                    backend,
                    f"{s:.2f}",
                    f"{min(timed):.2f}–{max(timed):.2f}",
                    f"{TRAIN_IMAGES / s:,.0f}",
                    f"{gflops:.1f}",
                    f"{100 * gflops / peak:.1f}%",
                    f"{r['peak_rss_mb']:.0f}",
                    f"{r['test_loss']:.1f}",
                ]
            )
            print(f"  measured {preset} on {backend}: {s:.2f} s/epoch", file=sys.stderr)
    header = [
        "preset",
        "backend",
        "s/epoch",
        "range",
        "images/s",
        "GFLOP/s",
        "% of peak",
        "peak RSS MB",
        f"test loss after {args.epochs} ep",
    ]
    print(table(header, rows))


if __name__ == "__main__":
    main()
