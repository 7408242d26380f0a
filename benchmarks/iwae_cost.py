"""What the iwae's objective costs per step: K = 1, 5, 50 against the plain VAE's step, on the mlp preset.

    python benchmarks/iwae_cost.py [--k 1 5 50] [--steps 30] [--rounds 3] [--batch-size 100]

Times the jitted Keras `train_step` alone (no data pipeline, no callbacks), as profile_step.py does, for
the VAE and for the iwae with each K, built in one process and timed in alternation (rounds of --steps steps),
so they share the machine's momentary load. The issue's bar: K codes per image should cost close to K times the
decoder's work, not more: the table gives each step's time, its ratio to the VAE's, and the ratio the
network's arithmetic predicts (encoder once, decoder K times: `_common.forward_flops_per_image`). JAX backend.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).parent))

from _common import forward_flops_per_image, table


def build_step(model: str, k: int | None, x):
    """(jitted train_step, its initial state, (encoder FLOPs, decoder FLOPs) per image) for the VAE or an iwae."""
    import jax
    import keras

    from vaelab.config import make_config
    from vaelab.models import build_models

    models = build_models(make_config("mlp", model=model, k=k).model, seed=0)
    vae = models.vae
    vae.compile(optimizer=keras.optimizers.RMSprop(1e-3))
    vae.optimizer.build(vae.trainable_variables)
    state = tuple(
        [v.value for v in variables]
        for variables in (vae.trainable_variables, vae.non_trainable_variables, vae.optimizer.variables,
                          vae.metrics_variables)
    )  # fmt: skip
    step = jax.jit(vae.train_step, donate_argnums=0)
    _, state = step(state, (x,))  # traced and compiled now
    flops = (forward_flops_per_image(models.encoder)[0], forward_flops_per_image(models.generator)[0])
    return step, state, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 50])
    parser.add_argument("--steps", type=int, default=30, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    import jax

    from vaelab.data import fetch_mnist, scale_pixels
    from vaelab.training._malloc import tune_malloc

    tune_malloc()
    x = jax.numpy.asarray(scale_pixels(fetch_mnist(log=lambda m: None).x_train[: args.batch_size]))
    variants = {"vae": ("vae", None), **{f"iwae k={k}": ("iwae", k) for k in args.k}}
    steps = {name: build_step(*spec, x) for name, spec in variants.items()}

    def run(name: str, n: int) -> None:
        step, state, flops = steps[name]
        for _ in range(n):
            logs, state = step(state, (x,))
        jax.block_until_ready(logs)
        steps[name] = (step, state, flops)

    for name in variants:
        run(name, 3)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name in variants:
            started = time.perf_counter()
            run(name, args.steps)
            times[name].append((time.perf_counter() - started) / args.steps)
    base = statistics.median(times["vae"])
    encoder, decoder = steps["vae"][2]
    rows = []
    for name, (_, k) in variants.items():
        median = statistics.median(times[name])
        predicted = (encoder + (k or 1) * decoder) / (encoder + decoder)  # the forward arithmetic's ratio
        rows.append([name, f"{median:.4f}", f"{min(times[name]):.4f}", f"{median / base:.2f}", f"{predicted:.2f}"])
    print(f"mlp preset, batch {args.batch_size}, {jax.devices()[0].platform}, {os.cpu_count()} cores")
    print(table(["objective", "s/step (median)", "s/step (best)", "x the VAE's step", "x by arithmetic"], rows))


if __name__ == "__main__":
    main()
