"""Training on real MNIST: the loss falls, runs save and load exactly, seeds repeat, resume continues."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import TEST_SUBSET, TRAIN_SUBSET
from vaelab._lock import LOCK_FILE
from vaelab.config import make_config
from vaelab.errors import VaelabError
from vaelab.run import HISTORY_COLUMNS, RUN_DIRS, RUN_FILES, SNAPSHOT_DIR, SNAPSHOTS, load_run
from vaelab.training.loop import resume, steps_per_execution, train


def small(preset="mlp", **kw):
    return make_config(preset, **{"epochs": 2, "train_subset": TRAIN_SUBSET, "test_subset": TEST_SUBSET, **kw})


def test_training_lowers_the_loss_and_writes_the_run_files(small_run):
    assert sorted(p.name for p in small_run.path.iterdir()) == sorted([*RUN_FILES, *RUN_DIRS, LOCK_FILE])
    assert sorted(p.name for p in (small_run.path / SNAPSHOT_DIR).iterdir()) == ["epoch-0001.png", "epoch-0002.png"]
    history = small_run.history
    assert [row["epoch"] for row in history] == [1, 2]
    assert set(history[0]) == set(HISTORY_COLUMNS)
    assert history[1]["loss"] < history[0]["loss"]
    assert history[1]["val_loss"] < history[0]["val_loss"]
    for row in history:
        assert row["loss"] == pytest.approx(row["reconstruction_loss"] + row["kl_loss"], rel=1e-4)
    metrics = json.loads((small_run.path / "metrics.json").read_text())
    assert metrics["test"]["loss"] == pytest.approx(history[-1]["val_loss"])
    info = json.loads((small_run.path / "config.json").read_text())
    assert info["versions"]["backend"] and info["versions"]["keras"].startswith("3.")
    assert len(info["data_sha256"]) == 64


def test_load_run_gives_the_same_outputs_as_before_saving(small_run, mnist):
    from vaelab.data import scale_pixels

    x = scale_pixels(mnist.x_test[:64])
    z = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    loaded = load_run(small_run.path)
    for a, b in zip(small_run.encoder.predict(x, verbose=0), loaded.encoder.predict(x, verbose=0), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(small_run.generator.predict(z, verbose=0), loaded.generator.predict(z, verbose=0))
    np.testing.assert_array_equal(small_run.decode(z), loaded.decode(z))
    assert loaded.epoch == 2 and loaded.complete and loaded.config == small_run.config


@pytest.mark.parametrize("preset", ["mlp-fixed-var", "conv"])
def test_other_presets_train_with_falling_loss(preset, tmp_path):
    run = train(small(preset), tmp_path / preset, verbose=0)
    assert run.history[1]["loss"] < run.history[0]["loss"]
    assert run.history[1]["val_loss"] < run.history[0]["val_loss"]


def test_same_seed_same_losses_other_seed_other_losses(tmp_path, small_run):
    config = small(epochs=1)
    a = train(config, tmp_path / "a", verbose=0).history[0]
    b = train(config, tmp_path / "b", verbose=0, snapshots=False).history[0]  # snapshots change nothing
    assert not (tmp_path / "b" / SNAPSHOTS).exists()
    c = train(config.replace(seed=1), tmp_path / "c", verbose=0).history[0]
    for key in ("loss", "val_loss", "kl_loss"):
        assert a[key] == b[key]
    assert a["loss"] != c["loss"]
    assert a["loss"] == small_run.history[0]["loss"]  # 1 epoch of a 2-epoch run is the same epoch


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(tmp_path, small_run):
    from vaelab.training.snapshots import read_snapshots

    train(small(epochs=1), tmp_path / "r", verbose=0)
    resumed = resume(tmp_path / "r", epochs=2, verbose=0)
    assert resumed.epoch == 2
    for key in ("loss", "val_loss", "reconstruction_loss"):
        assert resumed.history[1][key] == pytest.approx(small_run.history[1][key], rel=1e-6)
    shots, uninterrupted = read_snapshots(tmp_path / "r"), read_snapshots(small_run.path)
    assert list(shots.epoch) == [1, 2]
    np.testing.assert_array_equal(shots.inputs, uninterrupted.inputs)
    assert np.abs(shots.samples.astype(int) - uninterrupted.samples).max() <= 1  # the same decodes, to rounding


def test_a_resume_with_nothing_to_do_leaves_every_file_byte_for_byte(tmp_path, small_run):
    import shutil

    shutil.copytree(small_run.path, tmp_path / "done")

    def files() -> dict:  # every file but the lock, which names whoever held it last
        return {p.relative_to(tmp_path): p.read_bytes() for p in sorted((tmp_path / "done").rglob("*"))
                if p.is_file() and p.name != ".lock"}  # fmt: skip

    before = files()
    again = resume(tmp_path / "done", verbose=0)
    assert files() == before  # metrics.json keeps full precision: not rebuilt from history.csv's 6 decimals
    assert again.metrics == small_run.metrics and again.epoch == 2
    (tmp_path / "done" / "metrics.json").unlink()  # a lost metrics.json is written again
    assert resume(tmp_path / "done", verbose=0).metrics["test"] == pytest.approx(small_run.metrics["test"])


def test_an_existing_run_is_not_overwritten_by_accident(small_run):
    with pytest.raises(VaelabError, match="already holds a run; pass --resume"):
        train(small(), small_run.path, verbose=0)


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(VaelabError, match="no run at"):
        load_run(tmp_path / "nothing")
    with pytest.raises(VaelabError, match="no run at"):
        resume(tmp_path / "nothing")


def test_each_call_into_the_compiled_step_ends_inside_one_epoch():
    """Up to ten steps per call, a divisor of the epoch's steps: no call runs past an epoch's end ("30/25")."""
    assert [steps_per_execution(n) for n in (600, 3000, 25, 2, 23, 1)] == [10, 10, 5, 2, 1, 1]


def test_snapshots_are_recorded_for_every_early_epoch_then_ever_more_sparsely():
    from vaelab.training.snapshots import recorded

    assert all(recorded(epoch) for epoch in range(1, 101))
    assert [e for e in range(101, 1001) if recorded(e)] == list(range(110, 1001, 10))
    assert [e for e in range(1001, 3281) if recorded(e)] == list(range(1100, 3201, 100))
    assert recorded(3280, last=3280) and recorded(1137, last=1137) and not recorded(1137, last=3280)
    assert sum(recorded(e, last=3280) for e in range(1, 3281)) == 213  # Burda et al.'s schedule: 213, not 3,280


def test_a_training_records_the_snapshots_of_its_recorded_epochs_and_its_last(tmp_path, monkeypatch):
    from vaelab.training import snapshots

    monkeypatch.setattr(snapshots, "recorded", lambda epoch, last=None: epoch in (1, last))  # a sparse rule
    train(small(epochs=3), tmp_path / "s", verbose=0)
    assert list(snapshots.read_snapshots(tmp_path / "s").epoch) == [1, 3]
    assert sorted(p.name for p in (tmp_path / "s" / "snapshots").iterdir()) == ["epoch-0001.png", "epoch-0003.png"]
