"""Training: `train` starts a run, `resume` continues one; both save the run directory after every epoch.

Both hold the run directory's lock from start to end (a second writer gets one line naming the
holder), stop at a step boundary on Ctrl-C, and stop at once when the loss stops being a number.
The data are handed in (a `Dataset`); without them the run's dataset is loaded from the cache.

`devices` trains data-parallel on several devices, and a multi-process run (`vaelab.training.distribute`)
on the devices of every process: process 0 alone holds the lock and writes the run directory;
every process reads it to resume, stops on a Ctrl-C in any of them, and stops on a NaN loss (the
loss is the same number everywhere).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from vaelab import _interrupt, kernels, limits
from vaelab import run as runs
from vaelab._files import WriteError
from vaelab._lock import DirectoryLock
from vaelab.config import SNAPSHOTS, RunConfig
from vaelab.data import Dataset, load_dataset, test_images
from vaelab.data.batches import Batches, EpochOrder
from vaelab.errors import Interrupted, VaelabError
from vaelab.models import Models, build_models
from vaelab.models.likelihoods import bits_per_dim, end_pixels
from vaelab.training import fused_step, optimizers, schedule, snapshots
from vaelab.training.distribute import ONE_DEVICE, STOP_CHECK_STEPS, Layout, layout, translated_errors
from vaelab.training.export import export_run

STEPS_PER_EXECUTION = 10  # steps per call into the compiled step, less Python overhead (torch allows only 1)

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def prepare(config: RunConfig, data: Dataset, place: Layout = ONE_DEVICE) -> tuple[Batches, Batches]:
    """The training and test batches the run uses, as floats in [0, 1]: subsets taken, pixels scaled.

    The training batches are shuffled every epoch from (seed, epoch). With binarisation the training
    images stay grey (the VAE draws binary pixels from them at each step) and the test images are
    the fixed binarised test set. On several devices every batch must split evenly over them. A conditional
    model's batches carry the one-hot labels too.
    """
    size, model = config.train.batch_size, config.model
    labels = (data.y_train, data.y_test) if model.conditional else (None, None)  # only a conditional model reads them
    train = Batches(
        data.x_train,
        size,
        count=config.train.train_subset,
        seed=config.train.seed,
        part=place.part,
        labels=labels[0],
        classes=model.classes,
    )
    test = Batches(
        data.x_test,
        size,
        count=config.train.test_subset,
        part=place.part,
        binarized=config.train.binarize,
        labels=labels[1],
        classes=model.classes,
    )
    place.check_batch(size)
    place.check_count("training", train.count, size, "--train-subset")
    place.check_count("test", test.count, size, "--test-subset")
    return train, test


def make_optimizer(config: RunConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    kinds = {"rmsprop": optimizers.RMSprop, "adam": optimizers.Adam}  # Keras', updates compiled where they can be
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
    devices: int | str = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    snapshots: bool = SNAPSHOTS,
    verbose: int | str = "auto",
    log: Log = _stderr,
) -> runs.Run:
    """Trains `config` on `data` into the new run directory `out` and returns the trained run.

    `out` must not hold a run unless `overwrite`. `devices` (an integer or "all") trains on that many
    devices of this process (`vaelab.training.distribute`). `callbacks` are passed to Keras' `fit` (the run
    directory stays the record of the run); `snapshots` records vaelab.training.snapshots after each recorded epoch.
    Ctrl-C stops after the current step: `Interrupted`.
    """
    config.validate()
    out = Path(out)
    place = layout(devices)
    if out.exists() and not out.is_dir():
        raise VaelabError(f"{out} is a file, not a run directory; choose another --out")
    data = _data_for(config, data, log)
    resolved = config.for_data(data)  # a training that cannot fit is refused before its directory exists
    limits.check_training(resolved, steps_per_epoch(resolved, data))
    with _writing(out, place), _interrupt.stop_at_step_boundary():
        if place.writer and (out / runs.CONFIG).exists() and not overwrite:
            raise VaelabError(
                f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                "or --out another directory"
            )
        data = _data_for(config, data, log)
        config = config.for_data(data)
        _check(place, config, data)
        with place.scope():
            models, optimizer = _build(config, data)
        info = {**runs.new_run_info(config, data), "distribution": place.record()}
        if place.writer:
            try:
                # --overwrite: the old run's files go only now that all is ready
                for name in (*runs.RUN_FILES, *runs.LATER_FILES):
                    (out / name).unlink(missing_ok=True)
                for old in (out / runs.SNAPSHOT_DIR).glob("*.png"):
                    old.unlink()
                runs.write_info(out, info)
            except OSError as err:  # removing the old files of --overwrite
                raise VaelabError(
                    f"cannot write the run directory {out} ({err.strerror}); choose another --out"
                ) from None
        return _fit(out, config, info, data, models, optimizer, [], 0, callbacks, snapshots, verbose, log, place)


def resume(
    out: str | os.PathLike[str],
    *,
    epochs: int | None = None,
    data: Dataset | None = None,
    devices: int | str = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    snapshots: bool = SNAPSHOTS,
    verbose: int | str = "auto",
    log: Log = _stderr,
) -> runs.Run:
    """Continues the run in `out` from its last completed epoch, with its saved configuration.

    `epochs` may raise the total. The run draws the same batches and noise it would have drawn
    had it never stopped, with the same KL weights and learning rates, on any number of `devices`.
    """
    out = Path(out)
    place = layout(devices)
    runs.read_info(out)  # a clear error for a directory that holds no run, before locking it
    with _writing(out, place), _interrupt.stop_at_step_boundary():
        info = runs.read_info(out)
        config = RunConfig.from_dict(info["config"])
        data = _data_for(config, data, log)
        config = config.for_data(data)
        if info["data_sha256"] != data.sha256:
            raise VaelabError(
                f"the {data.title} data found now differ from the data {out} was trained on; "
                "resume with the same data (see `vaelab data`)"
            )
        with place.scope():
            models, optimizer = _build(config, data)
            history: list[dict[str, float]] = []
            initial_epoch = 0
            resumable = True
            if (out / runs.CHECKPOINT).exists():
                optimizer.build(models.vae.trainable_variables)
                resumable = runs.has_optimizer_state(out)
                initial_epoch = runs.load_checkpoint(
                    out, models.vae, optimizer if resumable else None, run_id=info.get("run_id")
                )
                history = runs.read_history(out)[:initial_epoch]
        # where it trained last; a resume with no epoch to train leaves the run's files as they are
        changed = info.get("distribution") != place.record() and initial_epoch < config.train.epochs
        info = {**info, "distribution": place.record()}
        if epochs is not None and epochs != config.train.epochs:
            if epochs < initial_epoch:
                raise VaelabError(
                    f"{out} has completed {runs.epochs_in_words(initial_epoch)} already; ask for more than that"
                )
            config = config.replace(epochs=epochs)
            info = {**info, "config": config.to_dict()}
            changed = True
        if not resumable and initial_epoch < config.train.epochs:
            raise VaelabError(
                f"{out} was published without its optimizer's state (vaelab.run.drop_optimizer_state), so it cannot "
                "train on; evaluate, generate or explore it, or train a new run"
            )
        _check(place, config, data, initial_epoch)
        if place.writer and changed:
            runs.write_info(out, info)
        return _fit(
            out,
            config,
            info,
            data,
            models,
            optimizer,
            history,
            initial_epoch,
            callbacks,
            snapshots,
            verbose,
            log,
            place,
        )


def _writing(out: Path, place: Layout):
    """The run directory's lock, for the one process that writes it (the others only read)."""
    return DirectoryLock(out, "training") if place.writer else contextlib.nullcontext()


def _check(place: Layout, config: RunConfig, data: Dataset, initial_epoch: int = 0) -> None:
    """Before anything is written: the batches split evenly over the devices, and every process trains
    the same configuration on the same data from the same epoch."""
    prepare(config, data, place)
    limits.check_training(config, steps_per_epoch(config, data))
    place.check_same("configuration", json.dumps(config.to_dict(), sort_keys=True))
    place.check_same("data", data.sha256)
    place.check_same("checkpoint", str(initial_epoch))


def _data_for(config: RunConfig, data: Dataset | None, log: Log) -> Dataset:
    """The data handed in, checked to be the configuration's dataset, or that dataset loaded from the cache."""
    if data is None:
        return load_dataset(config.dataset, image_size=config.image_size, grey=config.grey, log=log)
    if data.name != config.dataset:
        raise VaelabError(f"the configuration names the dataset {config.dataset}, but the data given are {data.name}")
    return data


def _build(config: RunConfig, data: Dataset) -> tuple[Models, keras.optimizers.Optimizer]:
    models = build_models(config.model, seed=config.train.seed, binarize=config.train.binarize)
    per_epoch = steps_per_epoch(config, data)
    optimizer = make_optimizer(config, per_epoch)
    models.vae.compile(optimizer=optimizer, steps_per_execution=steps_per_execution(per_epoch))
    fused_step.install(models.vae, config.model)  # a dense VAE's step as one compiled call, where it applies
    return models, optimizer


def steps_per_execution(per_epoch: int) -> int:
    """Steps per call into the compiled step: the most, up to `STEPS_PER_EXECUTION`, that divide the epoch's steps.

    An epoch that ends inside a call costs Keras a second compiled function for the remainder, and its progress bar
    then counts past the epoch's end ("30/25"). Torch allows only 1.
    """
    if keras.backend.backend() == "torch":
        return 1
    return max(d for d in range(1, STEPS_PER_EXECUTION + 1) if per_epoch % d == 0)


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
    place: Layout = ONE_DEVICE,
) -> runs.Run:
    """Runs the epochs from `initial_epoch` to the configured total; returns the run as it now stands."""
    train_batches, test_batches = prepare(config, data, place)
    ours: list[keras.callbacks.Callback] = [EpochOrder(train_batches), StopAtStepBoundary(place)]
    ours.append(schedule.KLWeight(config.train))
    if record_snapshots and place.processes > 1 and place.writer:
        log("vaelab: no training snapshots in a multi-process run (its networks compute only all together)")
    if record_snapshots and place.processes == 1:
        x_test = test_images(data, binarized=config.train.binarize)[: config.train.test_subset]
        labels = data.y_test if data.labelled else None
        classes = config.model.classes if config.model.conditional else None
        ours.append(snapshots.SnapshotCallback(out, models, x_test, labels, config.train.seed, initial_epoch, classes))
    ours.append(EpochCheckpoint(out if place.writer else None, history, optimizer, info.get("run_id")))
    if initial_epoch < config.train.epochs:
        where = f" on {place.replicas} devices" if place.replicas > 1 else ""
        if place.writer:
            epochs = f"{initial_epoch + 1}-{config.train.epochs}"
            backend = f"Keras {keras.__version__} on {keras.backend.backend()}"
            log(f"vaelab: training {config.preset} for epochs {epochs} into {out}{where} ({backend})")
            if config.model.arch == "conv":
                log(f"vaelab: conv layers: {conv_layers(config, place)}")
            if fused_step.enabled() and config.model.arch == "mlp":
                log(f"vaelab: training step: {fused_step.describe(models.vae, config.model)}")
        try:
            with place.scope(), translated_errors(place, str(out)):
                ours[1].check()
                models.vae.fit(
                    train_batches,
                    epochs=config.train.epochs,
                    initial_epoch=initial_epoch,
                    validation_data=test_batches,
                    shuffle=False,  # the batches come shuffled, in the order drawn from (seed, epoch)
                    callbacks=[*ours, *callbacks],
                    verbose=verbose if place.writer else 0,
                )
        except Interrupted:
            how = f"`vaelab train --resume {out}`"
            if history:
                kept = f"{out} keeps {len(history)} completed epochs"
                raise Interrupted(f"interrupted; {kept}: continue with {how}") from None
            raise Interrupted(f"interrupted before the first epoch ended; start it again with {how}") from None
    last = history[-1]
    model = config.model
    metrics = {
        "run_id": info.get("run_id"),
        "epochs": len(history),
        "train_seconds": round(sum(row["seconds"] for row in history), 3),
        "test": {
            **{k: last[f"val_{k}"] for k in (*runs.LOSSES, *runs.TERMS) if f"val_{k}" in last},
            **({"kl_weight": last["kl_weight"]} if "kl_weight" in last else {}),  # (a vqvae has none)
            **{k: last[f"val_{k}"] for k in model.member.terms if f"val_{k}" in last},  # its own: a vqvae's
            # -ELBO per pixel value, in bits: the figure colour-image papers quote (vaelab.models.likelihoods)
            "bits_per_dim": bits_per_dim(
                last["val_elbo_loss"],
                model.input_shape,
                model.pixel_likelihood,
                binarized=config.train.binarize,
                end_pixels=_end_pixels_of_test_set(config, data),
            ),
            "bound": model.bound,  # what elbo_loss bounds: -log p(x), or a cvae's -log p(x|y)
        },
    }
    trained_now = initial_epoch < config.train.epochs
    kept = _finished(out, metrics) if not trained_now and place.writer else None
    if kept is not None:  # nothing trained now, and the run's files are whole: they stay byte for byte
        metrics = kept
    elif place.writer:  # an evaluation of the weights before these epochs is no longer theirs
        metrics = runs.update_metrics(out, drop=runs.WEIGHT_FIGURES if trained_now else (), **metrics)
    if place.replicas > 1:
        models = _local_copy(config, models)
    run = runs.Run(
        path=out,
        config=config,
        info={k: v for k, v in info.items() if k != "config"},
        models=models,
        epoch=len(history),
        history=history,
        metrics=metrics,
    )
    if place.writer and kept is None:
        export_run(run)
    return run


def _finished(out: Path, metrics: dict) -> dict | None:
    """metrics.json of a run that has nothing left to train, when it and the exported networks are whole and of this
    run (its id, its epochs); None where any is missing or damaged, to be written again."""
    try:
        kept = runs.read_metrics(out)
    except VaelabError:
        return None
    same = all(kept.get(k) == metrics[k] for k in ("run_id", "epochs")) and isinstance(kept.get("test"), dict)
    return kept if same and all((out / name).is_file() for name in runs.KERAS_FILES) else None


def conv_layers(config: RunConfig, place: Layout = ONE_DEVICE) -> str:
    """What computes the ConvNet's conv layers in this training, in words (the train log says it)."""
    if config.model.implementation == "keras":
        return "Keras' stock Conv2D, MaxPooling2D and UpSampling2D (--implementation keras)"
    if place.replicas > 1:
        return "vaelab's fused layers in keras.ops (the compiled kernels do not split over devices)"
    status = kernels.status()
    if status.in_use:
        return f"vaelab's compiled C++ kernels ({status.detail})"
    return f"vaelab's fused layers in keras.ops (compiled kernels not in use: {status.detail})"


def _local_copy(config: RunConfig, models: Models) -> Models:
    """The trained networks on this process alone: their weights copied out of the devices that trained them.

    The networks trained on several devices (of several processes) compute only where all of them take
    part; the copy runs anywhere, and process 0 can export it alone.
    """
    local = build_models(config.model, seed=config.train.seed, binarize=config.train.binarize)
    for target, source in zip(local.vae.variables, models.vae.variables, strict=True):
        target.assign(np.asarray(source))
    return local


class StopAtStepBoundary(keras.callbacks.Callback):
    """Ends `fit` between steps: after a Ctrl-C (`Interrupted`) or when the loss is no longer finite.

    In a multi-process run a Ctrl-C in any process stops all of them at the same step: they agree
    at the start of every epoch and every `STOP_CHECK_STEPS` steps (a collective operation each).
    The loss is the same number in every process, so a NaN stops them all at the same step too.
    """

    def __init__(self, place: Layout = ONE_DEVICE):
        super().__init__()
        self.place = place
        self.epoch = 0
        self.checked = 0

    def check(self) -> None:
        if self.place.stop_everywhere(_interrupt.requested()):
            raise Interrupted("interrupted")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
        self.checked = 0
        self.check()

    def on_train_batch_end(self, batch, logs=None):
        if self.place.processes == 1 or batch - self.checked >= STOP_CHECK_STEPS:
            self.checked = batch
            self.check()
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise diverged(loss, self.epoch)

    def on_test_batch_end(self, batch, logs=None):
        if self.place.processes == 1:  # several processes finish the (short) validation together
            _interrupt.check()


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves history.csv and checkpoint.npz after every epoch into `out` (None: keeps the history only,
    in the processes of a multi-process run that do not write)."""

    def __init__(self, out: Path | None, history: list[dict[str, float]], optimizer, run_id: str | None):
        super().__init__()
        self.out, self.history, self.optimizer, self.run_id = out, history, optimizer, run_id
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row["seconds"] = time.perf_counter() - self.started
        row.pop("val_kl_weight", None)  # the same weight as in training
        bad = [k for k in runs.history_columns(row)[1:] if not math.isfinite(row.get(k, 0.0))]
        if bad:
            raise diverged(row[bad[0]], epoch + 1)
        self.history.append(row)
        if self.out is None:
            return
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


def _end_pixels_of_test_set(config: RunConfig, data: Dataset) -> float:
    """The validation images' mean count of pixels at level 0 or 255, for a continuous Bernoulli's bits/dim."""
    if config.model.pixel_likelihood != "continuous-bernoulli":
        return 0.0
    return end_pixels(test_images(data, binarized=config.train.binarize)[: config.train.test_subset])
