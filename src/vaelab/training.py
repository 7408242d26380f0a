"""Training: fit a VAE on MNIST, saving its run directory after every epoch."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from vaelab import run as runs
from vaelab._files import write_json
from vaelab._malloc import tune_malloc
from vaelab.config import RunConfig
from vaelab.data import Dataset, fetch_mnist, scale_pixels, test_images
from vaelab.errors import VaelabError
from vaelab.model import build_models

STEPS_PER_EXECUTION = 10  # steps per call into the compiled step, less Python overhead (torch allows only 1)


def prepare(config: RunConfig, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The training and test images the run uses, as floats in [0, 1]: subsets taken, pixels scaled.

    With binarisation the training images stay grey (the VAE draws binary pixels from them at each
    step) and the test images are the fixed binarised test set.
    """
    x_train = scale_pixels(data.x_train[: config.train.train_subset])
    x_test = test_images(data, binarized=config.train.binarize)[: config.train.test_subset]
    return x_train, x_test


def make_optimizer(config: RunConfig) -> keras.optimizers.Optimizer:
    kinds = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}
    return kinds[config.train.optimizer](learning_rate=config.train.learning_rate)


def train(
    config: RunConfig | None = None,
    out: str | os.PathLike[str] = "runs/mlp",
    *,
    resume: bool = False,
    overwrite: bool = False,
    epochs: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    verbose: int | str = "auto",
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> runs.Run:
    """Trains `config` into the run directory `out` and returns the trained run.

    With `resume`, continues the run in `out` from its last completed epoch (its saved config wins;
    `epochs` may raise the total). Without it, `out` must not hold a run unless `overwrite`.
    """
    out = Path(out)
    if resume:
        info = runs.read_info(out)
        config = RunConfig.from_dict(info["config"])
        if epochs is not None:
            config = config.replace(epochs=epochs)
    else:
        if config is None:
            raise VaelabError("train needs a configuration (or resume=True)")
        config.validate()
        if (out / runs.CONFIG).exists() and not overwrite:
            raise VaelabError(
                f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                "or --out another directory"
            )
        if out.exists() and not out.is_dir():
            raise VaelabError(f"{out} is a file, not a run directory; choose another --out")

    data = fetch_mnist(data_dir, log=log)
    if resume and info["data_sha256"] != data.sha256:
        raise VaelabError(
            f"the MNIST data found now differ from the data {out} was trained on; "
            "resume with the same data (see `vaelab data`)"
        )
    x_train, x_test = prepare(config, data)

    tune_malloc()
    models = build_models(config.model, seed=config.train.seed, binarize=config.train.binarize)
    optimizer = make_optimizer(config)
    steps = 1 if keras.backend.backend() == "torch" else STEPS_PER_EXECUTION
    models.vae.compile(optimizer=optimizer, steps_per_execution=steps)
    history: list[dict[str, float]] = []
    initial_epoch = 0
    if resume and (out / runs.CHECKPOINT).exists():
        optimizer.build(models.vae.trainable_variables)
        initial_epoch = runs.load_checkpoint(out, models.vae, optimizer)
        history = runs.read_history(out)[:initial_epoch]
    try:
        if not resume:
            for name in runs.RUN_FILES:  # --overwrite: the old run's files go only now that data are here
                (out / name).unlink(missing_ok=True)
        write_json(out / runs.CONFIG, runs.run_info(config, data.sha256))
    except OSError as err:
        raise VaelabError(f"cannot write the run directory {out} ({err}); choose another --out") from None

    if initial_epoch < config.train.epochs:
        log(f"vaelab: training {config.preset} for epochs {initial_epoch + 1}-{config.train.epochs} into {out}")
        models.vae.fit(
            x_train,
            None,
            batch_size=config.train.batch_size,
            epochs=config.train.epochs,
            initial_epoch=initial_epoch,
            validation_data=(x_test,),
            shuffle=True,
            callbacks=[EpochCheckpoint(out, config.train.seed, history, optimizer)],
            verbose=verbose,
        )
    last = history[-1]
    runs.update_metrics(
        out,
        epochs=len(history),
        train_seconds=round(sum(row["seconds"] for row in history), 3),
        test={k: last[f"val_{k}"] for k in ("loss", "reconstruction_loss", "kl_loss")},
    )
    return runs.load_run(out)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves history.csv and checkpoint.npz after every epoch; seeds each epoch's shuffle.

    Seeding the shuffle from (seed, epoch) makes a resumed run draw the same batches as one that
    never stopped.
    """

    def __init__(self, out: Path, seed: int, history: list[dict[str, float]], optimizer):
        super().__init__()
        self.out, self.seed, self.history, self.optimizer = out, seed, history, optimizer
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        np.random.seed(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["seconds"] = time.perf_counter() - self.started
        self.history.append(row)
        # history first, then the checkpoint: a reader trusts the checkpoint's epoch count and
        # ignores history rows beyond it.
        runs.write_history(self.out, self.history)
        runs.save_checkpoint(self.out, self.model, self.optimizer, epoch + 1)
