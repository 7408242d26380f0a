"""Trainings side by side in pinned worker processes (vaelab.experiments.lanes): when widening a training onto a free
lane pays,
and a widened training stopped after an epoch and resumed, on real MNIST in real worker processes."""

from __future__ import annotations

import os

import pytest

from vaelab.config import make_config
from vaelab.experiments import lanes
from vaelab.run import load_run, read_history


def test_widening_pays_when_much_training_is_left_and_not_at_the_end():
    # Issue 20's AMD EPYC (Zen 4): the MLPs' lane is free after ~150 s, the ConvNet has ~27 epochs of 6.3 s left.
    assert lanes.widening_gain(27, 6.3, 10.0, 1, 2) == pytest.approx(27 * 6.3 * (1 - 1 / 1.4) - 10.0)
    assert lanes.widening_gain(27, 6.3, 10.0, 1, 2) > 30
    # The Intel Xeon: when its MLPs' lane is free the ConvNet has about two epochs of 4.7 s left.
    assert lanes.widening_gain(2, 4.7, 10.0, 1, 2) < 0
    assert lanes.widening_gain(0, 4.7, 0.0, 1, 2) == 0  # nothing left to gain
    # Four cores from two: the same assumed gain per doubling.
    assert lanes.widening_gain(10, 2.0, 0.0, 2, 4) == pytest.approx(20 * (1 - 1 / 1.4))


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="widening needs a second lane")
def test_a_widened_training_stops_after_an_epoch_and_resumes_on_both_lanes(tmp_path, mnist, monkeypatch):
    monkeypatch.setattr(lanes, "widening_gain", lambda remaining, *_: 1.0 if remaining > 0 else -1.0)
    cores = sorted(os.sched_getaffinity(0))[:2]
    # The short one's whole run (start, compile, 1 epoch) lasts about 3 of the long one's ~1 s epochs: 10 leave a
    # wide margin for it to end first, and little to train after the move.
    epochs = 10
    long = make_config("mlp", epochs=epochs, train_subset=20000, test_subset=200)
    short = make_config("mlp-fixed-var", epochs=1, train_subset=500, test_subset=200)
    jobs = [lanes.Job(long, tmp_path / "long", 2, 100), lanes.Job(short, tmp_path / "short", 2, 100)]
    said: list[str] = []
    ended: list[tuple[str, int]] = []  # each job as on_done saw it end, with the long one's epochs then

    def on_done(job: lanes.Job) -> None:
        ended.append((job.path.name, len(read_history(tmp_path / "long"))))

    lanes.run_in_lanes(jobs, [{cores[0]}, {cores[1]}], data_dir=None, log=said.append, on_done=on_done)

    assert [name for name, _ in ended] == ["short"]  # the long one ended last: nothing trained beside it then
    assert ended[0][1] < epochs  # the short one's end reached this process while the long one still trained

    both = ",".join(map(str, cores))
    moved = [line for line in said if "moves to cores" in line]
    assert len(moved) == 1 and moved[0].startswith(f"vaelab: mlp moves to cores {both} after its next epoch"), said
    assert f"vaelab: mlp resumes on cores {both}" in said, said
    run = load_run(tmp_path / "long")
    assert run.complete and run.metrics["evaluation"]["samples"] == 2
    assert [int(row["epoch"]) for row in read_history(tmp_path / "long")] == list(range(1, epochs + 1))
    log = jobs[0].log.read_text()
    assert log.count("training mlp for epochs") == 2, log[-2000:]  # the first start and the resumed one
    assert load_run(tmp_path / "short").complete
