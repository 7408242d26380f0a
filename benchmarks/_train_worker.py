"""One benchmark measurement in a fresh process (the Keras backend is fixed per process).

Trains a preset on full MNIST through `vaelab.train`, as a user would, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import peak_rss_mb, train_flops_per_epoch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--implementation", default="fused")
    args = parser.parse_args()

    import keras

    from vaelab import kernels
    from vaelab._malloc import tune_malloc
    from vaelab.config import make_config
    from vaelab.model import build_models
    from vaelab.training import train

    tune_malloc()  # as the vaelab command does
    config = make_config(args.preset, epochs=args.epochs, implementation=args.implementation)
    with tempfile.TemporaryDirectory() as out:
        run = train(config, Path(out) / "run", verbose=0, log=lambda msg: None)
    # FLOPs of the exercise's layers (the fused layers do the same mathematics with fewer operations)
    stock = build_models(dataclasses.replace(config.model, implementation="keras"))
    print(
        json.dumps(
            {
                "backend": f"Keras {keras.__version__} + {keras.backend.backend()}",
                "seconds": [row["seconds"] for row in run.history],
                "flops_per_epoch": train_flops_per_epoch(stock.vae),
                "peak_rss_mb": peak_rss_mb(),
                "test_loss": run.metrics["test"]["loss"],
                "kernels": str(kernels.status()) if keras.backend.backend() == "jax" else None,
            }
        )
    )


if __name__ == "__main__":
    main()
