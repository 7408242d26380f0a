"""`vaelab sweep` end to end on real MNIST subsets: locally and on Ray, reruns, failures, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vaelab.run import CHECKPOINT, load_run
from vaelab.sweep import grid, read_results, sweep

pytestmark = pytest.mark.slow

QUICK = ["--epochs", "1", "--train-subset", "1000", "--test-subset", "200", "--iwae-samples", "5", "--images", "200"]
SWEEP_FILES = {"sweep.json", "runs", "logs", "results.json", "results.csv", "summary.csv", "sweep.md", "index.html"}


def checkpoints(out) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob(f"*/{CHECKPOINT}")}


def test_the_grid_names_every_point_and_flags_bad_settings():
    points = grid({"latent_dim": [2, 10], "beta": [1.0, -1.0]}, {"epochs": 3}, "mnist")
    assert [p.settings for p in points] == [
        {"latent_dim": 2, "beta": 1.0},
        {"latent_dim": 2, "beta": -1.0},
        {"latent_dim": 10, "beta": 1.0},
        {"latent_dim": 10, "beta": -1.0},
    ]
    assert [p.status for p in points] == ["pending", "failed", "pending", "failed"]
    assert points[1].error == "beta must be a finite number >= 0, got -1.0"
    assert points[2].name == "mlp-epochs3-latent-dim10" and points[2].config.model.latent_dim == 10


def test_a_local_2x2_sweep_then_a_rerun_that_retrains_nothing_and_reports_failures(tmp_path, mnist, vaelab):
    out = tmp_path / "sweep"
    first = vaelab("sweep", "--latent-dim", "2", "3", "--beta", "1", "4", *QUICK, "--workers", "2", "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == SWEEP_FILES | {"figures", ".lock"}
    results = read_results(out)
    assert [(r["latent_dim"], r["beta"], r["status"]) for r in results] == [
        (2, 1.0, "done"), (2, 4.0, "done"), (3, 1.0, "done"), (3, 4.0, "done"),
    ]  # fmt: skip
    for r in results:
        run = load_run(out / "runs" / r["name"])
        assert run.complete and run.config.train.beta == r["beta"] and run.config.model.latent_dim == r["latent_dim"]
        assert r["elbo"] == run.metrics["evaluation"]["elbo"] and r["active_units"] <= r["latent_dim"]
    assert "| 3 | 4.0 | 1 of 1 |" in first.stdout  # the summary table, printed
    assert (out / "figures" / "metrics.png").read_bytes().startswith(b"\x89PNG")
    before = checkpoints(out)

    # Again, with a bad setting and a β so large that the loss overflows: the four runs are reused
    # as they are, the two new points fail with their reasons, the command says so and exits 1.
    again = vaelab("sweep", "--latent-dim", "2", "3", "--beta", "1", "4", "-1", "1e38", *QUICK, "--out", str(out))
    assert again.returncode == 1, again.stderr[-3000:]
    assert "6 of 8 points failed" not in again.stderr and "4 of 8 points failed" in again.stderr
    assert checkpoints(out) == before  # nothing retrained
    results = {(r["latent_dim"], r["beta"]): r for r in read_results(out)}
    assert sum(r["reused"] for r in results.values()) == 4
    assert results[(2, -1.0)]["status"] == "failed" and "beta must be" in results[(2, -1.0)]["error"]
    assert results[(3, 1e38)]["status"] == "failed" and "training diverged" in results[(3, 1e38)]["error"]
    page = (out / "sweep.md").read_text()
    assert "training diverged" in page and "| 2 | 4.0 | 1 of 1 |" in page


@pytest.fixture
def local_ray():
    """A Ray instance on this machine only (2 CPUs, 127.0.0.1), started for the test and stopped after it."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed in CI (pip install -e '.[test]' installs it)")
        pytest.skip("Ray is not installed (pip install 'vaelab[ray]')")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no reports to the network
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


# Ray starts its processes with subprocess (fork, then exec at once), which JAX warns about; exec is safe.
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
def test_a_2x2_sweep_on_ray_then_a_rerun_that_retrains_nothing(tmp_path, mnist, local_ray):
    out = tmp_path / "sweep"
    axes = {"latent_dim": [2, 3], "beta": [1.0, 4.0]}
    fixed = {"epochs": 1, "train_subset": 1000, "test_subset": 200}
    points = sweep(axes, out, fixed=fixed, samples=5, images=200, ray_address="auto", log=lambda msg: None)
    assert [p.status for p in points] == ["done"] * 4, [p.error for p in points]
    assert (out / "index.html").exists() and len(checkpoints(out)) == 4
    before = checkpoints(out)
    again = sweep(axes, out, fixed=fixed, samples=5, images=200, ray_address="auto", log=lambda msg: None)
    assert all(p.reused for p in again) and checkpoints(out) == before
    assert [p.figures["elbo"] for p in again] == [p.figures["elbo"] for p in points]


def test_a_killed_worker_is_reported_and_an_interrupted_sweep_carries_on(tmp_path, mnist, vaelab):
    """Three points, one worker: the first point's worker is killed (SIGKILL), the second is interrupted with
    Ctrl-C (SIGINT to the process group, as a terminal sends it); the same command then finishes all three."""
    out = tmp_path / "sweep"
    args = ["sweep", "--seed", "0", "1", "2", "--epochs", "3", "--train-subset", "6000", "--test-subset", "200",
            "--iwae-samples", "5", "--images", "200", "--workers", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    fixed = {"epochs": 3, "train_subset": 6000, "test_subset": 200}
    names = [p.name for p in grid({"seed": [0, 1, 2]}, fixed, "mnist")]

    def holder(name: str) -> int | None:
        try:
            return json.loads((out / "runs" / name / ".lock").read_text() or "{}").get("pid")
        except (OSError, ValueError):
            return None

    def wait(predicate, timeout=300):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    try:
        wait(lambda: holder(names[0]) is not None)
        os.kill(holder(names[0]), signal.SIGKILL)
        wait(lambda: (out / "runs" / names[1] / CHECKPOINT).exists())
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-3000:]
    assert "run the same `vaelab sweep` again to carry on" in stderr.strip().splitlines()[-1]
    status = {r["name"]: (r["status"], r["error"]) for r in read_results(out)}
    assert status[names[0]] == ("failed", "worker killed by SIGKILL")
    assert status[names[1]][0] == "interrupted" and status[names[2]][0] == "pending"

    again = vaelab(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["status"] for r in read_results(out)] == ["done"] * 3
    assert all(load_run(out / "runs" / name).epoch == 3 for name in names)
