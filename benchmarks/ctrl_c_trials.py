"""Early Ctrl-C trials: start `vaelab train`, send SIGINT after a delay, print how the command ended.

    python benchmarks/ctrl_c_trials.py [--rounds 2] [--delays 0.1 0.5 1 2 5]

Each round sends one Ctrl-C per delay, alternately through `python -m vaelab` and the console script
beside this Python (where installed). A trial is right when the command ends with status 130 and one
line that says it was interrupted, no traceback; or with 0 when the training had already ended.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = ["train", "--preset", "mlp", "--train-subset", "2000", "--test-subset", "500", "--epochs", "40"]


def trial(command: list[str], delay: float, out: Path) -> tuple[int, float, str]:
    """(exit status, seconds from the signal to the end, stderr's last line) of one interrupted training."""
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen([*command, *TRAIN, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    lines = stderr.strip().splitlines()
    if "Traceback" in stderr or "Exception ignored" in stderr:
        return proc.returncode, time.monotonic() - sent, "a traceback"
    return proc.returncode, time.monotonic() - sent, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--delays", type=float, nargs="+", default=[0.1, 0.2, 0.35, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0])
    args = parser.parse_args()
    script = Path(sys.executable).with_name("vaelab")
    entries = {"python -m vaelab": [sys.executable, "-m", "vaelab"]}
    if script.exists():
        entries["console script"] = [str(script)]
    print("| SIGINT after | entry | exit status | ended after the signal | stderr's last line |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds * len(args.delays)):
            delay = args.delays[i % len(args.delays)]
            name = list(entries)[i % len(entries)]
            status, after, last = trial(entries[name], delay, Path(tmp) / f"R{i}")
            print(f"| {delay:.2f} s | {name} | {status} | {after:.2f} s | {last[:90]} |", flush=True)


if __name__ == "__main__":
    main()
