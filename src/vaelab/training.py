"""Training: `train` starts a run, `resume` continues one; both save the run directory after every epoch.

Both hold the run directory's lock from start to end (a second writer gets one line naming the
holder), stop at a step boundary on Ctrl-C, and stop at once when the loss stops being a number.
The data are handed in (a `Dataset`); without them the run's dataset is loaded from the cache.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from vaelab import _interrupt, schedule, snapshots
from vaelab import run as runs
from vaelab._files import WriteError
from vaelab._lock import DirectoryLock
from vaelab.config import SNAPSHOTS, RunConfig
from vaelab.data import Dataset, load_dataset, scale_pixels, test_images
from vaelab.errors import Interrupted, VaelabError
from vaelab.export import export_run
from vaelab.model import Models, build_models

STEPS_PER_EXECUTION = 10  # steps per call into the compiled step, less Python overhead (torch allows only 1)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def prepare(config: RunConfig, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The training and test images the run uses, as floats in [0, 1]: subsets taken, pixels scaled.

    With binarisation the training images stay grey (the VAE draws binary pixels from them at each
    step) and the test images are the fixed binarised test set.
    """
    x_train = scale_pixels(data.x_train[: config.train.train_subset])
    x_test = test_images(data, binarized=config.train.binarize)[: config.train.test_subset]
    return x_train, x_test


def make_optimizer(config: RunConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    kinds = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam}
    return kinds[config.train.optimizer](learning_rate=schedule.learning_rate(config.train, steps_per_epoch))


def steps_per_epoch(config: RunConfig, data: Dataset) -> int:
    """Gradient steps in one pass over the training images the run uses."""
    return -(-len(data.x_train[: config.train.train_subset]) // config.train.batch_size)


def train(
    config: RunConfig,
    out: str | os.PathLike[str],
    *,
    data: Dataset | None = None,
    overwrite: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    snapshots: bool = SNAPSHOTS,
    verbose: int | str = "auto",
    log: Log = _stderr,
) -> runs.Run:
    """Trains `config` on `data` into the new run directory `out` and returns the trained run.

    `out` must not hold a run unless `overwrite`. `callbacks` are passed to Keras' `fit` (the run
    directory stays the record of the run); `snapshots` records vaelab.snapshots after every epoch.
    Ctrl-C stops after the current step: `Interrupted`.
    """
    config.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VaelabError(f"{out} is a file, not a run directory; choose another --out")
    with DirectoryLock(out, "training"), _interrupt.stop_at_step_boundary():
        if (out / runs.CONFIG).exists() and not overwrite:
            raise VaelabError(
                f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                "or --out another directory"
            )
        data = _data_for(config, data, log)
        models, optimizer = _build(config, data)
        info = runs.new_run_info(config, data)
        try:
            for name in runs.RUN_FILES:  # --overwrite: the old run's files go only now that all is ready
                (out / name).unlink(missing_ok=True)
            for old in (out / runs.SNAPSHOT_DIR).glob("*.png"):
                old.unlink()
            runs.write_info(out, info)
        except OSError as err:  # removing the old files of --overwrite
            raise VaelabError(f"cannot write the run directory {out} ({err.strerror}); choose another --out") from None
        return _fit(out, config, info, data, models, optimizer, [], 0, callbacks, snapshots, verbose, log)


def resume(
    out: str | os.PathLike[str],
    *,
    epochs: int | None = None,
    data: Dataset | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    snapshots: bool = SNAPSHOTS,
    verbose: int | str = "auto",
    log: Log = _stderr,
) -> runs.Run:
    """Continues the run in `out` from its last completed epoch, with its saved configuration.

    `epochs` may raise the total. The run draws the same batches and noise it would have drawn
    had it never stopped, with the same KL weights and learning rates.
    """
    out = Path(out)
    runs.read_info(out)  # a clear error for a directory that holds no run, before locking it
    with DirectoryLock(out, "training"), _interrupt.stop_at_step_boundary():
        info = runs.read_info(out)
        config = RunConfig.from_dict(info["config"])
        data = _data_for(config, data, log)
        if info["data_sha256"] != data.sha256:
            raise VaelabError(
                f"the {data.title} data found now differ from the data {out} was trained on; "
                "resume with the same data (see `vaelab data`)"
            )
        models, optimizer = _build(config, data)
        history: list[dict[str, float]] = []
        initial_epoch = 0
        if (out / runs.CHECKPOINT).exists():
            optimizer.build(models.vae.trainable_variables)
            initial_epoch = runs.load_checkpoint(out, models.vae, optimizer, run_id=info.get("run_id"))
            history = runs.read_history(out)[:initial_epoch]
        if epochs is not None and epochs != config.train.epochs:
            if epochs < initial_epoch:
                raise VaelabError(f"{out} has completed {initial_epoch} epochs already; ask for more than that")
            config = config.replace(epochs=epochs)
            info = {**info, "config": config.to_dict()}
            runs.write_info(out, info)
        return _fit(
            out, config, info, data, models, optimizer, history, initial_epoch, callbacks, snapshots, verbose, log
        )


def _data_for(config: RunConfig, data: Dataset | None, log: Log) -> Dataset:
    """The data handed in, checked to be the configuration's dataset, or that dataset loaded from the cache."""
    if data is None:
        return load_dataset(config.dataset, log=log)
    if data.name != config.dataset:
        raise VaelabError(f"the configuration names the dataset {config.dataset}, but the data given are {data.name}")
    return data


def _build(config: RunConfig, data: Dataset) -> tuple[Models, keras.optimizers.Optimizer]:
    models = build_models(config.model, seed=config.train.seed, binarize=config.train.binarize)
    optimizer = make_optimizer(config, steps_per_epoch(config, data))
    steps = 1 if keras.backend.backend() == "torch" else STEPS_PER_EXECUTION
    models.vae.compile(optimizer=optimizer, steps_per_execution=steps)
    return models, optimizer


def _fit(
    out: Path,
    config: RunConfig,
    info: dict,
    data: Dataset,
    models: Models,
    optimizer: keras.optimizers.Optimizer,
    history: list[dict[str, float]],
    initial_epoch: int,
    callbacks: Sequence[keras.callbacks.Callback],
    record_snapshots: bool,
    verbose: int | str,
    log: Log,
) -> runs.Run:
    """Runs the epochs from `initial_epoch` to the configured total; returns the run as it now stands."""
    x_train, x_test = prepare(config, data)
    ours: list[keras.callbacks.Callback] = [StopAtStepBoundary(), schedule.KLWeight(config.train)]
    if record_snapshots:
        labels = data.y_test if data.labelled else None
        ours.append(snapshots.SnapshotCallback(out, models, x_test, labels, config.train.seed, initial_epoch))
    ours.append(EpochCheckpoint(out, config.train.seed, history, optimizer, info.get("run_id")))
    if initial_epoch < config.train.epochs:
        log(f"vaelab: training {config.preset} for epochs {initial_epoch + 1}-{config.train.epochs} into {out}")
        try:
            _interrupt.check()
            models.vae.fit(
                x_train,
                None,
                batch_size=config.train.batch_size,
                epochs=config.train.epochs,
                initial_epoch=initial_epoch,
                validation_data=(x_test,),
                shuffle=True,
                callbacks=[*ours, *callbacks],
                verbose=verbose,
            )
        except Interrupted:
            how = f"`vaelab train --resume {out}`"
            if history:
                kept = f"{out} keeps {len(history)} completed epochs"
                raise Interrupted(f"interrupted; {kept}: continue with {how}") from None
            raise Interrupted(f"interrupted before the first epoch ended; start it again with {how}") from None
    last = history[-1]
    metrics = runs.update_metrics(
        out,
        run_id=info.get("run_id"),
        epochs=len(history),
        train_seconds=round(sum(row["seconds"] for row in history), 3),
        test={**{k: last[f"val_{k}"] for k in runs.LOSSES}, "kl_weight": last["kl_weight"]},
    )
    run = runs.Run(
        path=out,
        config=config,
        info={k: v for k, v in info.items() if k != "config"},
        models=models,
        epoch=len(history),
        history=history,
        metrics=metrics,
    )
    export_run(run)
    return run


class StopAtStepBoundary(keras.callbacks.Callback):
    """Ends `fit` between steps: after a Ctrl-C (`Interrupted`) or when the loss is no longer finite."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
        _interrupt.check()

    def on_train_batch_end(self, batch, logs=None):
        _interrupt.check()
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise diverged(loss, self.epoch)

    def on_test_batch_end(self, batch, logs=None):
        _interrupt.check()


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves history.csv and checkpoint.npz after every epoch; seeds each epoch's shuffle.

    Seeding the shuffle from (seed, epoch) makes a resumed run draw the same batches as one that
    never stopped.
    """

    def __init__(self, out: Path, seed: int, history: list[dict[str, float]], optimizer, run_id: str | None):
        super().__init__()
        self.out, self.seed, self.history, self.optimizer, self.run_id = out, seed, history, optimizer, run_id
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        np.random.seed(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["seconds"] = time.perf_counter() - self.started
        row.pop("val_kl_weight", None)  # the same weight as in training
        bad = [k for k in runs.HISTORY_COLUMNS[1:] if not math.isfinite(row.get(k, 0.0))]
        if bad:
            raise diverged(row[bad[0]], epoch + 1)
        self.history.append(row)
        try:
            # history first, then the checkpoint: a reader trusts the checkpoint's epoch count and
            # ignores history rows beyond it.
            runs.write_history(self.out, self.history)
            runs.save_checkpoint(self.out, self.model, self.optimizer, epoch + 1, run_id=self.run_id)
        except WriteError as err:
            self.history.pop()
            raise VaelabError(
                f"{err}; the run keeps its earlier epochs: make room, then `vaelab train --resume {self.out}`"
            ) from None


def diverged(value: float, epoch: int) -> VaelabError:
    """The error for a loss that stopped being a number: training diverged, say what to change."""
    return VaelabError(
        f"the loss became {value} in epoch {epoch} (training diverged); the run keeps the epochs completed "
        "before it: train again with a lower --learning-rate"
    )
