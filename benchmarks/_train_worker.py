"""One benchmark measurement in a fresh process (the Keras backend is fixed per process).

Trains a preset on a dataset (full MNIST unless `--dataset` names another) through `vaelab.train`, as a
user would, and prints one JSON line.

On the JAX backend TensorFlow is kept out of the process, as it is out of vaelab's install: where the peers'
TensorFlow is installed, Keras' model saving imports it (`serialize_keras_object` asks whether it is
available) when a run writes its .keras files, which would add TensorFlow's ~400 MB to the peak memory of a
process that never uses it.
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
    parser.add_argument("--dataset", default="mnist", help="a built-in dataset (vaelab.data.load_dataset)")
    parser.add_argument("--settings", default="{}", help="more make_config settings, as JSON (Burda's network)")
    args = parser.parse_args()

    import os

    if os.environ.get("KERAS_BACKEND", "jax") == "jax":
        sys.modules["tensorflow"] = None  # as without the peers installed: see the docstring
    import keras

    from vaelab import kernels
    from vaelab.config import make_config
    from vaelab.data import load_dataset
    from vaelab.models import build_models
    from vaelab.training._malloc import tune_malloc
    from vaelab.training.fused_step import FusedStep
    from vaelab.training.loop import train

    tune_malloc()  # as the vaelab command does
    settings = json.loads(args.settings)
    config = make_config(
        args.preset, epochs=args.epochs, implementation=args.implementation, dataset=args.dataset, **settings
    )
    data = load_dataset(config.dataset, log=lambda msg: None)  # what train would load; here to count its images
    with tempfile.TemporaryDirectory() as out:
        run = train(config, Path(out) / "run", data=data, verbose=0, log=lambda msg: None)
    # FLOPs of the exercise's layers (the fused layers do the same mathematics with fewer operations)
    stock = build_models(dataclasses.replace(run.config.model, implementation="keras"))
    images = len(data.x_train)
    print(
        json.dumps(
            {
                "backend": f"Keras {keras.__version__} + {keras.backend.backend()}",
                "seconds": [row["seconds"] for row in run.history],
                "train_images": images,
                "flops_per_epoch": train_flops_per_epoch(stock.vae, images),
                "peak_rss_mb": peak_rss_mb(),
                "test_loss": run.metrics["test"]["loss"],
                "kernels": str(kernels.status()) if keras.backend.backend() == "jax" else None,
                "dense_kernels": kernels.dense_runs() if keras.backend.backend() == "jax" else None,
                "fused_step": isinstance(run.models.vae.train_step, FusedStep),
            }
        )
    )


if __name__ == "__main__":
    main()
