"""Seconds per training epoch of the ConvNet's variants, trained in alternation in one process.

    python benchmarks/epoch_alternate.py [--preset conv] [--epochs 4] [--variants kernels fused keras]

train_speed.py runs each row in its own process, one after the other, so a machine whose load
changes (other jobs on the same cores) can favour one row. Here the variants (see profile_step.py)
train side by side: epoch 1 of each, then epoch 2 of each, and so on, every epoch a full `fit` pass
over the 60,000 training images plus the test set, as `vaelab train` runs it (batch 100, RMSprop,
ten steps per call). The table gives each variant's median and range over the epochs after the
first (which includes compilation). JAX backend only.
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
from profile_step import VARIANTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="conv", choices=["conv", "conv-fixed-var"])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per variant, the first not timed")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()

    from vaelab import kernels
    from vaelab.config import make_config
    from vaelab.data import fetch_mnist
    from vaelab.models import build_models
    from vaelab.training._malloc import tune_malloc
    from vaelab.training.loop import STEPS_PER_EXECUTION, make_optimizer, prepare

    tune_malloc()
    print(kernels.status(), file=sys.stderr)
    data = fetch_mnist(log=lambda m: None)
    models = {}
    for variant in args.variants:
        implementation, _ = VARIANTS[variant]
        config = make_config(args.preset, implementation=implementation)
        vae = build_models(config.model, seed=config.train.seed).vae
        vae.compile(optimizer=make_optimizer(config), steps_per_execution=STEPS_PER_EXECUTION)
        models[variant] = (vae, *prepare(config, data), config.train.batch_size)

    seconds = {v: [] for v in args.variants}
    for epoch in range(args.epochs):
        for variant in args.variants:
            # The switch is read when fit first traces the step; later epochs reuse that trace.
            os.environ["VAELAB_KERNELS"] = "1" if VARIANTS[variant][1] else "0"
            vae, x_train, x_test, batch_size = models[variant]
            started = time.perf_counter()
            vae.fit(
                x_train,
                None,
                batch_size=batch_size,
                epochs=epoch + 1,
                initial_epoch=epoch,
                validation_data=(x_test,),
                shuffle=True,
                verbose=0,
            )
            seconds[variant].append(time.perf_counter() - started)
            print(f"  epoch {epoch + 1}, {variant}: {seconds[variant][-1]:.2f} s", file=sys.stderr)
    rows = []
    for variant, times in seconds.items():
        timed = times[1:] or times
        rows.append(
            [args.preset, variant, f"{statistics.median(timed):.2f}", f"{min(timed):.2f}–{max(timed):.2f}", len(timed)]
        )
    print(table(["preset", "variant", "s/epoch (median)", "range", "epochs timed"], rows))


if __name__ == "__main__":
    main()
