"""`vaelab report` end to end on real MNIST: every part answered, reproducible, viewable offline."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report_dirs(tmp_path_factory, mnist):
    base = tmp_path_factory.mktemp("report")
    args = [
        "report",
        "--epochs",
        "1",
        "--train-subset",
        "2000",
        "--out",
        str(base / "report"),
        "--runs-dir",
        str(base / "runs"),
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    return base, args, first


def test_report_answers_every_part_for_every_network(report_dirs):
    base, _, first = report_dirs
    md = (base / "report" / "report.md").read_text()
    for heading in ("## Parts (c), (d), (e)", "## Part (f)", "## Part (g)", "## Comparison", "## Question 2"):
        assert heading in md
    assert md.count("### (c) The encoder") == 3 and md.count("### (d) The generator") == 3
    assert md.count("### (e) Interpolation") == 3
    for preset in ("mlp", "mlp-fixed-var", "conv"):
        assert f"| `{preset}` |" in md  # a row of the comparison table
        assert (base / "report" / "figures" / f"{preset}-epochs1-train-subset2000" / "latent_map.png").exists()
    assert "D_{\\mathrm{KL}}(P \\Vert Q)" in md  # the derivation is included
    assert "report written to" in first.stdout


def test_report_html_is_self_contained(report_dirs):
    base, _, _ = report_dirs
    html = (base / "report" / "index.html").read_text()
    assert "<script" not in html and "<link" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) > 20 and all(s.startswith("data:image/") for s in sources)


def test_report_is_a_pure_function_of_the_runs(report_dirs):
    base, args, _ = report_dirs
    before = {p.name: p.read_bytes() for p in (base / "report").glob("*.*")}
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reusing") == 3  # nothing retrained
    after = {p.name: p.read_bytes() for p in (base / "report").glob("*.*")}
    assert before == after


def test_report_table_matches_what_encode_prints(report_dirs):
    base, _, _ = report_dirs
    run_dir = base / "runs" / "mlp-epochs1-train-subset2000"
    result = run_cli("encode", str(run_dir), "--out", str(base / "encode"))
    assert result.returncode == 0, result.stderr
    md = (base / "report" / "report.md").read_text()
    mlp_section = md.split("## Part (f)")[0]
    assert result.stdout.strip() in mlp_section


def test_report_renders_in_chromium_without_broken_images(report_dirs, browser, artifacts):
    base, _, _ = report_dirs
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto((base / "report" / "index.html").as_uri())
    images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.className])")
    assert len(images) > 20
    assert all(complete and width > 0 for complete, width, _ in images), "a broken image in the report"
    assert sum(cls.startswith("math") for _, _, cls in images) > 10  # the maths rendered as images
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    page.close()
