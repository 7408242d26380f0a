"""Where a training step's time goes: the compiled Keras train_step alone, and (--trace) its top XLA ops.

    python benchmarks/profile_step.py --preset conv --implementation fused [--trace]

Times the jitted `train_step` of the Keras model (batch 100, no data pipeline, no callbacks), so it
isolates the network from the training loop. With --trace it records 20 steps with the JAX profiler
and prints the operations that took longest, summed over both CPU threads. JAX backend only.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="conv")
    parser.add_argument("--implementation", default="fused", choices=["fused", "keras"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()

    import jax
    import keras

    from vaelab._malloc import tune_malloc
    from vaelab.config import make_config
    from vaelab.data import fetch_mnist, scale_pixels
    from vaelab.model import build_models

    tune_malloc()
    x = jax.numpy.asarray(scale_pixels(fetch_mnist(log=lambda m: None).x_train[:100]))
    vae = build_models(make_config(args.preset, implementation=args.implementation).model, seed=0).vae
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

    def run(state, n):
        for _ in range(n):
            logs, state = step(state, (x,))
        jax.block_until_ready(logs)
        return state

    state = run(state, 5)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        state = run(state, args.steps)
        best = min(best, (time.perf_counter() - started) / args.steps)
    print(
        f"{args.preset} ({args.implementation}): {1e3 * best:.2f} ms per training step of 100 images "
        f"-> {600 * best:.2f} s per 600 steps"
    )
    if args.trace:
        with tempfile.TemporaryDirectory() as logdir:
            jax.profiler.start_trace(logdir, create_perfetto_trace=True)
            state = run(state, 20)
            jax.profiler.stop_trace()
            with gzip.open(glob.glob(f"{logdir}/**/perfetto_trace.json.gz", recursive=True)[0]) as f:
                trace = json.load(f)
        events = trace["traceEvents"] if isinstance(trace, dict) else trace
        total = collections.Counter()
        for e in events:
            name = e.get("name", "")
            if e.get("ph") == "X" and not name.startswith(("Thunk", "$", "Pjit", "Common", "PjRt", "Slinky")):
                total[name] += e["dur"] / 1e3 / 20
        print(f"XLA operations, ms per step summed over threads (all: {sum(total.values()):.2f}):")
        for name, ms in total.most_common(15):
            print(f"  {ms:6.3f}  {name}")


if __name__ == "__main__":
    main()
