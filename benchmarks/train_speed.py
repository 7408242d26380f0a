"""Seconds per training epoch, vaelab against its peers, printed as a Markdown table.

    python benchmarks/train_speed.py [--presets mlp conv] [--epochs 4] [--no-peers]
    python benchmarks/train_speed.py --presets convnet --epochs 3
    python benchmarks/train_speed.py --presets burda iwae mlp --dense --epochs 3

Every row trains on the full 60,000 MNIST images (the exercise's presets) or on the 50,000 32x32x3 images
of the generated `shapes` set (`convnet`, opt-in: not in the default list), batch 100, with the test set
evaluated after each epoch, in a fresh process:
- vaelab (Keras 3 + JAX, the default), with the ConvNet's layer pairs fused and run by the compiled
  C++ kernels (the default), the same fused layers in keras.ops (`VAELAB_KERNELS=0`), and the
  exercise's Keras layers one by one (`--implementation keras`);
- peers, where installed: vaelab's networks on the Keras TensorFlow and torch backends (Keras layers),
  and the same networks written in plain PyTorch (eager), benchmarks/peer_torch.py.
- `convnet` (the network built from the image's shape, with the discretised logistic likelihood): vaelab
  on Keras 3 + JAX (keras.ops layers; the compiled kernels serve the exercise's ConvNet only), the same
  model on Keras 3 + TensorFlow, and peer_torch.py's ConvNet in plain PyTorch, eager and torch.compile
  (checked equal to vaelab's with copied weights: benchmarks/check_peer_torch.py).
- `burda` (Burda et al.'s network: 784-200-200-50, tanh, Adam, dynamically binarised, batch 20) and `iwae` (the
  same network trained on the IWAE bound with k = 5), opt-in: vaelab with XLA's dense layers and updates, with
  the compiled dense kernels (`VAELAB_DENSE_KERNELS=1`), and with the fused step (`VAELAB_FUSED_STEP=1`: the whole
  step in one FFI call, vaelab.training.fused_step), beside the same model on Keras 3 + TensorFlow and plain
  PyTorch, eager; `--dense` adds the kernels' and the
  fused
  step's rows to the exercise's `mlp` and `mlp-fixed-var` too (the fused step falls back to Keras' for the fixed
  variance: the worker's JSON says whether it ran).
s/epoch is the median of the epochs after the first (which includes compilation); GFLOP/s counts the
exercise's layers' forward and backward FLOPs; % of peak is against a float32 matrix product on this
machine. Every process gets the same malloc settings (vaelab sets them itself; peers get
GLIBC_TUNABLES), so the comparison is of the frameworks, not the allocator.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import TRAIN_IMAGES, matmul_peak_gflops, table

from vaelab.run import machine

HERE = Path(__file__).parent
PRESETS = ["mlp", "mlp-fixed-var", "conv", "conv-fixed-var"]  # the default run: the exercise's networks on MNIST
OPT_IN = {"convnet": "shapes"}  # preset: its dataset (50,000 + 10,000 generated 32x32x3 images)
BURDA = {"hidden": [200, 200], "latent_dim": 50, "activation": "tanh", "optimizer": "adam", "binarize": True,
         "batch_size": 20}  # fmt: skip
DENSE = {"burda": BURDA, "iwae": {**BURDA, "model": "iwae", "k": 5}}  # opt-in rows: the mlp preset with these settings
TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647:glibc.malloc.top_pad=67108864"


XLA_STEP = {"VAELAB_DENSE_KERNELS": "0", "VAELAB_FUSED_STEP": "0"}  # Keras' step, XLA's layers and updates
FUSED_STEP = {
    "VAELAB_DENSE_KERNELS": "0",
    "VAELAB_FUSED_STEP": "1",
}  # vaelab.training.fused_step: the step in one FFI call


def measure(cmd: list[str], env: dict[str, str]) -> dict:
    env = {**os.environ, "GLIBC_TUNABLES": TUNABLES, **env}
    done = subprocess.run([sys.executable, *cmd], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def candidates(
    preset: str, epochs: int, peers: bool, dense: bool = False
) -> list[tuple[str, str, list[str], dict[str, str]]]:
    """(who, how, command, environment) for each row of one preset."""
    worker = [str(HERE / "_train_worker.py"), "--preset", preset, "--epochs", str(epochs)]
    fused = [*worker, "--implementation", "fused"]
    jax = {"KERAS_BACKEND": "jax"}
    if preset in DENSE:
        return dense_candidates(preset, epochs, peers)
    if preset in OPT_IN:
        return colour_candidates(preset, OPT_IN[preset], epochs, peers)
    if preset.startswith("conv"):
        rows = [
            ("vaelab", "Keras 3 + JAX, fused, compiled kernels", fused, {**jax, "VAELAB_KERNELS": "1"}),
            ("vaelab", "Keras 3 + JAX, fused, keras.ops", fused, {**jax, "VAELAB_KERNELS": "0"}),
            ("vaelab", "Keras 3 + JAX, Keras layers", [*worker, "--implementation", "keras"], jax),
        ]
    else:
        rows = [("vaelab", "Keras 3 + JAX, fused", fused, {**jax, **XLA_STEP} if dense else jax)]
        if dense:
            rows.append(
                (
                    "vaelab",
                    "Keras 3 + JAX, compiled dense kernels",
                    fused,
                    {**jax, **XLA_STEP, "VAELAB_DENSE_KERNELS": "1"},
                )
            )
            rows.append(("vaelab", "Keras 3 + JAX, fused step (one call)", fused, {**jax, **FUSED_STEP}))
    if peers:
        for backend in ("tensorflow", "torch"):
            if importlib.util.find_spec(backend):
                rows.append(
                    ("peer", f"Keras 3 + {backend}", [*worker, "--implementation", "keras"], {"KERAS_BACKEND": backend})
                )
        if importlib.util.find_spec("torch") and preset in ("mlp", "conv"):
            rows.append(
                (
                    "peer",
                    "plain PyTorch, eager",
                    [str(HERE / "peer_torch.py"), "--arch", preset, "--epochs", str(epochs)],
                    {},
                )
            )
    return rows


def dense_candidates(preset: str, epochs: int, peers: bool) -> list[tuple[str, str, list[str], dict]]:
    """The rows of Burda's network (`DENSE`): vaelab with XLA's dense layers and updates, with the compiled dense
    kernels and with the fused step; the same model on Keras 3 + TensorFlow, and plain PyTorch (eager) with the same
    network, batch, optimizer and bound."""
    settings = DENSE[preset]
    worker = [str(HERE / "_train_worker.py"), "--preset", "mlp", "--epochs", str(epochs), "--settings"]
    worker.append(json.dumps(settings))
    jax = {"KERAS_BACKEND": "jax"}
    rows = [
        ("vaelab", "Keras 3 + JAX, XLA's dense layers", worker, {**jax, **XLA_STEP}),
        ("vaelab", "Keras 3 + JAX, compiled dense kernels", worker, {**jax, **XLA_STEP, "VAELAB_DENSE_KERNELS": "1"}),
        ("vaelab", "Keras 3 + JAX, fused step (one call)", worker, {**jax, **FUSED_STEP}),
    ]
    if peers and importlib.util.find_spec("tensorflow"):
        rows.append(("peer", "Keras 3 + tensorflow", worker, {"KERAS_BACKEND": "tensorflow"}))
    if peers and importlib.util.find_spec("torch"):
        torch = [str(HERE / "peer_torch.py"), "--arch", "mlp", "--epochs", str(epochs), "--hidden", "200", "200"]
        torch += ["--latent-dim", "50", "--activation", "tanh", "--optimizer", "adam", "--batch-size", "20"]
        torch += ["--binarize", "--k", str(settings.get("k", 0))]
        rows.append(("peer", "plain PyTorch, eager", torch, {}))
    return rows


def colour_candidates(preset: str, dataset: str, epochs: int, peers: bool) -> list[tuple[str, str, list[str], dict]]:
    """The rows of a preset trained on `dataset`: vaelab (its fused layers, and the stock Keras layers), Keras 3 +
    TensorFlow (the stock layers), plain PyTorch (eager, compiled)."""
    worker = [str(HERE / "_train_worker.py"), "--preset", preset, "--epochs", str(epochs), "--dataset", dataset]
    stock = [*worker, "--implementation", "keras"]
    jax = {"KERAS_BACKEND": "jax"}
    rows = [
        ("vaelab", "Keras 3 + JAX, fused (stride-1 phase convolutions)", [*worker, "--implementation", "fused"], jax),
        ("vaelab", "Keras 3 + JAX, Keras layers (strided)", stock, jax),
    ]
    if peers and importlib.util.find_spec("tensorflow"):
        rows.append(("peer", "Keras 3 + tensorflow", stock, {"KERAS_BACKEND": "tensorflow"}))
    if peers and importlib.util.find_spec("torch"):
        torch = [str(HERE / "peer_torch.py"), "--arch", preset, "--epochs", str(epochs), "--dataset", dataset]
        rows.append(("peer", "plain PyTorch, eager", torch, {}))
        rows.append(("peer", "plain PyTorch, torch.compile", [*torch, "--compile"], {}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS, choices=[*PRESETS, *OPT_IN, *DENSE])
    parser.add_argument("--dense", action="store_true", help="the mlp presets with the compiled dense kernels too")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measurement, the first not timed")
    parser.add_argument("--no-peers", action="store_true", help="measure vaelab only")
    args = parser.parse_args()

    peak = matmul_peak_gflops()
    print(f"machine: {machine()}; float32 matmul peak {peak:.0f} GFLOP/s\n")
    rows = []
    flops = {}
    for preset in args.presets:
        results = []
        for who, how, cmd, env in candidates(preset, args.epochs, not args.no_peers, args.dense):
            r = measure(cmd, env)
            flops.setdefault(preset, r.get("flops_per_epoch"))
            timed = r["seconds"][1:] or r["seconds"]
            results.append((who, how, statistics.median(timed), timed, r))
            print(f"  {preset}, {how}: {results[-1][2]:.2f} s/epoch", file=sys.stderr)
        fastest_peer = min((s for who, _, s, _, _ in results if who == "peer"), default=None)
        for who, how, s, timed, r in results:
            gflops = (flops[preset] or 0) / s / 1e9
            ratio = f"{fastest_peer / s:.2f}x" if fastest_peer else "–"
            rows.append(
                [
                    preset,
                    f"{who}: {how}",
                    f"{s:.2f}",
                    f"{min(timed):.2f}–{max(timed):.2f}",
                    f"{r.get('train_images', TRAIN_IMAGES) / s:,.0f}",
                    f"{gflops:.1f}",
                    f"{100 * gflops / peak:.1f}%",
                    f"{r['peak_rss_mb']:.0f}",
                    ratio,
                ]
            )
    header = [
        "preset",
        "who: how",
        "s/epoch",
        "range",
        "images/s",
        "GFLOP/s",
        "% of peak",
        "peak RSS MB",
        "speed vs fastest peer",
    ]
    print(table(header, rows))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"\nload average {os.getloadavg()[0]:.1f} (1 min) at the end, {when}")


if __name__ == "__main__":
    main()
