"""Several trainings at once, each in its own process pinned to its own share of the CPU's cores.

One small network does not keep two cores busy: on the 2-core development machine the MLP trains at
2.21 s/epoch on one core and 1.80 on two (benchmarks/distributed_speed.py), so two trainings side by
side, one core each, finish far sooner than one after the other on both. `vaelab report` uses this
for its three networks. Each training is an ordinary run directory, trained (or resumed) and
evaluated by `python -m vaelab._sweep_worker`, the process a sweep point runs in; its output goes to
a log file beside the run.

A Ctrl-C in the terminal reaches the workers too; they stop at a step boundary, and the run
directories keep their completed epochs, as `vaelab train` leaves them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab import _interrupt
from vaelab.config import RunConfig
from vaelab.errors import Interrupted, VaelabError
from vaelab.run import read_history

POLL_SECONDS = 0.2
PROGRESS_SECONDS = 15  # at most one progress line this often
# What a network gains, at the least, from twice the cores: the ConvNet trains 1.46x faster on two cores than on one
# on the Intel Xeon and 1.8x on the AMD EPYC Zen 4 (issue 20). A lower guess only makes widening rarer.
TWO_CORE_SPEEDUP = 1.4


@dataclass
class Job:
    """One training to run: its configuration, its run directory, how to evaluate it afterwards."""

    config: RunConfig
    path: Path
    samples: int  # K of the importance-weighted bound
    images: int  # test images to evaluate on

    @property
    def log(self) -> Path:
        return self.path.with_name(f"{self.path.name}.log")


@dataclass
class _Running:
    """A job's worker: where it runs, when it started, and whether this process asked it to stop (to widen it)."""

    job: Job
    cores: set[int]
    started: float
    epochs: int = -1  # its completed epochs when last looked at (-1: not yet)
    first_epoch: float | None = None  # seconds from its start to its first epoch's end: start-up, compiling, an epoch
    widen_to: set[int] | None = None  # the cores it moves to once it has stopped after its next epoch
    epochs_seen: int = 0  # its completed epochs when the widening was decided
    stopping: bool = False  # asked to stop (once: a second SIGINT would make it leave mid-step)

    def look(self) -> list[dict[str, float]]:
        """Its history now; notes when its first epoch in this process came in (the start-up a restart repeats)."""
        history = _history(self.job)
        if self.epochs >= 0 and len(history) > self.epochs and self.first_epoch is None:
            self.first_epoch = time.monotonic() - self.started
        self.epochs = len(history)
        return history


def widening_gain(remaining_epochs: int, epoch_seconds: float, restart_seconds: float, cores: int, wider: int) -> float:
    """Seconds saved by stopping a training after its epoch and resuming it on `wider` cores instead of `cores`
    (negative: it would finish later). Its epochs cost `epoch_seconds` now; on more cores they are assumed to be
    `TWO_CORE_SPEEDUP` faster per doubling, and the restart (a process, the data, compiling) costs
    `restart_seconds` more, as its first start did."""
    speedup = TWO_CORE_SPEEDUP ** math.log2(wider / cores)
    stay = remaining_epochs * epoch_seconds
    return stay - (restart_seconds + stay / speedup)


def cpu_lanes(jobs: int) -> list[set[int]]:
    """The cores this process may use, cut into one disjoint set per concurrent training (at most `jobs`)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    lanes = min(jobs, len(cores))
    return [set(cores[i::lanes]) for i in range(lanes)]


def run_in_lanes(
    jobs: list[Job],
    lanes: list[set[int]],
    *,
    data_dir: str | None,
    log: Callable[[str], None],
    widen: bool = True,
    on_done: Callable[[Job], None] | None = None,
) -> None:
    """Runs the jobs, at most one per lane at a time, in the order given; raises on the first failure.

    `on_done(job)` is called in this process as a job ends while others still run, once its lane has its next
    job: the report analyses a finished run there while the others train.

    The jobs start in the order given, each in the first lane that is free: put the longest first. With `widen`,
    a lane left free with nothing to start goes to the training that will end last, when `widening_gain` says that
    stopping it after its next epoch and resuming it on both lanes' cores ends it sooner (measured: its epochs'
    seconds and its start-up). A widened training resumes from its checkpoint exactly, but on more threads, whose
    sums add in another order: its figures then differ from an unwidened run's in the last digits, and its
    trajectory from there on.
    """
    pending = list(jobs)
    running: dict[subprocess.Popen, _Running] = {}
    free = list(lanes)
    last_progress = 0.0

    def start_pending() -> None:
        while pending and free:
            job, cores = pending.pop(0), free.pop(0)
            running[_start(job, cores, data_dir)] = _Running(job, cores, time.monotonic())
            log(f"vaelab: training {job.config.preset} on cores {_cores(cores)} (its log: {job.log})")

    try:
        while pending or running:
            _interrupt.check()
            start_pending()
            done = []
            for proc in [p for p in running if p.poll() is not None]:
                worker = running.pop(proc)
                if worker.widen_to is not None and proc.returncode == Interrupted.exit_code:
                    running[_start(worker.job, worker.widen_to, data_dir, append=True)] = _Running(
                        worker.job, worker.widen_to, time.monotonic()
                    )
                    log(f"vaelab: {worker.job.config.preset} resumes on cores {_cores(worker.widen_to)}")
                    continue
                _check(proc, worker.job)
                free.append(worker.widen_to or worker.cores)  # (one that ended before it could move: both)
                log(f"vaelab: {worker.job.config.preset} trained and evaluated in {worker.job.path}")
                done.append(worker.job)
            start_pending()  # the freed lanes train on while this process works
            if done and on_done is not None and running:  # (after the last, the caller goes on anyway)
                for job in done:
                    on_done(job)
            can_widen = widen and bool(free) and not pending
            histories = {  # read only while they can matter: timing a start-up, choosing or awaiting a move
                proc: worker.look()
                for proc, worker in running.items()
                if widen and (can_widen or worker.first_epoch is None or worker.widen_to is not None)
            }
            if can_widen:
                _widen(running, histories, free, log)
            for proc, worker in running.items():  # a widened training stops once its next epoch is in
                if worker.widen_to is not None and worker.epochs > worker.epochs_seen and not worker.stopping:
                    worker.stopping = True
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGINT)
            if running and time.monotonic() - last_progress >= PROGRESS_SECONDS:
                last_progress = time.monotonic()
                log("vaelab: epochs done: " + ", ".join(_progress(w.job) for w in running.values()))
            time.sleep(POLL_SECONDS)
    except BaseException:
        stop_workers(list(running))
        raise


def _widen(
    running: dict[subprocess.Popen, _Running],
    histories: dict[subprocess.Popen, list[dict[str, float]]],
    free: list[set[int]],
    log: Callable[[str], None],
) -> None:
    """Gives the free lanes' cores to the training that gains most from them, if one does (`widening_gain`)."""
    extra = set().union(*free)
    best, best_gain = None, 0.0
    for proc, worker in running.items():
        history = histories[proc]
        if worker.widen_to is not None or worker.first_epoch is None or len(history) < 2:
            continue  # its start-up or its epochs' cost (the first one's includes compiling) not known yet
        epoch_seconds = statistics.median(row["seconds"] for row in history[1:])
        restart = max(0.0, worker.first_epoch - epoch_seconds)  # what a new process costs before it trains
        remaining = worker.job.config.train.epochs - len(history) - 1  # after the epoch it is in
        gain = widening_gain(remaining, epoch_seconds, restart, len(worker.cores), len(worker.cores | extra))
        if gain > best_gain:
            best, best_gain = worker, gain
    if best is None:
        return
    best.widen_to, best.epochs_seen = best.cores | extra, best.epochs
    free.clear()
    log(
        f"vaelab: {best.job.config.preset} moves to cores {_cores(best.widen_to)} after its next epoch "
        f"(predicted {best_gain:.0f} s sooner)"
    )


def _start(job: Job, cores: set[int], data_dir: str | None, append: bool = False) -> subprocess.Popen:
    spec = {"config": job.config.to_dict(), "path": str(job.path), "samples": job.samples, "images": job.images,
            "data_dir": data_dir, "verbose": 2}  # fmt: skip
    job.path.parent.mkdir(parents=True, exist_ok=True)
    return start_worker(spec, job.log, cores, append=append)


def start_worker(
    spec: dict[str, Any], log: Path, cores: set[int] | None = None, append: bool = False
) -> subprocess.Popen:
    """Starts `python -m vaelab._sweep_worker` on `spec` (one run trained and evaluated), its output in `log`.

    With `cores`, the worker may run on those cores only: it pins itself before JAX loads, so XLA sizes its
    thread pool from them. (Pinning it here, in a `preexec_fn`, would fork this process, which may hold JAX's
    threads: Python then warns, rightly, that a fork of a multithreaded process can deadlock.)
    """
    if cores and hasattr(os, "sched_setaffinity"):
        spec = {**spec, "cores": sorted(cores)}
    with open(log, "a" if append else "w") as logfile:
        return subprocess.Popen(
            [sys.executable, "-m", "vaelab._sweep_worker", json.dumps(spec)],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _check(proc: subprocess.Popen, job: Job) -> None:
    """Raises the error a worker stopped with, in one line."""
    if proc.returncode == 0:
        return
    if proc.returncode == Interrupted.exit_code:
        raise Interrupted(f"interrupted while training {job.config.preset}")
    last = last_line(job.log)
    if last.startswith("error: "):
        raise VaelabError(last.removeprefix("error: "))
    raise VaelabError(f"training {job.config.preset} failed (exit status {proc.returncode}); see {job.log}")


def stop_workers(running: list[subprocess.Popen]) -> None:
    """Waits for worker processes to stop at a step boundary after a Ctrl-C, and makes sure they do.

    A Ctrl-C in the terminal reached the workers too, and they stop after their current step; a signal
    sent to this process alone did not: it is passed on to those still running after a moment (a
    second SIGINT would make a worker leave at once, without finishing its step)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(proc.poll() is None for proc in running):
        time.sleep(0.1)
    for proc in running:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
    for proc in running:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _history(job: Job) -> list[dict[str, float]]:
    """The job's history.csv so far ([] while it has none, or while it is being replaced)."""
    try:
        return read_history(job.path)
    except (OSError, VaelabError):
        return []


def _epochs(job: Job) -> int:
    return len(_history(job))


def _progress(job: Job) -> str:
    return f"{job.config.preset} {_epochs(job)}/{job.config.train.epochs}"


def _cores(cores: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cores))


def last_line(path: Path) -> str:
    """The last non-blank line of a worker's log ("" if there is none)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
