"""Nothing lost: one writer per run directory, Ctrl-C at a step boundary, readers never see a mixed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import NO_JAX_CACHE
from vaelab import _interrupt
from vaelab._lock import DirectoryLock
from vaelab.errors import Interrupted, VaelabError
from vaelab.run import CHECKPOINT, CONFIG, load_run

TRAIN = ["train", "--train-subset", "3000", "--test-subset", "300"]


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vaelab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    return lines[-1]


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    with (
        DirectoryLock(tmp_path, "training"),
        pytest.raises(VaelabError, match=rf"is in use by process {os.getpid()} \(training since"),
    ):
        DirectoryLock(tmp_path, "evaluation").__enter__()
    with DirectoryLock(tmp_path, "evaluation"):  # released: free again
        pass
    # A holder killed with SIGKILL leaves no stale lock: the kernel drops flock locks with the process.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vaelab._lock import DirectoryLock\n"
         f"with DirectoryLock({str(tmp_path)!r}, 'test'):\n print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(VaelabError, match=f"in use by process {holder.pid}"):
        DirectoryLock(tmp_path, "training").__enter__()
    holder.kill()
    holder.wait()
    with DirectoryLock(tmp_path, "training"):
        pass


@pytest.mark.slow
def test_a_second_writer_is_refused_while_a_run_trains(tmp_path, mnist, vaelab):
    # The second writers run in this process (`vaelab`): another process than the first, which is what the lock sees.
    out = tmp_path / "run"
    first = start_cli(*TRAIN, "--epochs", "1000", "--out", str(out))  # minutes: it is killed below
    try:
        wait_for(lambda: (out / ".lock").exists() and (out / ".lock").stat().st_size > 0, first)
        # before config.json exists (the old race), and with --overwrite, and as --resume: all refused
        for args in ([*TRAIN, "--epochs", "1", "--out", str(out)], [*TRAIN, "--out", str(out), "--overwrite"]):
            second = vaelab(*args)
            assert second.returncode == 2
            assert f"is in use by process {first.pid} (training since" in one_line(second.stderr)
        wait_for(lambda: (out / CONFIG).exists(), first)
        second = vaelab("train", "--resume", str(out))
        assert second.returncode == 2 and f"in use by process {first.pid}" in one_line(second.stderr)
    finally:
        first.kill()
        first.communicate()
    # The killed writer left no stale lock: its run can be resumed at once.
    done = load_run(out).epoch
    resumed = vaelab("train", "--resume", str(out), "--epochs", str(done + 1))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_run(out).epoch == done + 1


@pytest.mark.slow
def test_two_writers_started_together_leave_one_whole_run(tmp_path, mnist):
    out = tmp_path / "run"
    procs = [start_cli(*TRAIN, "--epochs", "1", "--seed", str(seed), "--out", str(out)) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = next(k for k, (code, _) in enumerate(results) if code == 0)
    loser_err = results[1 - winner][1][1]
    assert "is in use by process" in one_line(loser_err) or "already holds a run" in one_line(loser_err)
    run = load_run(out)
    assert run.config.train.seed == (1, 2)[winner]
    assert f"test loss {run.metrics['test']['loss']:.2f}" in results[winner][1][0]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 1.0])
def test_ctrl_c_during_the_first_compilation_exits_cleanly(tmp_path, mnist, delay, vaelab):
    out = tmp_path / "run"
    proc = start_cli(*TRAIN, "--epochs", "3", "--preset", "conv", "--out", str(out), env=NO_JAX_CACHE)
    wait_for(lambda: (out / CONFIG).exists(), proc)  # config.json is written just before the first step compiles
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    last = one_line(stderr)
    assert f"vaelab train --resume {out}" in last and "interrupted" in last
    assert "Fatal Python error" not in stderr
    if not (out / CHECKPOINT).exists():
        assert "before the first epoch ended" in last
    resumed = vaelab("train", "--resume", str(out), "--epochs", "1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]


@pytest.mark.slow
def test_a_second_ctrl_c_leaves_at_once(tmp_path, mnist):
    out = tmp_path / "run"
    proc = start_cli(*TRAIN, "--epochs", "3", "--preset", "conv", "--out", str(out), env=NO_JAX_CACHE)
    wait_for(lambda: (out / CONFIG).exists(), proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("vaelab")


# A Ctrl-C that lands in a callback C code runs (JAX's _xla_gc_callback is one) is printed as "Exception ignored"
# and lost; one that something catches is lost too. The command line's handler must end the process anyway.
LOST_IN_A_GC_CALLBACK = """
import gc, os, signal, time
{install}
def callback(phase, info):
    if phase == "start" and not fired:
        fired.append(1)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10000):  # the handler runs here, inside the callback
            pass
fired = []
gc.callbacks.append(callback)
gc.collect()
time.sleep(30)
"""
CAUGHT = """
import os, signal, time
{install}
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
except KeyboardInterrupt:
    pass  # swallowed, as some library might
time.sleep(30)
"""
INSTALL = "from vaelab import _interrupt; _interrupt.leave_on_interrupt()"


@pytest.mark.parametrize("script", [LOST_IN_A_GC_CALLBACK, CAUGHT], ids=["gc-callback", "caught"])
def test_a_ctrl_c_outside_the_guard_cannot_be_lost(script):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script.format(install=INSTALL)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert time.monotonic() - started < 20  # not the 30 s sleep
    assert proc.stderr.strip().splitlines() == ["vaelab: interrupted"], proc.stderr[-2000:]


CONSOLE_SCRIPT = Path(sys.executable).with_name("vaelab")  # what `pip install` made of [project.scripts]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["python -m vaelab", "console script"])
@pytest.mark.parametrize("delay", [0.5, 1.0, 1.5, 2.5])  # from 0.5 s: before it, Python may still be starting
def test_an_early_ctrl_c_stops_the_command(tmp_path, mnist, delay, entry):
    """The issue's case: Ctrl-C during start-up, before the step-boundary guard (JAX importing, compiling).

    Before the fix a Ctrl-C there was lost (40 epochs, status 0), then, once it raised KeyboardInterrupt, it
    crashed the process now and then (SIGSEGV or SIGABRT as it exited, about 1 in 10)."""
    if entry == "console script" and not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no console script beside {sys.executable} (the package is not installed in this environment)")
    out = tmp_path / "R"
    argv = ["train", "--preset", "mlp", "--train-subset", "2000", "--test-subset", "500", "--epochs", "40"]
    argv += ["--out", str(out)]
    command = [str(CONSOLE_SCRIPT)] if entry == "console script" else [sys.executable, "-m", "vaelab"]
    proc = subprocess.Popen([*command, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    assert "interrupted" in stderr.strip().splitlines()[-1]
    if (out / "history.csv").exists():
        assert len((out / "history.csv").read_text().splitlines()) < 41  # stopped long before its 40 epochs


def test_ctrl_c_stops_an_evaluation_between_batches(small_run, mnist):
    from vaelab.analysis.evaluate import evaluate

    with _interrupt.stop_at_step_boundary():
        os.kill(os.getpid(), signal.SIGINT)  # a real signal: the handler only sets the flag
        with pytest.raises(Interrupted, match="evaluation interrupted"):
            evaluate(small_run, mnist, samples=2, images=50)
    assert not _interrupt.requested()


def test_a_diverging_loss_stops_the_run_and_keeps_json_strict(tmp_path, mnist, vaelab):
    result = vaelab(*TRAIN, "--epochs", "2", "--learning-rate", "1e12", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "training diverged" in one_line(result.stderr)
    assert not (tmp_path / "run" / "metrics.json").exists()
    for path in (tmp_path / "run").glob("*.json"):
        json.loads(path.read_text(), parse_constant=pytest.fail)  # NaN/Infinity are not JSON


def test_a_reader_never_mixes_two_runs(tmp_path, small_run):
    """config.json of one run with the checkpoint of another (an --overwrite caught half-way) is detected."""
    import shutil

    from vaelab.config import make_config
    from vaelab.training.loop import train

    other = train(make_config("mlp", epochs=1, train_subset=300, test_subset=100), tmp_path / "other", verbose=0)
    mixed = tmp_path / "mixed"
    shutil.copytree(small_run.path, mixed)
    shutil.copy(other.path / CHECKPOINT, mixed / CHECKPOINT)
    with pytest.raises(VaelabError, match="belongs to another run"):
        load_run(mixed)
    shutil.copy(small_run.path / CHECKPOINT, mixed / CHECKPOINT)
    (mixed / "history.csv").write_text((mixed / "history.csv").read_text().splitlines()[0] + "\n")
    with pytest.raises(VaelabError, match="holds 0 epochs"):
        load_run(mixed)
    assert np.isfinite(load_run(small_run.path).metrics["test"]["loss"])
