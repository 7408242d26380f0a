"""`vaelab sweep`: train and evaluate a grid of configurations, then compare them on one page.

A sweep directory holds a fixed set of files, each written atomically:

    sweep.json          the grid last asked for: the swept settings and their values, the fixed ones, K
    runs/NAME/          one ordinary run directory per grid point (vaelab.run); NAME is run_dir_name's
    logs/NAME.log       what the point's worker printed (training, evaluation, its error)
    results.json        one entry per point: settings, run directory, status (done, failed, interrupted),
                        error, and its figures (test ELBO, IWAE bound, KL, active units, ...)
    results.csv         the same, one row per point
    summary.csv         per setting with the seeds pooled: mean and standard deviation of each figure
    sweep.md            the comparison page (vaelab.report.sweep_page), and index.html the same, self-contained
    figures/metrics.png each figure against each swept setting, mean ± standard deviation over seeds
    .lock               held by the one sweep working in the directory

A point is trained (or resumed, if it was interrupted, or reused, if its run is complete with the
same configuration and data), then evaluated (ELBO, IWAE bound with K samples, latent diagnostics; on
data with known factors, the disentanglement metrics of vaelab.analysis.disentanglement: MIG, DCI, FactorVAE, SAP).
Points run in worker processes, `workers` at a time (each a fresh Python, as `vaelab train` is: JAX
must not be forked), or as Ray tasks (`ray_address`). A point that fails (a bad setting, a
diverging loss, a worker killed) is recorded with its error; the others go on. Interrupt a sweep
and run it again: finished points are reused, interrupted ones resumed.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaelab import _interrupt, limits
from vaelab._files import write_json, write_text
from vaelab._lock import DirectoryLock
from vaelab.config import RunConfig, make_config, run_settings
from vaelab.errors import Interrupted, VaelabError
from vaelab.experiments import lanes
from vaelab.report.sweep_page import DISENTANGLEMENT, compared, write_comparison
from vaelab.run import read_info, read_metrics, run_dir_name

AXES = ("preset", "model", "latent_dim", "beta", "seed")  # the settings a sweep varies; any run setting is fixed
IWAE_SAMPLES = 100  # K for each point's IWAE bound: vaelab report's choice, seconds per point for an MLP

Log = Callable[[str], None]


def default_workers() -> int:
    """Training processes at once: one per two cores of this process's CPU set, at least one.

    XLA already spreads one training over the cores it has, so more processes mostly compete for the
    same cores and add memory; two cores per training still leave each one parallel work.
    benchmarks/sweep_workers.py times a grid with each worker count.
    """
    return max(1, len(os.sched_getaffinity(0)) // 2)


@dataclass
class Point:
    """One grid point: its settings, its configuration (None when the settings are invalid), its result."""

    settings: dict[str, Any]
    config: RunConfig | None
    error: str | None = None
    status: str = "pending"  # done, failed, interrupted
    figures: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    @property
    def name(self) -> str:
        if self.config is not None:
            return run_dir_name(self.config)
        return "-".join(f"{k.replace('_', '-')}{v}" for k, v in self.settings.items())


def grid(axes: dict[str, Sequence[Any]], fixed: dict[str, Any], dataset: str) -> list[Point]:
    """Every combination of the swept values, in order; a combination that is not a valid configuration is
    a point that has already failed (with the one-line reason)."""
    unknown = set(axes) - set(AXES)
    if unknown:
        raise VaelabError(f"a sweep varies {', '.join(AXES)}; not {', '.join(sorted(unknown))}")
    names = [a for a in AXES if a in axes]
    points = []
    for values in itertools.product(*(axes[a] for a in names)):
        settings = dict(zip(names, values, strict=True))
        try:
            config = make_config(**{"preset": "mlp", **settings, **fixed, "dataset": dataset})
            points.append(Point(settings, config))
        except VaelabError as err:
            points.append(Point(settings, None, error=str(err), status="failed"))
    return points


def sweep(
    axes: dict[str, Sequence[Any]],
    out: str | os.PathLike[str],
    *,
    fixed: dict[str, Any] | None = None,
    dataset: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    image_size: Sequence[int] | None = None,
    grey: bool = False,
    samples: int = IWAE_SAMPLES,
    images: int | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    log: Log = lambda msg: print(msg, file=sys.stderr),
) -> list[Point]:
    """Trains, evaluates and compares the grid `axes` (e.g. {"beta": [1, 4], "seed": [0, 1]}) in `out`.

    `fixed` holds the settings every point shares (epochs, kl_warmup, train_subset, ...: any of
    `vaelab.config.run_settings()`); each point is
    evaluated on the first `images` test images (default all) with K = `samples`. Runs `workers`
    processes at once (default `default_workers()`), or Ray tasks on the cluster at `ray_address`
    ("auto": the running one). Returns the points with their status and figures; writes the page.
    `image_size` and `grey` say how the dataset's images are read (`load_dataset`), for every point.
    """
    from vaelab.data import load_dataset

    out = Path(out).resolve()
    fixed = dict(fixed or {})
    bad = set(fixed) - set(run_settings())
    both = set(axes) & set(fixed)
    if both:
        raise VaelabError(f"{', '.join(sorted(both))}: swept or fixed, not both: give each once")
    if bad:
        raise VaelabError(f"unknown fixed settings for a sweep: {', '.join(sorted(bad))}")
    if samples < 1:
        raise VaelabError(f"--iwae-samples must be >= 1, got {samples}")
    workers = workers or default_workers()
    with DirectoryLock(out, "sweep"), _interrupt.stop_at_step_boundary():
        data = load_dataset(dataset, data_dir, image_size=image_size, grey=grey, log=log)
        limits.check_evaluation(len(data.x_test[:images]), samples)  # before any point trains
        points = grid(axes, {**fixed, "image_size": image_size, "grey": grey}, data.name)
        images = min(images or len(data.x_test), len(data.x_test))
        write_json(out / "sweep.json", {"axes": {a: list(v) for a, v in axes.items()}, "fixed": fixed,
                                        "dataset": data.name, "image_size": image_size, "grey": grey,
                                        "iwae_samples": samples, "images": images})  # fmt: skip
        todo = []
        for point in points:
            if point.config is not None and _finished(point, out, data, samples, images):
                point.status, point.reused = "done", True
            elif point.config is not None:
                todo.append(point)
        reused = sum(p.reused for p in points)
        log(f"vaelab sweep: {len(points)} points: {reused} reused, {len(todo)} to train or finish, "
            f"{sum(p.status == 'failed' for p in points)} invalid")  # fmt: skip
        spec = {"samples": samples, "images": images, "data_dir": None if data_dir is None else str(data_dir)}

        def done(point: Point) -> None:
            _save_results(out, points)
            what = point.status if not point.error else f"{point.status}: {point.error}"
            log(f"vaelab sweep: {point.name}: {what}")

        try:
            if ray_address is not None:
                _run_on_ray(todo, out, spec, ray_address, done)
            else:
                _run_locally(todo, out, spec, workers, done)
        except Interrupted:
            _save_results(out, points)
            finished = sum(p.status == "done" for p in points)
            raise Interrupted(
                f"interrupted; {finished} of {len(points)} points are done and kept: run the same `vaelab sweep` "
                "again to carry on"
            ) from None
        _save_results(out, points)
        write_comparison(out, points, axes, samples=samples, images=images)
    return points


def _finished(point: Point, out: Path, data, samples: int, images: int) -> bool:
    """Whether the point's run is complete, of the same configuration and data, and evaluated as asked."""
    path = out / "runs" / point.name
    try:
        info = read_info(path)
        metrics = read_metrics(path)
        saved = RunConfig.from_dict(info["config"]).for_data(data)
        same = saved == point.config.for_data(data) and info.get("data_sha256") == data.sha256
    except VaelabError:
        return False
    evaluation = metrics.get("evaluation", {})
    if not (same and metrics.get("epochs") == point.config.train.epochs):
        return False
    if evaluation.get("samples") != samples or evaluation.get("images") != images:
        return False
    if not _scored(point.config, data, metrics, images):
        return False
    point.figures = point_figures(metrics)
    return True


def _scored(config: RunConfig, data, metrics: dict[str, Any], images: int) -> bool:
    """Whether the run's disentanglement metrics are there on `images` test images, or not called for (data without
    factors, a vqvae)."""
    if data.factors is None or not config.model.member.gaussian_latent:
        return True
    return metrics.get("disentanglement", {}).get("images") == images


def point_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the comparison shows of one run, from its metrics.json."""
    evaluation = metrics["evaluation"]
    tangle = metrics.get("disentanglement", {})
    return {
        **{name: tangle[name] for name in DISENTANGLEMENT if name in tangle},
        "elbo": evaluation["elbo"],
        "iwae": evaluation["iwae"],
        "kl_loss": evaluation["kl_loss"],
        "active_units": evaluation.get("active_units"),
        "reconstruction_loss": evaluation["reconstruction_loss"],
        "test_loss": metrics["test"]["loss"],  # the objective at the last epoch (reconstruction + w KL)
        "epochs": metrics["epochs"],
        "train_seconds": metrics["train_seconds"],
    }


# --- one point, in whichever process runs it ----------------------------------------------------------------


def run_point(spec: dict[str, Any], log: Log) -> dict[str, Any]:
    """Trains (or resumes, or reuses) and evaluates one point; returns its figures. Raises on failure.

    `spec`: config (a RunConfig as a dict), path (its run directory), samples, images, data_dir.
    """
    from vaelab.analysis.evaluate import evaluate_and_save
    from vaelab.data import load_dataset
    from vaelab.experiments.job import ensure_run

    config = RunConfig.from_dict(spec["config"])
    data = load_dataset(config.dataset, spec.get("data_dir"), image_size=config.image_size, grey=config.grey, log=log)
    run = ensure_run(config, Path(spec["path"]), data, log=log, verbose=spec.get("verbose", 2))
    done = run.metrics.get("evaluation", {})
    if done.get("samples") != spec["samples"] or done.get("images") != spec["images"]:
        log(f"vaelab sweep: evaluating {run.path} (K = {spec['samples']}, {spec['images']} test images)")
        evaluate_and_save(run, data, samples=spec["samples"], images=spec["images"])
    if not _scored(config, data, run.metrics, spec["images"]):
        from vaelab.analysis.disentanglement import score_and_save

        log(f"vaelab sweep: scoring the disentanglement of {run.path} ({spec['images']} test images)")
        score_and_save(run, data, images=spec["images"])
    return point_figures(run.metrics)


def _point_spec(point: Point, out: Path, common: dict[str, Any]) -> dict[str, Any]:
    return {**common, "config": point.config.to_dict(), "path": str(out / "runs" / point.name),
            "log": str(out / "logs" / f"{point.name}.log")}  # fmt: skip


def _record(point: Point, status: str, error: str | None = None, figures: dict | None = None) -> None:
    point.status, point.error, point.figures = status, error, figures or {}


# --- local workers ------------------------------------------------------------------------------------------


def _run_locally(todo: list[Point], out: Path, common: dict[str, Any], workers: int, done) -> None:
    """Runs the points in `workers` worker processes at once (`python -m vaelab._sweep_worker`)."""
    pending = list(todo)
    running: dict[subprocess.Popen, Point] = {}
    (out / "logs").mkdir(parents=True, exist_ok=True)
    try:
        while pending or running:
            _interrupt.check()
            while pending and len(running) < workers:
                point = pending.pop(0)
                spec = _point_spec(point, out, common)
                running[lanes.start_worker(spec, Path(spec["log"]))] = point
            for proc in [p for p in running if p.poll() is not None]:
                point = running.pop(proc)
                _collect(proc, point, out)
                done(point)
            time.sleep(0.1)
    except Interrupted:
        lanes.stop_workers(list(running))
        for proc, point in running.items():
            _collect(proc, point, out)
            done(point)
        raise


def _collect(proc: subprocess.Popen, point: Point, out: Path) -> None:
    """The point's outcome from its worker's exit status, its run directory and its log."""
    code = proc.returncode
    if code == 0:
        _record(point, "done", figures=point_figures(read_metrics(out / "runs" / point.name)))
    elif code == Interrupted.exit_code:
        _record(point, "interrupted", "interrupted; run the sweep again to carry on")
    elif code < 0:
        _record(point, "failed", f"worker killed by {signal.Signals(-code).name}")
    else:
        _record(point, "failed", lanes.last_line(out / "logs" / f"{point.name}.log") or f"worker exited with {code}")


# --- Ray -------------------------------------------------------------------------------------------------


def _run_on_ray(todo: list[Point], out: Path, common: dict[str, Any], address: str, done) -> None:
    """Runs each point as a Ray task on the cluster at `address` (or the one this process is connected to)."""
    ray = _connect_ray(address)
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_point)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    refs = {task.remote(_point_spec(point, out, common)): point for point in todo}
    try:
        while refs:
            _interrupt.check()
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.2)
            for ref in ready:
                point = refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker died, or Ray could not run the task
                    outcome = {"status": "failed", "error": f"Ray: {(str(err).strip().splitlines() or [''])[0]}"}
                _record(point, outcome["status"], outcome.get("error"), outcome.get("figures"))
                done(point)
    except Interrupted:
        for ref, point in refs.items():
            ray.cancel(ref)
            _record(point, "interrupted", "interrupted; run the sweep again to carry on")
        raise


def _connect_ray(address: str):
    try:
        import ray
    except ImportError:
        raise VaelabError("--ray needs Ray; install it with pip install 'vaelab[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise VaelabError(
                f"cannot reach a Ray cluster at {address!r} ({(str(err).splitlines() or [''])[0]}); start one with "
                "`ray start --head`, or give its address"
            ) from None
    return ray


def _ray_point(spec: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: one point in this Ray worker's process; failures come back as a status, not an exception."""
    import keras

    log_path = Path(spec["log"])

    def log(msg: str) -> None:
        with open(log_path, "a") as f:
            print(msg, file=f)

    try:
        return {"status": "done", "figures": run_point({**spec, "verbose": 0}, log)}
    except Interrupted as err:
        return {"status": "interrupted", "error": str(err)}
    except VaelabError as err:
        log(f"error: {err}")
        return {"status": "failed", "error": str(err)}
    finally:
        keras.backend.clear_session()  # this worker process runs other points after this one


# --- results -------------------------------------------------------------------------------------------------


def _save_results(out: Path, points: list[Point]) -> None:
    rows = [
        {"name": p.name, **p.settings, "status": p.status, "error": p.error, "reused": p.reused, **p.figures}
        for p in points
    ]
    write_json(out / "results.json", rows)
    columns = ["name", *points[0].settings, "status", "error", "reused", *compared(points)]
    columns += ["reconstruction_loss", "test_loss", "epochs", "train_seconds"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "results.csv", buf.getvalue())


def read_results(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """results.json of the sweep in `out`."""
    try:
        return json.loads((Path(out) / "results.json").read_text())
    except FileNotFoundError:
        raise VaelabError(f"no sweep results in {out}; run `vaelab sweep --out {out}`") from None
