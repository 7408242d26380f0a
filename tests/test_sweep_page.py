"""The sweep's comparison page, from points made here: what its bound columns say they bound."""

from __future__ import annotations

from vaelab.config import make_config
from vaelab.report.sweep_page import CONDITIONAL_MARK, write_comparison
from vaelab.sweep import Point


def test_a_cvaes_bound_on_log_p_x_given_y_is_marked_apart_from_log_p_x(tmp_path):
    figures = {"elbo": -100.0, "iwae": -95.0, "kl_loss": 20.0, "active_units": 2, "train_seconds": 3.0}
    points = [
        Point({"model": family}, make_config("mlp", model=family, epochs=1), status="done", figures=dict(figures))
        for family in ("vae", "cvae")
    ]
    write_comparison(tmp_path, points, {"model": ["vae", "cvae"]}, samples=5, images=100)
    page = (tmp_path / "sweep.md").read_text()
    rows = {
        line.split("|")[1].strip(): line
        for line in page.splitlines()
        if line.startswith("| vae") or line.startswith("| cvae")
    }
    assert f"-95.00{CONDITIONAL_MARK}" in rows["cvae"] and CONDITIONAL_MARK not in rows["vae"]
    assert "bound on log p(x|y)" in page and "not to be ranked beside log p(x)" in page
    # a sweep of unconditional models says nothing of it
    write_comparison(tmp_path, points[:1], {"model": ["vae"]}, samples=5, images=100)
    assert "log p(x|y)" not in (tmp_path / "sweep.md").read_text()
