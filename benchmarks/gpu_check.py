"""vaelab on a GPU, in one call of at most 8 minutes: prepared here, run on the lent device machine.

    python benchmarks/gpu_check.py prepare          # here, with network access to PyPI: fills .gpu-check/
    python benchmarks/gpu_check.py run              # there: writes gpu_check.md and .json under $OUT

The device machine has CUDA, JAX with its CUDA plugin and PyTorch but no Keras and no network, and takes
at most 64 MiB of the checkout's ignored files. `prepare` puts into `.gpu-check/` (ignored by git) the
wheels vaelab needs that the machine lacks (Keras, its namex and optree, optree's typing_extensions,
Markdown, tqdm; optree for CPython 3.11 to 3.13) and MNIST's four IDX files, gzipped (11 MB), which vaelab
reads from `VAELAB_DATA_DIR`.
The `device` tool's call is then

    run(command="python3 benchmarks/gpu_check.py run", carry=[".gpu-check"], timeout_s=540)

`run` installs the wheels into a folder of its own (the machine's JAX stays), then, each step under the
time left: `nvidia-smi`; `vaelab train` mlp and conv for --epochs (s/epoch: the median after the first,
from history.csv); the same networks in plain PyTorch on the same GPU (peer_torch.py --device cuda, eager,
and the conv also torch.compile); `vaelab report` on its defaults, timed whole. A step that fails or runs
out of time is recorded as such and the others still run. Tried on a CPU first with
`run --cpu --epochs 2 --report-args="--epochs 1 --train-subset 2000"` (JAX_PLATFORMS=cpu, the peer on cpu).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREPARED = ROOT / ".gpu-check"
WHEELS = ("keras", "namex", "optree", "typing_extensions", "markdown", "tqdm")
PYTHONS = ("3.11", "3.12", "3.13")
CARRY_LIMIT_MB = 64
IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned bytes, 1 or 3 dimensions


def prepare() -> None:
    wheels = PREPARED / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for python in PYTHONS:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--python-version", python, "--platform", "manylinux2014_x86_64", "--dest", str(wheels), *WHEELS],
            check=True,
        )  # fmt: skip
    sys.path.insert(0, str(ROOT / "src"))
    from vaelab.data import fetch_mnist
    from vaelab.data.idx import IDX_FILES

    data = fetch_mnist(log=print)
    (PREPARED / "data").mkdir(exist_ok=True)
    for key, name in IDX_FILES.items():
        array = getattr(data, key).reshape((-1, 28, 28) if key.startswith("x") else (-1,))
        header = IDX_MAGIC[array.ndim].to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
        (PREPARED / "data" / f"{name}.gz").write_bytes(gzip.compress(header + array.astype("uint8").tobytes(), 6))
    size = sum(f.stat().st_size for f in PREPARED.rglob("*") if f.is_file()) / 2**20
    print(f"{PREPARED}: {size:.1f} MiB (the carry limit is {CARRY_LIMIT_MB} MiB)")
    if size > CARRY_LIMIT_MB:
        raise SystemExit("too large to carry")


class Steps:
    """Runs the check's commands one after another under one deadline, each logged to OUT/NAME.log."""

    def __init__(self, out: Path, env: dict[str, str], budget_s: float):
        self.out, self.env, self.deadline = out, env, time.monotonic() + budget_s
        self.results: dict[str, dict] = {}

    def __call__(self, name: str, command: list[str], limit_s: float) -> str | None:
        left = self.deadline - time.monotonic()
        if left < 10:
            self.results[name] = {"status": "skipped: no time left"}
            return None
        started = time.perf_counter()
        log = self.out / f"{name}.log"
        try:
            done = subprocess.run(
                command, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=min(limit_s, left)
            )
            output, status = done.stdout + done.stderr, "ok" if done.returncode == 0 else f"exit {done.returncode}"
        except subprocess.TimeoutExpired as err:
            output = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
            status = f"timed out after {min(limit_s, left):.0f} s"
        log.write_text(f"$ {shlex.join(command)}\n{output}")
        self.results[name] = {"status": status, "wall_s": round(time.perf_counter() - started, 1)}
        print(f"{name}: {status}, {self.results[name]['wall_s']} s", flush=True)
        return output if status == "ok" else None


def seconds_per_epoch(seconds: list[float]) -> float | None:
    later = seconds[1:] or seconds
    return round(statistics.median(later), 3) if later else None


def run(args: argparse.Namespace) -> None:
    out = Path(os.environ.get("OUT", "gpu-check-out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    site = Path(tempfile.mkdtemp(prefix="vaelab-gpu-site-"))  # not under $OUT: that folder is copied back
    env = dict(os.environ, KERAS_BACKEND="jax", VAELAB_DATA_DIR=str(PREPARED / "data"))
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT / "src")])
    if args.cpu:
        env["JAX_PLATFORMS"] = "cpu"
    step = Steps(out, env, args.budget)
    if shutil.which("nvidia-smi"):
        step("nvidia-smi", ["nvidia-smi"], 20)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(site)]
    step("install", [*pip, "--find-links", str(PREPARED / "wheels"), *WHEELS], 120)
    probe = (
        "import importlib\n"
        "for name in ('jax', 'keras', 'torch'):\n"
        "    try: print(name, importlib.import_module(name).__version__, end='; ')\n"
        "    except ImportError: print(name, 'missing', end='; ')\n"
        "import jax; print(jax.devices())"
    )
    versions = step("versions", [sys.executable, "-c", probe], 120)

    vaelab = [sys.executable, "-m", "vaelab"]
    train = {}
    for preset in ("mlp", "conv"):
        run_dir = out / "runs" / preset
        if step(f"train-{preset}", [*vaelab, "train", "--preset", preset, "--epochs", str(args.epochs),
                                    "--no-snapshots", "--overwrite", "--out", str(run_dir)], 150):  # fmt: skip
            with open(run_dir / "history.csv", newline="") as history:
                train[preset] = seconds_per_epoch([float(row["seconds"]) for row in csv.DictReader(history)])
    peer = {}
    device = "cpu" if args.cpu else "cuda"
    for arch, compiled in (("mlp", False), ("conv", False), ("conv", True)):
        name = f"peer-{arch}" + ("-compile" if compiled else "")
        command = [sys.executable, str(ROOT / "benchmarks" / "peer_torch.py"), "--arch", arch, "--device", device,
                   "--epochs", str(args.epochs), *(["--compile"] if compiled else [])]  # fmt: skip
        if output := step(name, command, 150):
            line = json.loads(output.strip().splitlines()[-1])
            peer[name] = {"s_per_epoch": seconds_per_epoch(line["seconds"]), "device": line.get("device")}
    report_dir = out / "report-run"
    step("report", [*vaelab, "report", "--out", str(report_dir / "report"), "--runs-dir", str(report_dir / "runs"),
                    *shlex.split(args.report_args)], 330)  # fmt: skip

    summary = {"versions": (versions or "").strip().splitlines()[-1:], "train_s_per_epoch": train,
               "peer": peer, "steps": step.results}  # fmt: skip
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = [f"| vaelab (Keras 3 + JAX) {p} | {s} |" for p, s in train.items()]
    rows += [f"| plain PyTorch {n.removeprefix('peer-')} | {v['s_per_epoch']} |" for n, v in peer.items()]
    report = step.results.get("report", {})
    table = "\n".join(["| what | s/epoch |", "|---|---|", *rows])
    (out / "gpu_check.md").write_text(
        f"{' '.join(summary['versions'])}\n\n{table}\n\n`vaelab report {args.report_args}`: "
        f"{report.get('status', 'not run')}, {report.get('wall_s', '-')} s wall\n"
    )
    print((out / "gpu_check.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare", help="download the wheels and write MNIST into .gpu-check/")
    on_device = commands.add_parser("run", help="the check itself, on the device machine")
    on_device.add_argument("--epochs", type=int, default=6, help="epochs of each training (default: 6)")
    on_device.add_argument("--report-args", default="", help="extra arguments of vaelab report (default: none)")
    on_device.add_argument("--budget", type=float, default=450, help="seconds for all steps (default: 450)")
    on_device.add_argument("--cpu", action="store_true", help="a dry run on this machine's CPU")
    args = parser.parse_args()
    prepare() if args.command == "prepare" else run(args)


if __name__ == "__main__":
    main()
