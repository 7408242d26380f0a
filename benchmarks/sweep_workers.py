"""How many training processes a local sweep should run at once: wall time of one grid with W workers.

    python benchmarks/sweep_workers.py [--workers 1 2] [--epochs 2] [--rounds 2]

Runs the same 4-point MLP grid (latent_dim 2, 10 x beta 1, 4; full MNIST; K = 20 on 2,000 test
images) into a fresh directory with each worker count in turn, alternating, `--rounds` times, and
prints the wall time of each sweep (training, evaluation and process start-up included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from vaelab.run import machine
    from vaelab.sweep import sweep

    times: dict[int, list[float]] = {w: [] for w in args.workers}
    for _ in range(args.rounds):
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                points = sweep({"latent_dim": [2, 10], "beta": [1.0, 4.0]}, Path(tmp) / "sweep",
                               fixed={"epochs": args.epochs}, samples=20, images=2000, workers=workers,
                               log=lambda msg: None)  # fmt: skip
                times[workers].append(time.perf_counter() - started)
                assert all(p.status == "done" for p in points), [p.error for p in points]
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d')}; other work may have been running\n")
    rows = [[str(w), " ".join(f"{t:.0f}" for t in ts), f"{statistics.median(ts):.0f}"] for w, ts in times.items()]
    print(table(["workers", "wall s per sweep (each round)", "median"], rows))


if __name__ == "__main__":
    main()
