"""The exercise's analyses on a trained run: latent map, digit table, generator, interpolation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from vaelab.analysis import latent as analysis
from vaelab.config import ModelConfig, RunConfig
from vaelab.errors import VaelabError
from vaelab.models import build_models
from vaelab.run import Run


def test_test_set_is_encoded_in_one_go(small_run, mnist):
    codes = analysis.encode_test_set(small_run, mnist)
    assert codes.z_mean.shape == codes.z_log_var.shape == (10000, 2)
    np.testing.assert_array_equal(codes.coords, codes.z_mean)  # latent_dim 2: the plane is z itself
    assert not codes.is_pca and codes.axis_labels == ("z[0]", "z[1]")
    z_mean, _ = small_run.encode(mnist.x_test[:5])
    np.testing.assert_allclose(codes.z_mean[:5], z_mean, rtol=1e-6, atol=1e-6)


def test_higher_latent_dims_are_drawn_on_their_principal_plane(mnist):
    config = RunConfig(model=ModelConfig(latent_dim=5))
    run = Run(path=None, config=config, info={}, models=build_models(config.model, seed=0), epoch=0)
    codes = analysis.encode_test_set(run, mnist)
    assert codes.is_pca and codes.coords.shape == (10000, 2)
    np.testing.assert_allclose(codes.plane_axes.T @ codes.plane_axes, np.eye(2), atol=1e-6)
    explained = codes.coords.var(axis=0)
    total = (codes.z_mean - codes.z_mean.mean(0)).var(axis=0).sum()
    assert explained[0] >= explained[1] and explained.sum() <= total * (1 + 1e-6)


def test_class_table_has_the_first_image_of_each_digit_and_its_code(small_run, mnist):
    rows = analysis.class_table(small_run, mnist)
    assert [r.label for r in rows] == list(range(10)) and [r.name for r in rows] == [str(d) for d in range(10)]
    for row in rows:
        assert mnist.y_test[row.index] == row.label
        assert not (mnist.y_test[: row.index] == row.label).any()
        z_mean, z_log_var = small_run.encode(mnist.x_test[[row.index]])
        np.testing.assert_allclose(row.z_mean, z_mean[0], rtol=1e-5)
        np.testing.assert_allclose(row.sigma, np.exp(z_log_var[0] / 2), rtol=1e-5)
    assert rows[7].index == 0 and rows[2].index == 1  # MNIST's test set begins 7, 2, 1, 0
    assert analysis.table_markdown(rows).count("\n") == 11
    assert analysis.table_csv(rows).splitlines()[0] == "digit,label,test_index,z_mean_0,z_mean_1,sigma_0,sigma_1"


def test_picks_replace_the_defaults_and_are_checked(mnist):
    picks = analysis.parse_picks(mnist, [100])
    assert picks[int(mnist.y_test[100])] == 100
    with pytest.raises(VaelabError, match="out of range"):
        analysis.parse_picks(mnist, [10000])
    twice = [int(i) for i in np.flatnonzero(mnist.y_test == 4)[:2]]
    with pytest.raises(VaelabError, match="two images of digit 4"):
        analysis.parse_picks(mnist, twice)


def test_generator_decodes_points_in_one_batch(small_run):
    images = analysis.generate(small_run, [[0.5, 0.2], [-1.0, 1.0]])
    assert images.shape == (2, 28, 28) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_allclose(images[0], small_run.decode([[0.5, 0.2]])[0], atol=1e-6)


@pytest.mark.parametrize(
    ("z", "message"),
    [
        ([[1.0, 2.0, 3.0]], "has 2 coordinates for this run; got 3 values"),
        ([[np.nan, 0.0]], "finite"),
        ([[np.inf, 0.0]], "finite"),
        ([[1e6, 0.0]], "within"),
        ([], "has 2 coordinates"),
    ],
)
def test_bad_latent_points_are_refused(small_run, z, message):
    with pytest.raises(VaelabError, match=message):
        analysis.generate(small_run, z)


def test_manifold_uses_the_course_scripts_gaussian_quantiles(small_run):
    grid, images = analysis.manifold(small_run, 15)
    np.testing.assert_allclose(grid, stats.norm.ppf(np.linspace(0.05, 0.95, 15)), rtol=1e-12)
    assert images.shape == (15, 15, 28, 28)
    top_left = small_run.decode([[grid[0], grid[-1]]])[0]  # row 0 is the largest z[1]
    np.testing.assert_allclose(images[0, 0], top_left, atol=1e-6)


def test_interpolation_walks_the_segment_between_two_codes(small_run, mnist):
    start, end = analysis.pick_pair(mnist)
    assert (mnist.y_test[start], mnist.y_test[end]) == (3, 8)
    interp = analysis.interpolate(small_run, mnist, start, end, steps=10)
    codes, _ = small_run.encode(mnist.x_test[[start, end]])
    assert interp.points.shape == (10, 2) and interp.images.shape == (10, 28, 28)
    np.testing.assert_allclose(interp.points[0], codes[0], rtol=1e-6)
    np.testing.assert_allclose(interp.points[-1], codes[1], rtol=1e-6)
    steps = np.diff(interp.points, axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to(steps[0], steps.shape), atol=1e-5)  # evenly spaced, one line
    np.testing.assert_allclose(interp.images, small_run.decode(interp.points), atol=1e-6)


def test_interpolation_refuses_one_digit_twice_and_bad_indices(mnist):
    threes = np.flatnonzero(mnist.y_test == 3)
    with pytest.raises(VaelabError, match="both show a 3"):
        analysis.pick_pair(mnist, from_index=int(threes[0]), to_index=int(threes[1]))
    with pytest.raises(VaelabError, match="both show a 5"):
        analysis.pick_pair(mnist, from_class="5", to_class="5")
    assert analysis.pick_pair(mnist, from_class="5", to_class="5", allow_same_class=True)[0] >= 0
    with pytest.raises(VaelabError, match="out of range"):
        analysis.pick_pair(mnist, from_index=-1)
    with pytest.raises(VaelabError, match="not both"):
        analysis.pick_pair(mnist, from_index=1, from_class="2")
    with pytest.raises(VaelabError, match="'ten' is not a class of MNIST"):
        analysis.pick_pair(mnist, from_class="ten")


def test_encode_command_prints_the_table_and_writes_its_files(small_run, mnist, tmp_path, vaelab):
    result = vaelab("encode", str(small_run.path), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == analysis.table_markdown(analysis.class_table(small_run, mnist))
    for name in ("latent_map.png", "class_table.png", "class_table.md", "class_table.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "latent_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_and_interpolate_commands(small_run, tmp_path, vaelab):
    result = vaelab(
        "generate",
        str(small_run.path),
        "--z",
        "0.5",
        "0.2",
        "--samples",
        "4",
        "--manifold",
        "5",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "z = (0.500, 0.200)" in result.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"generated.png", "samples.png", "manifold.png"}
    result = vaelab("interpolate", str(small_run.path), "--from-digit", "1", "--to-digit", "7", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n| ") == 11  # the table's header and its 10 points
    assert (tmp_path / "interpolation.png").exists() and (tmp_path / "interpolation_path.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "{run}", "--z", "1", "2", "3"], "has 2 coordinates"),
        (["generate", "{run}", "--z", "nan", "0"], "finite"),
        (["interpolate", "{run}", "--from-index", "10000"], "out of range"),
        (["interpolate", "{run}", "--from-digit", "3", "--to-digit", "3"], "both show a 3"),
        (["encode", "/nonexistent/run"], "no run at /nonexistent/run"),
    ],
)
def test_analysis_commands_refuse_bad_input_in_one_line(small_run, vaelab, args, message):
    result = vaelab(*[a.format(run=small_run.path) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
