"""Each conv layer of the ConvNet alone: the compiled kernels against the keras.ops formulation.

    python benchmarks/kernel_layers.py [--no-standalone]

Two tables, batch 100:
1. forward + backward of each layer under `jax.jit` (what a training step runs), kernels
   (through XLA's FFI, on XLA's thread pool) and keras.ops (VAELAB_KERNELS=0), timed in alternation
   in one process; the backward pass takes every gradient the layer has in training (the first
   layer's input gradient is not needed there);
2. the kernels alone on one thread, without XLA (kernel_layers.cc, compiled here with the
   package's flags): how fast the loops themselves are.
JAX backend only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).parent))

from _common import table

HERE = Path(__file__).parent


def layer_steps():
    """(name, jitted fwd+bwd with kernels, the same in keras.ops, arguments) for each layer."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vaelab.models.layers import ConvMaxPool2D, SameConv2D, UpSamplingConv2D

    cases = [
        ("encoder_conv1", ConvMaxPool2D(16), (28, 28, 1), False),
        ("encoder_conv2", ConvMaxPool2D(8), (14, 14, 16), True),
        ("decoder_conv1", SameConv2D(8, activation="relu"), (8, 8, 8), True),
        ("decoder_conv2", UpSamplingConv2D(16, "valid", activation="relu"), (8, 8, 8), True),
        ("decoder_mean", UpSamplingConv2D(1, "same", activation="sigmoid"), (14, 14, 16), True),
    ]
    rng = np.random.default_rng(0)
    for name, layer, shape, input_gradient in cases:
        layer.build((None, *shape))
        weights = [jnp.asarray(rng.normal(0, 0.3, v.shape).astype(np.float32)) for v in layer.trainable_variables]
        x = jnp.asarray(np.maximum(rng.normal(size=(100, *shape)), 0).astype(np.float32))

        steps = []
        for switch in ("1", "0"):  # read while tracing, in the first call

            def loss(weights, x, layer=layer):  # a new function each time: jit caches traces per function
                y, _ = layer.stateless_call(weights, [], x)
                return jnp.sum(y * y)

            os.environ["VAELAB_KERNELS"] = switch
            step = jax.jit(jax.grad(loss, argnums=(0, 1) if input_gradient else 0))
            jax.block_until_ready(step(weights, x))
            steps.append(step)
        yield name, *steps, (weights, x)


def jitted_table(rounds: int = 7, calls: int = 20) -> str:
    import jax

    rows = []
    for name, with_kernels, with_ops, args in layer_steps():
        times = {"kernels": [], "ops": []}
        for _ in range(rounds):
            for key, step in (("kernels", with_kernels), ("ops", with_ops)):
                started = time.perf_counter()
                for _ in range(calls):
                    out = step(*args)
                jax.block_until_ready(out)
                times[key].append((time.perf_counter() - started) / calls * 1e3)
        ops, kern = statistics.median(times["ops"]), statistics.median(times["kernels"])
        rows.append([name, f"{ops:.2f}", f"{kern:.2f}", f"{ops / kern:.1f}x"])
    header = ["layer (batch 100, jitted fwd+bwd)", "keras.ops ms", "kernels ms", "speed-up"]
    return table(header, rows)


def standalone_table() -> str:
    from vaelab.kernels import _build

    build = _build.plan()
    flags = [f for f in build.flags if f not in ("-shared", "-fPIC")]
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "kernel_layers"
        source = HERE / "kernel_layers.cc"
        subprocess.run([*build.compiler, *flags, f"-I{_build.SOURCE_DIR}", str(source), "-o", str(binary)], check=True)
        return subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-standalone", action="store_true", help="skip the one-thread C++ table")
    args = parser.parse_args()

    from vaelab import kernels

    print(kernels.status(), file=sys.stderr)
    print(jitted_table())
    if not args.no_standalone:
        print()
        print(standalone_table())


if __name__ == "__main__":
    main()
