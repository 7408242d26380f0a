"""β, KL warm-up and the learning-rate decay: what is optimised, what is reported, and resume follows them."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from tests.conftest import TEST_SUBSET, TRAIN_SUBSET
from vaelab.config import TrainConfig, make_config
from vaelab.errors import VaelabError
from vaelab.run import CHECKPOINT, CONFIG, HISTORY, load_run, read_history
from vaelab.training import schedule
from vaelab.training.loop import resume, train


def small(**kw):
    return make_config("mlp", **{"train_subset": TRAIN_SUBSET, "test_subset": TEST_SUBSET, **kw})


def test_the_kl_weight_rises_linearly_to_beta_over_the_warm_up():
    config = TrainConfig(beta=4.0, kl_warmup=4)
    assert [schedule.kl_weight(config, e) for e in range(6)] == [1.0, 2.0, 3.0, 4.0, 4.0, 4.0]
    assert [schedule.kl_weight(TrainConfig(beta=0.5), e) for e in range(3)] == [0.5, 0.5, 0.5]
    assert schedule.kl_weight(TrainConfig(), 0) == 1.0  # the ELBO


def test_the_learning_rate_follows_burdas_eight_stages_compressed():
    config = TrainConfig(learning_rate=1e-3, lr_decay_epochs=3280)
    lr = schedule.learning_rate(config, steps_per_epoch=1)  # one step per epoch: the paper's epochs
    stage_starts = [0, 1, 4, 13, 40, 121, 364, 1093]  # sum of 3^j, j < i
    for i, start in enumerate(stage_starts):
        assert float(lr(start)) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-5)
    assert float(lr(5000)) == pytest.approx(1e-4, rel=1e-5)  # after the schedule: its last rate
    half = schedule.learning_rate(TrainConfig(lr_decay_epochs=1640), steps_per_epoch=10)
    assert float(half(10 * 1093 // 2 + 1)) == pytest.approx(1e-3 * 10 ** (-7 / 7), rel=1e-5)
    assert schedule.learning_rate(TrainConfig(), 100) == 1e-3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": -1.0}, "beta must be a finite number >= 0, got -1.0"),
        ({"beta": float("nan")}, "beta must be a finite number >= 0"),
        ({"kl_warmup": -2}, "kl_warmup must be an integer >= 0"),
        ({"lr_decay_epochs": 0}, "lr_decay_epochs must be an integer >= 1"),
    ],
)
def test_bad_schedules_are_one_line_errors(kwargs, message):
    with pytest.raises(VaelabError, match=message):
        make_config("mlp", **kwargs)


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory, mnist):
    """β = 2 with a 3-epoch warm-up, trained 2 epochs, with a Keras CSVLogger passed through (experiment tracking)."""
    base = tmp_path_factory.mktemp("beta")
    log = keras.callbacks.CSVLogger(str(base / "tracking.csv"))
    run = train(small(epochs=2, beta=2.0, kl_warmup=3), base / "run", callbacks=[log], verbose=0)
    return run, base


def test_the_logged_objective_is_reconstruction_plus_the_scheduled_weight_times_kl(warm_run):
    run, base = warm_run
    history = read_history(run.path)
    for row, w in zip(history, [2 / 3, 4 / 3], strict=True):
        assert row["kl_weight"] == pytest.approx(w, rel=1e-6)
        assert row["loss"] == pytest.approx(row["reconstruction_loss"] + w * row["kl_loss"], rel=1e-4)
        assert row["val_loss"] == pytest.approx(row["val_reconstruction_loss"] + w * row["val_kl_loss"], rel=1e-4)
        assert row["elbo_loss"] == pytest.approx(row["reconstruction_loss"] + row["kl_loss"], rel=1e-4)
    metrics = json.loads((run.path / "metrics.json").read_text())["test"]
    assert metrics["elbo_loss"] == pytest.approx(metrics["reconstruction_loss"] + metrics["kl_loss"], rel=1e-5)
    assert metrics["loss"] == pytest.approx(metrics["reconstruction_loss"] + 4 / 3 * metrics["kl_loss"], rel=1e-5)
    assert metrics["kl_weight"] == pytest.approx(4 / 3)
    # The callback passed to train saw what the progress bar shows, the weight and the true ELBO included.
    with open(base / "tracking.csv") as f:
        tracked = list(csv.DictReader(f))
    assert [float(r["kl_weight"]) for r in tracked] == pytest.approx([2 / 3, 4 / 3])
    assert [float(r["elbo_loss"]) for r in tracked] == pytest.approx([r["elbo_loss"] for r in history], rel=1e-5)


def test_resume_in_the_middle_of_the_warm_up_matches_an_uninterrupted_run(warm_run, tmp_path):
    run, _ = warm_run
    train(small(epochs=1, beta=2.0, kl_warmup=3), tmp_path / "r", verbose=0)
    resumed = resume(tmp_path / "r", epochs=2, verbose=0)
    for key in ("loss", "kl_weight", "kl_loss", "val_loss", "val_elbo_loss"):
        assert resumed.history[1][key] == pytest.approx(run.history[1][key], rel=1e-6), key
    z = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    np.testing.assert_allclose(resumed.decode(z), run.decode(z), atol=1e-6)


def test_runs_made_before_beta_existed_still_load_and_resume(small_run, tmp_path):
    """An old run: config.json without the new fields, history.csv without the new columns, a checkpoint
    without the KL weight. It loads, reads with the ELBO filled in, and resumes."""
    import shutil

    old = shutil.copytree(small_run.path, tmp_path / "old")
    info = json.loads((old / CONFIG).read_text())
    for name in ("beta", "kl_warmup", "lr_decay_epochs"):
        del info["config"]["train"][name]
    for name in ("hidden", "activation"):
        del info["config"]["model"][name]
    (old / CONFIG).write_text(json.dumps(info))
    rows = list(csv.DictReader((old / HISTORY).read_text().splitlines()))
    columns = ["epoch", "loss", "reconstruction_loss", "kl_loss", "val_loss", "val_reconstruction_loss"]
    columns += ["val_kl_loss", "seconds"]
    (old / HISTORY).write_text(",".join(columns) + "\n" + "".join(",".join(r[c] for c in columns) + "\n" for r in rows))
    with np.load(old / CHECKPOINT) as saved:
        arrays = dict(saved)
    paths = [str(p) for p in arrays["model_paths"]]
    k = paths.index("kl_weight")
    values = [arrays.pop(f"model/{i:03d}") for i in range(len(paths))]
    del paths[k], values[k]
    arrays["model_paths"] = np.asarray(paths)
    arrays.update({f"model/{i:03d}": v for i, v in enumerate(values)})
    np.savez(old / CHECKPOINT, **arrays)

    loaded = load_run(old)
    assert loaded.config == small_run.config and loaded.epoch == 2
    assert loaded.history[1]["elbo_loss"] == pytest.approx(float(rows[1]["loss"]), rel=1e-5)
    assert loaded.history[1]["kl_weight"] == 1.0
    x = np.random.default_rng(1).random((4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(loaded.encode(x)[0], small_run.encode(x)[0])
    resumed = resume(old, epochs=3, verbose=0)
    assert resumed.epoch == 3 and "elbo_loss" in (old / HISTORY).read_text().splitlines()[0]
