"""Factors travel with their data (shapes, dSprites, your .npz), and `vaelab evaluate` scores a run against them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from vaelab import cli
from vaelab.data import BUILTIN, load_dataset
from vaelab.data.builtin import fetch_builtin
from vaelab.data.dsprites import DSPRITES_FILE, FACTORS, read_dsprites, read_dsprites_npz
from vaelab.data.shapes import draw, shapes_factors
from vaelab.errors import VaelabError


def quiet(msg: str) -> None:
    pass


def _dsprites_like(path, shapes=3, scales=2, orientations=2, xs=3, ys=2):
    """An .npz in dSprites' layout: every combination of the factors, in the file's order, a square of the
    factor-given size at the factor-given place (the real file draws the sprite; only the layout matters here)."""
    grid = np.stack(np.meshgrid(np.arange(shapes), np.arange(scales), np.arange(orientations), np.arange(xs),
                                np.arange(ys), indexing="ij"), -1).reshape(-1, 5)  # fmt: skip
    classes = np.concatenate([np.zeros((len(grid), 1), np.int64), grid], 1)
    imgs = np.zeros((len(grid), 64, 64), np.uint8)
    for k, (_, _, scale, _, x, y) in enumerate(classes):
        imgs[k, 10 * y : 10 * y + 5 + scale, 10 * x : 10 * x + 5 + scale] = 1
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=classes.astype(np.float64))
    return imgs, classes


def test_the_dsprites_reader_splits_the_file_and_keeps_the_test_images_factors(tmp_path):
    path = tmp_path / DSPRITES_FILE.name
    imgs, classes = _dsprites_like(path)
    arrays = read_dsprites_npz(path, test_size=10)
    assert len(arrays["x_train"]) + len(arrays["x_test"]) == len(imgs) and len(arrays["x_test"]) == 10
    assert set(np.unique(arrays["x_test"])) == {0, 255}
    # each test image is the file's image with the factors stored beside it
    for image, factors in zip(arrays["x_test"], arrays["factors_test"], strict=True):
        row = np.flatnonzero((classes[:, 1:] == factors).all(1))
        assert len(row) == 1 and (imgs[row[0]] * 255 == image).all()
    np.testing.assert_array_equal(arrays["y_test"], arrays["factors_test"][:, 0])
    again = read_dsprites_npz(path, test_size=10)
    np.testing.assert_array_equal(again["factors_test"], arrays["factors_test"])  # the same split every time


def test_dsprites_from_data_dir_is_a_dataset_with_its_factors_cached_and_checked(tmp_path):
    path = tmp_path / DSPRITES_FILE.name
    _dsprites_like(path)

    def read(paths):
        return read_dsprites_npz(paths[DSPRITES_FILE.name], test_size=10)

    spec = dataclasses.replace(BUILTIN["dsprites"], train_counts=62, test_counts=10, read=read)
    data = fetch_builtin(spec, tmp_path, log=quiet)
    assert data.factors.names == FACTORS and data.factors.values.shape == (10, 5)
    assert data.factors.categorical == (True, False, False, False, False)
    cached = fetch_builtin(spec, tmp_path, log=quiet)  # from dsprites.npz now
    assert cached.source == data.source and "dsprites.npz" in str(cached.path)
    np.testing.assert_array_equal(cached.factors.values, data.factors.values)
    with np.load(tmp_path / "dsprites.npz") as npz:
        kept = {k: npz[k] for k in npz.files}
    kept["factors_test"] = kept["factors_test"][::-1].copy()
    np.savez(tmp_path / "dsprites.npz", **kept)
    with pytest.raises(VaelabError, match="factors_test does not match its checksum"):
        fetch_builtin(spec, tmp_path, log=quiet)


def test_a_file_that_is_not_the_published_dsprites_is_refused_in_one_line(tmp_path):
    path = tmp_path / DSPRITES_FILE.name
    _dsprites_like(path)
    with pytest.raises(VaelabError) as err:
        read_dsprites({DSPRITES_FILE.name: path})
    assert "not the published file's 7da33b31b13a06f4b04a70402ce90c2e; download it again" in str(err.value)
    assert "\n" not in str(err.value)


def test_dsprites_offline_is_one_line_saying_what_to_do(tmp_path):
    dead = dataclasses.replace(DSPRITES_FILE, url="http://127.0.0.1:9/" + DSPRITES_FILE.name)  # nothing listens
    spec = dataclasses.replace(BUILTIN["dsprites"], files=(dead,))
    with pytest.raises(VaelabError) as err:
        fetch_builtin(spec, tmp_path / "cache", log=quiet)
    message = str(err.value)
    assert message.startswith("could not get dSprites (") and "download failed" in message
    assert message.endswith("github.com/deepmind/dsprites-dataset into a directory and pass it with --data-dir")
    assert "\n" not in message


def test_shapes_carries_its_test_images_factors(tmp_path):
    data = load_dataset("shapes", tmp_path, log=quiet)
    factors = shapes_factors("test")
    assert data.factors.names == ("shape", "colour", "size", "x", "y")
    assert data.factors.categorical == (True, True, False, False, False)
    for k, name in enumerate(data.factors.names):
        np.testing.assert_array_equal(data.factors.values[:, k], factors[name])
    np.testing.assert_array_equal(data.factors.values[:, 0], data.y_test)


def _shapes_npz(path, n_train=400, n_test=300, **extra):
    """Shapes drawn from their factors, as an .npz with a `factors` array (the test images')."""
    f = {k: v[: n_train + n_test] for k, v in shapes_factors("train").items()}
    images = draw(f)
    factors = np.stack([f[k] for k in ("shape", "colour", "size", "x", "y")], 1)[n_train:]
    np.savez(path, x_train=images[:n_train], x_test=images[n_train:], factors=factors, **extra)
    return factors


def test_an_npz_with_factors_carries_them_with_names_and_kinds(tmp_path):
    factors = _shapes_npz(tmp_path / "s.npz", factor_names=np.array(["shape", "colour", "size", "x", "y"]),
                          categorical_factors=np.array(["shape", "colour"]))  # fmt: skip
    data = load_dataset(tmp_path / "s.npz")
    np.testing.assert_array_equal(data.factors.values, factors)
    assert data.factors.categorical == (True, True, False, False, False)
    _shapes_npz(tmp_path / "plain.npz")
    assert load_dataset(tmp_path / "plain.npz").factors.names == tuple(f"factor{i}" for i in range(5))


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"factors": np.zeros((7, 2))}, "one row per test image (300)"),
        ({"factor_names": np.array(["a"])}, "factor_names has 1 names, not 5 different ones"),
        ({"categorical_factors": np.array(["hue"])}, "categorical_factors names hue, not in factor0"),
    ],
)
def test_bad_factors_in_an_npz_are_one_line(tmp_path, extra, says):
    _shapes_npz(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as npz:
        arrays = {**{k: npz[k] for k in npz.files}, **extra}
    np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(VaelabError, match=says.replace("(", r"\(").replace(")", r"\)")) as err:
        load_dataset(tmp_path / "s.npz")
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """An mlp trained for 1 epoch on 400 shapes from an .npz with factors."""
    from vaelab.config import make_config
    from vaelab.training.loop import train

    path = tmp_path_factory.mktemp("data") / "shapes.npz"
    _shapes_npz(path)
    config = make_config("mlp", dataset=str(path), epochs=1, latent_dim=5, likelihood="bernoulli")
    return train(config, tmp_path_factory.mktemp("runs") / "mlp", data=load_dataset(path), verbose=0)


def test_evaluate_scores_a_run_on_data_with_factors_into_metrics_json(shapes_run, capsys):
    assert cli.main(["evaluate", str(shapes_run.path), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "MIG" in out and "DCI" in out and "FactorVAE score" in out and "SAP" in out
    metrics = json.loads((shapes_run.path / "metrics.json").read_text())
    scores = metrics["disentanglement"]
    assert scores["images"] == 300 and scores["factors"] == [f"factor{i}" for i in range(5)]
    assert 0 <= scores["mig"] <= 1 and 0 <= scores["dci_disentanglement"] <= 1
    assert np.asarray(scores["dci_importance"]).shape == (5, 5)
    assert scores["settings"]["bins"] == 20 and "evaluation" in metrics
    assert cli.main(["evaluate", str(shapes_run.path), "--samples", "2", "--no-disentanglement"]) == 0
    assert "MIG" not in capsys.readouterr().out


def test_disentanglement_on_data_without_factors_is_one_line_and_exit_2(small_run, capsys):
    assert cli.main(["evaluate", str(small_run.path), "--disentanglement", "--samples", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "MNIST has no known factors of variation" in err and "\n" not in err
    assert "disentanglement" not in json.loads((small_run.path / "metrics.json").read_text())


def test_the_report_has_a_disentanglement_section_from_metrics_json(shapes_run):
    from vaelab.analysis.disentanglement import score_and_save
    from vaelab.report.exercise import _disentanglement_section

    data = load_dataset(shapes_run.config.dataset)
    scores = score_and_save(shapes_run, data)
    section = _disentanglement_section([shapes_run], data)  # what build_report adds for data with factors
    assert "factor0 (ordinal)" in section and "| MIG factor4 |" in section
    assert f"| `mlp` | {scores.mig:.3f} | {scores.dci_disentanglement:.3f} |" in section


def test_the_sweep_page_compares_mig_and_dci_per_beta_where_the_points_have_them(tmp_path):
    from vaelab.config import make_config
    from vaelab.report.sweep_page import compared, write_comparison
    from vaelab.sweep import Point

    axes = {"model": ["vae", "betatc"], "beta": [1.0, 4.0]}
    points = []
    for model in axes["model"]:
        for beta in axes["beta"]:
            figures = {"elbo": -100.0 - beta, "iwae": -99.0, "kl_loss": 10.0, "active_units": 4, "train_seconds": 1.0,
                       "mig": 0.1 * beta + (0.05 if model == "betatc" else 0), "dci_disentanglement": 0.2,
                       "dci_completeness": 0.3, "factorvae_score": 0.5, "sap": 0.04}  # fmt: skip
            config = make_config("mlp", model=model, beta=beta, dataset="shapes")
            points.append(Point({"model": model, "beta": beta}, config, status="done", figures=figures))
    assert compared(points)[-5:] == ("mig", "dci_disentanglement", "dci_completeness", "factorvae_score", "sap")
    write_comparison(tmp_path, points, axes, samples=10, images=1000)
    page = (tmp_path / "sweep.md").read_text()
    assert "| seeds done | test ELBO | IWAE bound | KL | active units | MIG | DCI disentanglement |" in page
    assert "| betatc | 4.0 | 1 of 1 | -104.00 | -99.00 | 10.00 | 4.0 | 0.450 | 0.200 |" in page
    assert "MIG (Chen et al., 2018)" in page and (tmp_path / "figures" / "metrics.png").exists()
    assert "mig_mean" in (tmp_path / "summary.csv").read_text()
    plain = [Point(p.settings, p.config, status="done", figures={k: v for k, v in p.figures.items() if k != "mig"
                                                                 and k[:3] not in ("dci", "fac", "sap")})
             for p in points]  # fmt: skip
    write_comparison(tmp_path, plain, axes, samples=10, images=1000)
    assert "MIG" not in (tmp_path / "sweep.md").read_text()  # data without factors: the page as before


def test_several_models_are_a_sweep_axis():
    from vaelab.cli import build_parser
    from vaelab.sweep import grid

    points = grid({"model": ["vae", "betatc"], "beta": [1.0, 4.0]}, {"epochs": 1}, "shapes")
    assert [p.config.model.family for p in points] == ["vae", "vae", "betatc", "betatc"]
    assert len({p.name for p in points}) == 4 and "betatc" in points[-1].name
    args = build_parser().parse_args(["sweep", "--model", "vae", "betatc", "--beta", "1", "4"])
    assert args.model == ["vae", "betatc"]
    assert build_parser().parse_args(["sweep", "--model", "iwae"]).model == ["iwae"]  # one: a fixed setting


def test_a_damaged_disentanglement_entry_is_a_damaged_metrics_json(tmp_path):
    from vaelab.run import read_metrics

    (tmp_path / "metrics.json").write_text(json.dumps({"disentanglement": {"mig": "high"}}))
    with pytest.raises(VaelabError, match="its 'disentanglement' entry is not a mapping of numbers"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"disentanglement": {"mig": 0.5, "images": 10}}))
    assert read_metrics(tmp_path)["disentanglement"]["mig"] == 0.5
