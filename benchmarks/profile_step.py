"""Where a training step's time goes: the compiled Keras train_step alone, and (--trace) its top XLA ops.

    python benchmarks/profile_step.py --preset conv [--variants kernels fused keras] [--trace]

Times the jitted `train_step` of the Keras model (batch 100, no data pipeline, no callbacks), so it
isolates the network from the training loop. Variants of the ConvNet:
- kernels: the fused layers run by the compiled C++ kernels (vaelab.kernels), the default;
- fused: the same layers in their keras.ops formulation (VAELAB_KERNELS=0);
- keras: the exercise's stock Keras layers one by one (--implementation keras).
All variants are built in one process and timed in alternation (rounds of --steps steps each), so
they share the machine's momentary load; the table gives each one's median and best round. With
--trace it records 20 steps of the first variant with the JAX profiler and prints the operations
that took longest, summed over both CPU threads. JAX backend only.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).parent))

from _common import table

VARIANTS = {"kernels": ("fused", True), "fused": ("fused", False), "keras": ("keras", False)}


def build_step(preset: str, variant: str, x):
    """(jitted train_step, its initial state) for one variant; the kernels switch is read while tracing."""
    import jax
    import keras

    from vaelab.config import make_config
    from vaelab.models import build_models

    implementation, use_kernels = VARIANTS[variant]
    os.environ["VAELAB_KERNELS"] = "1" if use_kernels else "0"
    vae = build_models(make_config(preset, implementation=implementation).model, seed=0).vae
    vae.compile(optimizer=keras.optimizers.RMSprop(1e-3))
    vae.optimizer.build(vae.trainable_variables)
    state = tuple(
        [v.value for v in variables]
        for variables in (
            vae.trainable_variables,
            vae.non_trainable_variables,
            vae.optimizer.variables,
            vae.metrics_variables,
        )
    )
    step = jax.jit(vae.train_step, donate_argnums=0)
    _, state = step(state, (x,))  # traced and compiled now, with the switch as set above
    return step, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="conv")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS), help="default: all for conv")
    parser.add_argument("--steps", type=int, default=60, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    variants = args.variants or (list(VARIANTS) if args.preset.startswith("conv") else ["fused"])

    import jax

    from vaelab import kernels
    from vaelab.data import fetch_mnist, scale_pixels
    from vaelab.training._malloc import tune_malloc

    tune_malloc()
    print(kernels.status(), file=sys.stderr)
    x = jax.numpy.asarray(scale_pixels(fetch_mnist(log=lambda m: None).x_train[:100]))
    steps = {v: build_step(args.preset, v, x) for v in variants}

    def run(variant: str, n: int) -> None:
        step, state = steps[variant]
        for _ in range(n):
            logs, state = step(state, (x,))
        jax.block_until_ready(logs)
        steps[variant] = (step, state)

    for v in variants:
        run(v, 5)
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            started = time.perf_counter()
            run(v, args.steps)
            times[v].append((time.perf_counter() - started) / args.steps)
    rows = []
    for v in variants:
        median = statistics.median(times[v])
        rows.append([args.preset, v, f"{1e3 * median:.2f}", f"{1e3 * min(times[v]):.2f}", f"{600 * median:.2f}"])
    print(table(["preset", "variant", "ms/step (median)", "ms/step (best)", "s per 600 steps"], rows))
    if args.trace:
        with tempfile.TemporaryDirectory() as logdir:
            jax.profiler.start_trace(logdir, create_perfetto_trace=True)
            run(variants[0], 20)
            jax.profiler.stop_trace()
            with gzip.open(glob.glob(f"{logdir}/**/perfetto_trace.json.gz", recursive=True)[0]) as f:
                trace = json.load(f)
        events = trace["traceEvents"] if isinstance(trace, dict) else trace
        total = collections.Counter()
        for e in events:
            name = e.get("name", "")
            if e.get("ph") == "X" and not name.startswith(("Thunk", "$", "Pjit", "Common", "PjRt", "Slinky")):
                total[name] += e["dur"] / 1e3 / 20
        step, state = steps[variants[0]]
        targets = dict(
            re.findall(r'%(\S+) = .*custom_call_target="([^"]+)"', step.lower(state, (x,)).compile().as_text())
        )
        print(f"\n{variants[0]}: XLA operations, ms per step summed over threads (all: {sum(total.values()):.2f}):")
        for name, ms in total.most_common(25):
            print(f"  {ms:6.3f}  {name} {targets.get(name, '')}")


if __name__ == "__main__":
    main()
