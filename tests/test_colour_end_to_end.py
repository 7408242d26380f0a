"""Colour images end to end through the command line: the built-in generated `shapes` (32x32x3) and a folder of
colour PNGs of another size (24x20) go train -> evaluate -> report -> explore --export, with bits per dimension in
metrics.json and .keras files that plain Keras opens with the image's shape; and the bad inputs, one line each."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHAPE_CLASSES, shapes_arrays
from tests.test_export import PLAIN_KERAS
from vaelab.config import make_config
from vaelab.explore.export import RUN_BUDGET_BYTES
from vaelab.models.likelihoods import bits_per_dim
from vaelab.run import run_dir_name

pytestmark = pytest.mark.slow

QUICK = ["--epochs", "1", "--train-subset", "400", "--test-subset", "200"]


@pytest.fixture(scope="module", autouse=True)
def shapes():
    """The built-in `shapes`, made and cached before the commands use it (making it logs a line)."""
    from vaelab.data import load_dataset

    return load_dataset("shapes")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of 24x20 colour PNGs, one subfolder per class (the kind of folder a user has)."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    arrays = shapes_arrays(150, 0, shape=(24, 20, 3), seed=3)
    for k, (image, label) in enumerate(zip(arrays["x_train"], arrays["y_train"], strict=True)):
        folder = root / SHAPE_CLASSES[label].replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{k:03d}.png")
    return root


def check_run(vaelab, run_dir, shape: tuple[int, int, int], likelihood: str, tmp_path) -> None:
    """The run's metrics give bits/dim; its .keras files open in plain Keras with the image's shape."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    assert test["bits_per_dim"] == pytest.approx(bits_per_dim(test["elbo_loss"], shape, likelihood))
    assert test["bits_per_dim"] > 0
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert tuple(config["model"]["image_shape"]) == shape and config["model"]["likelihood"] == likelihood

    done = vaelab("evaluate", str(run_dir), "--samples", "3", "--images", "100")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bits per dimension" in done.stdout and f"{likelihood} likelihood" in done.stdout
    evaluation = json.loads((run_dir / "metrics.json").read_text())["evaluation"]
    assert evaluation["likelihood"] == likelihood and evaluation["bits_per_dim"] > 0
    # The bound's estimate is at least the ELBO's (up to their noise: the ELBO's KL is exact, the bound's sampled).
    assert evaluation["bits_per_dim"] <= evaluation["elbo_bits_per_dim"] + 1e-3

    x = np.random.default_rng(0).uniform(size=(4, *shape)).astype(np.float32)
    z = np.zeros((4, config["model"]["latent_dim"]), np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "z.npy", z)
    args = [str(run_dir), str(tmp_path / "x.npy"), str(tmp_path / "z.npy"), str(tmp_path / "out.npz")]
    plain = subprocess.run([sys.executable, "-c", PLAIN_KERAS, *args], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-3000:]
    # generator.keras gives the decoder's parameters: logistic-black's C locations and pi's logit (training/export.py)
    channels = shape[-1] + (likelihood == "logistic-black")
    assert np.load(tmp_path / "out.npz")["x"].shape == (4, *shape[:2], channels)


def check_report(vaelab, dataset: str, tmp_path, likelihood: str = "logistic-black") -> None:
    """The report, as a quick try: on the first 200 test images (`--test-subset`); its live maps' weights as the
    exported explorer's rule has them."""
    report = tmp_path / "report"
    done = vaelab(
        "report", "--dataset", dataset, "--epochs", "1", "--train-subset", "400", "--test-subset", "200",
        "--iwae-samples", "2", "--out", str(report), "--runs-dir", str(tmp_path / "runs"),
        *([] if likelihood == "logistic-black" else ["--likelihood", likelihood]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = (report / "report.md").read_text()
    assert "Preset `convnet`" in text and "| bits/dim |" in text and "Preset `conv`" not in text
    assert f"scored with the {likelihood} likelihood" in text
    html = (report / "index.html").read_text()
    blocks = re.findall(r'<script type="application/json" id="live-[^"]+">(.*?)</script>', html, re.S)
    assert len(blocks) == 3
    for block in blocks:  # the first of float32, float16 and int8 that fits the explorer's budget, else int8
        dtype = json.loads(block)["models"]["generator"]["weights"]["dtype"]
        assert dtype == "int8" or len(block.encode()) <= RUN_BUDGET_BYTES
    if dataset == "shapes":  # the mlp's 3072 outputs: float32 and float16 would not fit
        assert "- Test images: the first 200 of the 10,000" in text
        evaluations = [run["evaluation"] for run in json_runs(tmp_path / "runs")]
        assert [(e["images"], e["samples"]) for e in evaluations] == [(200, 2)] * 3  # the subset only
        assert json.loads(blocks[0])["models"]["generator"]["weights"]["dtype"] == "int8"


def check_export(vaelab, run_dir, tmp_path) -> None:
    """The run's explorer, exported as one page."""
    done = vaelab("explore", str(run_dir), "--export", str(tmp_path / "page"))
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "page" / "index.html").read_text()
    assert len(page.encode()) < 4_000_000 and "<canvas" in page


def json_runs(runs_dir) -> list[dict]:
    """The metrics.json of each run in `runs_dir`."""
    return [json.loads(path.read_text()) for path in sorted(runs_dir.glob("*/metrics.json"))]


def test_the_generated_colour_shapes_end_to_end(tmp_path, vaelab):
    # Trained where the report looks for its convnet, which it then reuses (and evaluates on its own terms).
    config = make_config("convnet", dataset="shapes", epochs=1, train_subset=400, test_subset=200)
    run_dir = tmp_path / "runs" / run_dir_name(config)
    done = vaelab("train", "--dataset", "shapes", "--preset", "convnet", *QUICK, "--out", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bits" not in done.stderr  # the training log is unchanged; the figure is in metrics.json
    check_run(vaelab, run_dir, (32, 32, 3), "logistic-black", tmp_path)
    check_report(vaelab, "shapes", tmp_path)
    check_export(vaelab, run_dir, tmp_path)


def test_a_colour_sweep_trains_and_evaluates_its_point(tmp_path, vaelab):
    """A separate test (xdist runs it beside the one above); one point: the grid's expansion is test_sweep's."""
    sweep = tmp_path / "sweep"
    done = vaelab(
        "sweep", "--dataset", "shapes", "--preset", "convnet", "--latent-dim", "3", "--epochs", "1",
        "--train-subset", "300", "--test-subset", "100", "--iwae-samples", "2", "--images", "100", "--out", str(sweep),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    points = json.loads((sweep / "results.json").read_text())
    assert [(p["status"], p["latent_dim"], p["preset"]) for p in points] == [("done", 3, "convnet")]


def test_a_folder_of_colour_pictures_of_another_size_end_to_end(photos, tmp_path, vaelab):
    # The report's three networks under the gaussian likelihood; its convnet is the run checked on its own after it.
    check_report(vaelab, str(photos), tmp_path, likelihood="gaussian")
    [run_dir] = (tmp_path / "runs").glob("*convnet*/")
    assert json.loads((run_dir / "config.json").read_text())["config"]["train"]["train_subset"] == 400
    check_run(vaelab, run_dir, (24, 20, 3), "gaussian", tmp_path)
    check_export(vaelab, run_dir, tmp_path)

    # Resumed on data of another shape: one line, exit 2, the run untouched.
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    done = vaelab("train", "--resume", str(run_dir), "--epochs", "2", "--dataset", "shapes")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "shapes", "--preset", "conv"], "use --preset convnet"),
        (["--dataset", "shapes", "--binarize", "--likelihood", "logistic"], "use --likelihood bernoulli"),
        (["--dataset", "shapes", "--likelihood", "poisson"], "invalid choice: 'poisson'"),
        (["--dataset", "shapes", "--preset", "mlp", "--filters", "8"], "choose --preset convnet"),
    ],
)
def test_settings_that_do_not_fit_the_images_are_refused_in_one_line(tmp_path, vaelab, args, message):
    done = vaelab("train", *args, "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
