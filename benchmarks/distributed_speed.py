"""Seconds per training epoch on one device, on 2 devices of one process, and in 2 processes, side by side.

    python benchmarks/distributed_speed.py [--presets mlp conv] [--epochs 3] [--rounds 2]

Every row is `vaelab train` on the full 60,000 MNIST images, batch 100 (the global batch), the test
set evaluated after each epoch, in fresh processes:
- 1 process, 1 device (the default), on all cores, and pinned to one core (`taskset -c 0`);
- 1 process, 2 devices (`--devices 2`: the CPU split into two XLA devices), on all cores;
- 2 processes on 127.0.0.1, one core each (`taskset -c 0` and `-c 1`), joined by gloo.
s/epoch is the median, over the rounds, of the median of the epochs after the first (which compiles),
as process 0 timed them in history.csv. The configurations alternate within each round, so that a
machine that speeds up or slows down affects all of them alike.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import TRAIN_IMAGES, table

from vaelab.run import machine

CONFIGS = {
    "1 process, 1 device, all cores": {"devices": 1, "processes": 1, "pin": False},
    "1 process, 1 device, 1 core": {"devices": 1, "processes": 1, "pin": True},
    "1 process, 2 devices, all cores": {"devices": 2, "processes": 1, "pin": False},
    "2 processes, 1 core each": {"devices": 1, "processes": 2, "pin": True},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(preset: str, epochs: int, devices: int, processes: int, pin: bool, out: Path) -> list[float]:
    """Trains once; returns the seconds of each epoch after the first."""
    base = [sys.executable, "-m", "vaelab", "train", "--preset", preset, "--epochs", str(epochs)]
    base += ["--devices", str(devices), "--out", str(out), "--overwrite"]
    port = free_port()
    procs = []
    for i in range(processes):
        cmd = list(base)
        if processes > 1:
            cmd += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes), "--process-id", str(i)]
            cmd[cmd.index("--out") + 1] = str(out if i == 0 else out.with_name(f"{out.name}-p{i}"))
        if pin:
            cmd = ["taskset", "-c", str(i % os.cpu_count()), *cmd]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{preset} {devices} devices x {processes} processes failed:\n{err[-2000:]}")
    with open(out / "history.csv") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["mlp", "conv"])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not counted")
    parser.add_argument("--rounds", type=int, default=2, help="how many times each configuration runs")
    args = parser.parse_args()

    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for preset in args.presets:
                for name, how in CONFIGS.items():
                    seconds = run(preset, args.epochs, out=Path(tmp) / "run", **how)
                    results.setdefault((preset, name), []).append(statistics.median(seconds))
                    print(f"round {r + 1}: {preset}, {name}: {statistics.median(seconds):.2f} s/epoch", file=sys.stderr)

    print(f"machine: {machine()}; {args.epochs} epochs per run (first not counted), {args.rounds} rounds\n")
    rows = []
    for preset in args.presets:
        base = statistics.median(results[(preset, next(iter(CONFIGS)))])
        for name in CONFIGS:
            values = results[(preset, name)]
            s = statistics.median(values)
            rows.append(
                [
                    preset,
                    name,
                    f"{s:.2f}",
                    f"{min(values):.2f}–{max(values):.2f}",
                    f"{TRAIN_IMAGES / s:,.0f}",
                    f"{base / s:.2f}x",
                ]
            )
    print(table(["preset", "where", "s/epoch", "range over rounds", "images/s", "speed vs 1 device"], rows))


if __name__ == "__main__":
    main()
