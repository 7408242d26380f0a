"""Peak memory of training on a dataset in shards, against its size, and against the same data in memory.

    python benchmarks/shards_memory.py [--images 60000 600000] [--preset mlp]

The datasets are generated (random pixels, random labels): this measures the format and the
loader, not learning. For each size N it writes N training images (and 1,000 test images) as
shards (`vaelab.data.shard_writer.write_shards`) and as one `.npz`, then runs `vaelab train --epochs 1`
on each in a fresh process and reports that process's peak resident memory (ru_maxrss) and the
epoch's seconds. Streaming from shards should cost the same memory whatever N; the `.npz` is read
whole, so its peak grows with N.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _common import table

from vaelab.data.shard_writer import write_shards
from vaelab.run import machine

WRAPPER = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if done.returncode:
    sys.exit(done.stderr[-2000:])
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def generate(directory: Path, images: int) -> tuple[Path, Path]:
    """N random training images and 1,000 test images, as shards and as an .npz (the same arrays)."""
    rng = np.random.default_rng(images)
    x_test, y_test = rng.integers(0, 256, (1000, 28, 28), np.uint8), rng.integers(0, 10, 1000).astype(np.int32)
    x_train = np.empty((images, 28, 28), np.uint8)
    y_train = rng.integers(0, 10, images).astype(np.int32)
    for start in range(0, images, 100_000):
        x_train[start : start + 100_000] = rng.integers(0, 256, (min(100_000, images - start), 28, 28), np.uint8)
    shards = directory / f"shards-{images}"
    parts = [{"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}]
    names = [str(k) for k in range(10)]
    write_shards(shards, parts, source="random pixels, generated for a memory benchmark", class_names=names)
    npz = directory / f"arrays-{images}.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return shards, npz


def train(dataset: Path, preset: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "vaelab", "train", "--preset", preset, "--epochs", "1", "--dataset", str(dataset)]
    cmd += ["--out", str(out), "--overwrite"]
    done = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    with open(out / "history.csv") as f:
        seconds = float(next(csv.DictReader(f))["seconds"])
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[60_000, 600_000])
    parser.add_argument("--preset", default="mlp")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for images in args.images:
            shards, npz = generate(Path(tmp), images)
            for how, dataset in (("shards, streamed", shards), (".npz, in memory", npz)):
                result = train(dataset, args.preset, Path(tmp) / "run")
                rows.append(
                    [
                        f"{images:,}",
                        f"{images * 784 / 2**20:,.0f}",
                        how,
                        f"{result['peak_mb']:,.0f}",
                        f"{result['seconds']:.1f}",
                    ]
                )
                print(
                    f"{images:,} images, {how}: {result['peak_mb']:,.0f} MB, {result['seconds']:.1f} s", file=sys.stderr
                )
            for path in shards.iterdir():
                path.unlink()
            npz.unlink()
    print(f"machine: {machine()}; `vaelab train --preset {args.preset} --epochs 1`, generated data\n")
    print(table(["training images", "their size MB", "read as", "peak RSS MB", "epoch s"], rows))


if __name__ == "__main__":
    main()
