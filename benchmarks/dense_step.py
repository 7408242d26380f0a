"""One compiled training step of a dense network: XLA's step, the per-layer dense kernels, the fused step.

    python benchmarks/dense_step.py --network burda [--batch 20] [--rounds 7]
    python benchmarks/dense_step.py --network iwae | vae5 | iwae50 | vamp | mlp
    python benchmarks/dense_step.py --network tomczak --variants XLA mixture-ops

The three variants are built in one process (`VAELAB_DENSE_KERNELS` read while tracing; the fused step is
`vaelab.training.fused_step`, one FFI call for the gradient and the update) and their jitted Keras `train_step`s timed
in
alternation, rounds of 100 steps, so that they share the machine's momentary load. `mixture-ops` is XLA's step with
the VampPrior's density in plain keras.ops, differentiated by JAX (`vaelab.models.priors._log_mixture_density_ops`),
where the vamp's step otherwise takes it a few components at a time with its gradient written out. Besides
wall time it reports the process's CPU time per step (both threads), which other jobs on a shared machine disturb
less than the wall clock. JAX backend only.
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

from _common import table

BURDA = {"hidden": (200, 200), "latent_dim": 50, "activation": "tanh", "optimizer": "adam", "binarize": True}
TOMCZAK = {"hidden": (300, 300), "latent_dim": 40, "activation": "tanh", "optimizer": "adam", "binarize": True}
NETWORKS = {
    "burda": BURDA,
    "iwae": {**BURDA, "model": "iwae", "k": 5},
    "vae5": {**BURDA, "model": "vae", "k": 5},  # benchmarks/reproduce.py's vae-5 row: the ELBO over 5 codes
    "iwae50": {**BURDA, "model": "iwae", "k": 50},  # benchmarks/reproduce.py's iwae-50 row
    "vamp": {**BURDA, "model": "vamp"},
    "tomczak": {**TOMCZAK, "model": "vamp", "pseudo_inputs": 500},  # benchmarks/reproduce.py's vamp row
    "mlp": {},
}
# the exercise's mlp preset (784-256-2, relu, RMSprop, batch 100) is `make_config("mlp")` itself


def build(config, x, variant: str):
    """(jitted train_step, its state) of `variant`: "XLA", "kernels" (the per-layer dense kernels), "fused" or
    "mixture-ops" (XLA's, with the VampPrior's density in keras.ops)."""
    import jax

    from vaelab.models import build_models, priors, vamp
    from vaelab.training import fused_step
    from vaelab.training.loop import make_optimizer

    os.environ["VAELAB_DENSE_KERNELS"] = "1" if variant == "kernels" else "0"
    vae = build_models(config.model, seed=0, binarize=config.train.binarize).vae
    vae.compile(optimizer=make_optimizer(config, 600))
    vae.optimizer.build(vae.trainable_variables)
    if variant == "fused":
        why = fused_step.reason(vae, config.model)
        if why:
            raise SystemExit(f"dense_step.py: the fused step does not apply: {why}")
        vae.train_step = fused_step.FusedStep(vae, config.model)
    groups = (vae.trainable_variables, vae.non_trainable_variables, vae.optimizer.variables, vae.metrics_variables)
    state = tuple([v.value for v in group] for group in groups)
    step = jax.jit(vae.train_step, donate_argnums=0)
    density = vamp.log_mixture_density
    if variant == "mixture-ops":
        vamp.log_mixture_density = priors._log_mixture_density_ops
    try:
        _, state = step(state, (x,))  # traced now
    finally:
        vamp.log_mixture_density = density
    return [step, state]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=list(NETWORKS), default="burda")
    parser.add_argument("--batch", type=int, default=None, help="default: 20 (Burda's), 100 for mlp and tomczak")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--variants", nargs="+", choices=("XLA", "kernels", "fused", "mixture-ops"), default=["XLA", "kernels", "fused"]
    )
    args = parser.parse_args()
    import jax

    from vaelab import kernels
    from vaelab.config import make_config
    from vaelab.data import fetch_mnist, scale_pixels
    from vaelab.training._malloc import tune_malloc

    tune_malloc()
    batch = args.batch or (100 if args.network in ("mlp", "tomczak") else 20)
    config = make_config("mlp", batch_size=batch, **NETWORKS[args.network])
    x = jax.numpy.asarray(scale_pixels(fetch_mnist(log=lambda m: None).x_train[:batch]))
    print(kernels.status(), f"load average {os.getloadavg()[0]:.1f} at the start", file=sys.stderr)
    variants = {name: build(config, x, name) for name in args.variants}

    def run(name: str, steps: int) -> None:
        step, state = variants[name]
        for _ in range(steps):
            logs, state = step(state, (x,))
        jax.block_until_ready(logs)
        variants[name][1] = state

    for name in variants:
        run(name, 20)
    wall, cpu = ({name: [] for name in variants} for _ in range(2))
    for _ in range(args.rounds):
        for name in variants:
            started, cpu_started = time.perf_counter(), time.process_time()
            run(name, 100)
            wall[name].append((time.perf_counter() - started) / 100)
            cpu[name].append((time.process_time() - cpu_started) / 100)
    steps = 60000 // batch
    rows = [
        [args.network, batch, name, f"{1e3 * statistics.median(wall[name]):.3f}", f"{1e3 * min(wall[name]):.3f}",
         f"{1e3 * statistics.median(cpu[name]):.3f}", f"{steps * min(wall[name]):.2f}"]
        for name in variants
    ]  # fmt: skip
    header = [
        "network",
        "batch",
        "variant",
        "wall ms/step (median)",
        "(best)",
        "CPU ms/step (median)",
        "s/epoch (best)",
    ]
    print(table(header, rows))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) at the end; {when}")


if __name__ == "__main__":
    main()
