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
import os
import signal
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


def cpu_lanes(jobs: int) -> list[set[int]]:
    """The cores this process may use, cut into one disjoint set per concurrent training (at most `jobs`)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    lanes = min(jobs, len(cores))
    return [set(cores[i::lanes]) for i in range(lanes)]


def run_in_lanes(jobs: list[Job], lanes: list[set[int]], *, data_dir: str | None, log: Callable[[str], None]) -> None:
    """Runs the jobs, at most one per lane at a time, in the order given; raises on the first failure.

    The jobs start in the order given, each in the first lane that is free: put the longest first.
    """
    pending = list(jobs)
    running: dict[subprocess.Popen, tuple[Job, set[int]]] = {}
    free = list(lanes)
    last_progress = 0.0
    try:
        while pending or running:
            _interrupt.check()
            while pending and free:
                job, cores = pending.pop(0), free.pop(0)
                running[_start(job, cores, data_dir)] = (job, cores)
                log(f"vaelab: training {job.config.preset} on cores {_cores(cores)} (its log: {job.log})")
            for proc in [p for p in running if p.poll() is not None]:
                job, cores = running.pop(proc)
                _check(proc, job)
                free.append(cores)
                log(f"vaelab: {job.config.preset} trained and evaluated in {job.path}")
            if running and time.monotonic() - last_progress >= PROGRESS_SECONDS:
                last_progress = time.monotonic()
                log("vaelab: epochs done: " + ", ".join(_progress(job) for job, _ in running.values()))
            time.sleep(POLL_SECONDS)
    except BaseException:
        stop_workers(list(running))
        raise


def _start(job: Job, cores: set[int], data_dir: str | None) -> subprocess.Popen:
    spec = {"config": job.config.to_dict(), "path": str(job.path), "samples": job.samples, "images": job.images,
            "data_dir": data_dir, "verbose": 2}  # fmt: skip
    job.path.parent.mkdir(parents=True, exist_ok=True)
    return start_worker(spec, job.log, cores)


def start_worker(spec: dict[str, Any], log: Path, cores: set[int] | None = None) -> subprocess.Popen:
    """Starts `python -m vaelab._sweep_worker` on `spec` (one run trained and evaluated), its output in `log`.

    With `cores`, the worker may run on those cores only: it pins itself before JAX loads, so XLA sizes its
    thread pool from them. (Pinning it here, in a `preexec_fn`, would fork this process, which may hold JAX's
    threads: Python then warns, rightly, that a fork of a multithreaded process can deadlock.)
    """
    if cores and hasattr(os, "sched_setaffinity"):
        spec = {**spec, "cores": sorted(cores)}
    with open(log, "w") as logfile:
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


def _progress(job: Job) -> str:
    try:
        done = len(read_history(job.path))
    except (OSError, VaelabError):
        done = 0
    return f"{job.config.preset} {done}/{job.config.train.epochs}"


def _cores(cores: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cores))


def last_line(path: Path) -> str:
    """The last non-blank line of a worker's log ("" if there is none)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
