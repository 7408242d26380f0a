"""Data-parallel training: 2 CPU devices in one process and 2 processes on 127.0.0.1 (gloo) train the
same mathematics as one device, resume from the run directory, write it once, and stop together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import LEAN_KERAS, TEST_SUBSET, TRAIN_SUBSET, run_cli
from vaelab._lock import LOCK_FILE
from vaelab.errors import VaelabError
from vaelab.run import CHECKPOINT, RUN_FILES, SNAPSHOTS, read_history
from vaelab.training.distribute import Layout, ProcessLost, translated_errors

TOLERANCE = 1e-3  # nats: the bound; the same sums in another order differ by ~1e-5
KEYS = ("loss", "reconstruction_loss", "kl_loss", "val_loss", "val_kl_loss")
SUBSETS = ["--train-subset", str(TRAIN_SUBSET), "--test-subset", str(TEST_SUBSET)]
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def assert_same_losses(history: list[dict], reference: list[dict]) -> None:
    assert len(history) == len(reference)
    for row, ref in zip(history, reference, strict=True):
        for key in KEYS:
            assert abs(row[key] - ref[key]) < TOLERANCE, (row["epoch"], key, row[key], ref[key])


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.strip().splitlines() if line.strip()][-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(port: int, outs: list[Path], *args: str) -> list[subprocess.Popen]:
    """Two `vaelab train` processes joined at 127.0.0.1:port; process i writes (if at all) to outs[i]."""
    common = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--peer-timeout", "10"]
    return [
        subprocess.Popen(
            [sys.executable, "-m", "vaelab", "train", *args, *common, "--process-id", str(i), "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, out in enumerate(outs)
    ]


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append((proc.returncode, out, err))
    return results


TWO_DEVICE_SCRIPT = """
import json, sys
from vaelab.config import make_config
from vaelab.training.loop import resume, train
config = make_config("mlp", epochs=1, train_subset=int(sys.argv[2]), test_subset=int(sys.argv[3]))
train(config, sys.argv[1], devices=2, verbose=0)
print(json.dumps(resume(sys.argv[1], epochs=2, devices="all", verbose=0).history))
"""


@pytest.mark.slow
def test_two_devices_in_one_process_train_and_resume_as_one_device(tmp_path, small_run):
    """One epoch on 2 devices, a checkpoint, a resumed second epoch: the losses of the 1-device run."""
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", LEAN_KERAS + TWO_DEVICE_SCRIPT, str(run), str(TRAIN_SUBSET), str(TEST_SUBSET)],
        capture_output=True,
        text=True,
        env={**os.environ, **TWO_DEVICES},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 devices" in done.stderr
    info = json.loads((run / "config.json").read_text())
    assert info["distribution"] == {"platform": "cpu", "processes": 1, "devices_per_process": 2}
    assert_same_losses(json.loads(done.stdout.strip().splitlines()[-1]), small_run.history)
    assert_same_losses(read_history(run), small_run.history)


@pytest.mark.slow
def test_two_processes_train_write_once_and_resume_as_one_device(tmp_path, small_run):
    """Two processes on 127.0.0.1: the 1-device losses; process 0 alone writes; both resume from its run."""
    written, elsewhere = tmp_path / "run", tmp_path / "process1"
    results = finish(start_processes(free_port(), [written, elsewhere], *SUBSETS, "--epochs", "1"))
    for code, _, err in results:
        assert code == 0, err[-3000:]
    assert "process 1 of 2; process 0 saved the run" in results[1][1]
    # every run file but the snapshots, which a multi-process run does not record
    assert sorted(p.name for p in written.iterdir()) == sorted({*RUN_FILES, LOCK_FILE} - {SNAPSHOTS})
    assert not elsewhere.exists()  # process 1 wrote nothing
    assert_same_losses(read_history(written), small_run.history[:1])

    # Both processes read the run (one file system here), and continue it.
    port = free_port()
    resumed = finish(start_processes(port, [written, written], "--resume", str(written), "--epochs", "2"))
    for code, _, err in resumed:
        assert code == 0, err[-3000:]
    assert_same_losses(read_history(written), small_run.history)


@pytest.mark.slow
def test_a_killed_process_stops_the_other_within_the_timeout(tmp_path, mnist):
    """SIGKILL to process 1 mid-training: process 0 exits non-zero with one line, well within --peer-timeout."""
    outs = [tmp_path / "run", tmp_path / "process1"]
    procs = start_processes(free_port(), outs, *SUBSETS, "--epochs", "1000")
    try:
        deadline = time.monotonic() + 300
        while not (outs[0] / CHECKPOINT).exists():  # training is under way: one epoch saved
            assert all(p.poll() is None for p in procs), finish(procs)
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.1)
        procs[1].kill()
        killed = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[0].returncode == ProcessLost.exit_code, err[-3000:]
    assert took < 10, took  # the documented bound: --peer-timeout (here 10 s); a closed connection is seen at once
    line = one_line(err)
    assert "lost contact with another process of this run" in line
    assert f"vaelab train --resume {outs[0]}" in line


def test_a_batch_that_does_not_split_over_the_devices_is_one_line_before_anything_is_written(tmp_path, mnist):
    out = tmp_path / "run"
    args = ["--devices", "2", "--batch-size", "99", "--epochs", "1", "--out", str(out)]
    result = run_cli("train", *SUBSETS, *args, env=TWO_DEVICES)
    assert result.returncode == 2
    assert "a batch of 99 does not split evenly over 2 devices" in one_line(result.stderr)
    assert not (out / "config.json").exists()


def test_every_batch_must_split_evenly_over_the_devices():
    place = Layout(devices=("cpu:0", "cpu:1", "cpu:2", "cpu:3"), local=2, processes=2, process_id=1)
    place.check_batch(100)
    place.check_count("training", 60000, 100, "--train-subset")
    place.check_count("training", 1004, 100, "--train-subset")  # a last batch of 4: one image per device
    with pytest.raises(VaelabError, match="a batch of 98 does not split evenly over 4 devices"):
        place.check_batch(98)
    with pytest.raises(VaelabError, match="last batch of 2, which does not split evenly over 4 devices; pass --tr"):
        place.check_count("training", 1002, 100, "--train-subset")
    assert place.part == (1, 2) and not place.writer and place.replicas == 4


LAYOUT_SCRIPT = """
from vaelab.training.distribute import initialize, layout, use_cpu_devices
from vaelab.errors import VaelabError
use_cpu_devices(2)
for ask in (lambda: layout(2), lambda: layout(4), lambda: initialize("127.0.0.1:1", 2, 0)):
    try:
        p = ask()
        print(p.devices, p.replicas, p.platform)
    except VaelabError as err:
        print(err)
"""


def test_a_lost_peer_inside_a_collective_names_the_run_to_resume():
    """The stop check's collective does not know the run; the training loop around it does, and says it."""
    place = Layout(devices=("cpu:0", "cpu:1"), local=1, processes=2, process_id=0)
    gloo = "Gloo AllGather failed: [gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:1: reset"
    with pytest.raises(ProcessLost) as caught, translated_errors(place, "/runs/a"), translated_errors(place):
        raise RuntimeError(gloo)
    assert "`vaelab train --resume /runs/a`" in str(caught.value)
    assert "Gloo AllGather failed: Read error" in str(caught.value)


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_devices_on_this_machine_and_on_other_backends(backend):
    """JAX: without XLA_FLAGS, `use_cpu_devices(2)` splits the CPU in two (the devices share its cores), and 4
    are too many once JAX runs. Other backends refuse several devices and processes in one line."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, "-c", LAYOUT_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    if backend == "jax":
        assert lines[0] == "('cpu:0', 'cpu:1') 2 cpu"
        assert lines[1].startswith("asked for 4 devices, but this process has 2 (cpu:0, cpu:1)")
        assert lines[2].startswith("JAX started before the processes joined")
    else:
        assert len(lines) == 3
        assert all("needs the JAX backend, and Keras runs on numpy" in line for line in lines)
