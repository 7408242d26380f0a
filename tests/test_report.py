"""`vaelab report` end to end on real MNIST: every part answered, reproducible, viewable offline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import (
    REPORT_EPOCHS,
    TRAIN_SUBSET,
    made_once,
    marker_labels,
    offline_page,
    run_cli,
    strip_lines,
)
from vaelab.report.exercise import REPORT_PRESETS, build_report
from vaelab.run import load_run

pytestmark = pytest.mark.slow
REPORT_BUDGET_BYTES = 10_000_000


@pytest.fixture(scope="session")
def report_dirs(tmp_path_factory, preset_runs):
    """One report of the preset runs, written once per session (pytest-xdist may run this module's tests apart):
    its folder, the command's arguments, and how the command ended."""
    return made_once(tmp_path_factory, "report", lambda base: write_report(base, preset_runs), read_report)


def write_report(base, preset_runs) -> tuple:
    base.mkdir()
    args = [
        "report",
        "--epochs",
        str(REPORT_EPOCHS),
        "--train-subset",
        str(TRAIN_SUBSET),
        "--iwae-samples",
        "2",  # the bound's value is tested elsewhere; 100 samples of 10,000 test images cost a minute here
        "--out",
        str(base / "report"),
        "--runs-dir",
        str(preset_runs["mlp"].path.parent),  # the runs are trained once, for every test that needs them
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    (base / "command.json").write_text(json.dumps({"args": args, "stdout": first.stdout, "stderr": first.stderr}))
    return base, args, first


def read_report(base) -> tuple:
    """What `write_report` returned, from the files it left."""
    done = json.loads((base / "command.json").read_text())
    return base, done["args"], subprocess.CompletedProcess(["vaelab", *done["args"]], 0, done["stdout"], done["stderr"])


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
    assert "--train-subset 2000 --iwae-samples 2` from the runs" in md  # the command, K included
    assert "- Test images: all 10,000 score every network" in md
    assert "- The log-likelihood bound: K = 2 importance samples per test image" in md


def test_report_html_is_self_contained(report_dirs):
    """No remote resource: everything inline or a data: URI, and a policy that forbids any connection."""
    base, _, _ = report_dirs
    html = (base / "report" / "index.html").read_text()
    assert len(html.encode()) < REPORT_BUDGET_BYTES
    sources = re.findall(r'\s(?:src|href)="([^"]*)"', html)
    assert len(sources) > 20 and all(s.startswith("data:") for s in sources)
    assert not re.search(r"<script[^>]*\ssrc=", html) and not re.search(r"<link(?! rel=\"icon\")", html)
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1)
    assert "default-src 'none'" in policy and "connect-src 'none'" in policy and "unsafe" not in policy
    assert html.count('<div class="live" hidden>') == len(REPORT_PRESETS)  # shown by the script; scripts off: not
    assert "live latent map" not in (base / "report" / "report.md").read_text().replace("<!-- live latent map", "")


def test_report_is_a_pure_function_of_the_runs(report_dirs, vaelab):
    base, args, _ = report_dirs
    before = {p.name: p.read_bytes() for p in (base / "report").glob("*.*")}
    again = vaelab(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reusing") == 3  # nothing retrained
    after = {p.name: p.read_bytes() for p in (base / "report").glob("*.*")}
    assert before == after


def test_report_table_matches_what_encode_prints(report_dirs, preset_runs, vaelab):
    base, _, _ = report_dirs
    run_dir = preset_runs["mlp"].path
    result = vaelab("encode", str(run_dir), "--out", str(base / "encode"))
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


@pytest.fixture(scope="module")
def report_page(report_dirs, browser):
    base, _, _ = report_dirs
    page, requests, errors = offline_page(
        browser, (base / "report" / "index.html").as_uri(), viewport={"width": 1200, "height": 1000}
    )
    page.wait_for_function(f"window.vaelabReport && window.vaelabReport.length === {len(REPORT_PRESETS)}")
    yield page, requests, errors
    page.close()


def test_live_report_decodes_and_interpolates_offline(report_page, artifacts):
    page, requests, errors = report_page
    live = page.locator(".live").first
    live.scroll_into_view_if_needed()
    box = page.locator(".live-map").first.bounding_box()
    decoded = page.locator(".live-decoded").first

    def hover(fx: float, fy: float) -> str:
        before = decoded.get_attribute("data-z")
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function("b => document.querySelector('.live-decoded').dataset.z !== b", arg=before)
        return page.evaluate("document.querySelector('.live-decoded').toDataURL()")

    page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.click(box["x"] + 0.7 * box["width"], box["y"] + 0.45 * box["height"])
    page.wait_for_function("document.querySelectorAll('.live-strip')[0].querySelectorAll('canvas').length === 10")
    for width in (1280, 1600):
        page.set_viewport_size({"width": width, "height": 1000})
        assert strip_lines(page, ".live-strip canvas") == 1, width  # the ten steps on one line
    page.set_viewport_size({"width": 1200, "height": 1000})
    box = page.locator(".live-map").first.bounding_box()
    labels = page.evaluate("vaelabReport[0].data.table.map((row) => String(row.label))")
    assert marker_labels(page, "vaelabReport[0]") == labels == [str(d) for d in range(10)]  # as the figures ring them
    assert hover(0.3, 0.3) != hover(0.6, 0.35), "moving over the map did not change the decoded image"
    live.screenshot(path=str(artifacts / "live-report.png"))
    assert not errors, errors
    assert not requests, f"the report tried to fetch: {requests}"


def test_live_report_decoders_equal_the_keras_generators(report_page, preset_runs):
    page, requests, errors = report_page
    for k, preset in enumerate(REPORT_PRESETS):
        z = np.random.default_rng(k).normal(scale=1.5, size=(100, 2)).astype(np.float32)
        got = page.evaluate("([k, z]) => z.map((p) => Array.from(vaelabReport[k].decode(p)))", [k, z.tolist()])
        expected = np.asarray(preset_runs[preset].generator.predict(z, verbose=0)).reshape(100, -1)
        np.testing.assert_allclose(np.array(got), expected, rtol=0, atol=1e-4, err_msg=preset)
    assert not errors and not requests


def test_networks_train_side_by_side_stop_together_on_ctrl_c_and_carry_on(tmp_path, mnist):
    """With two cores or more, the report trains its networks at once in pinned worker processes; a Ctrl-C
    stops them all at a step boundary, and the same command carries on from the epochs they kept."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: the report trains its networks one after the other")
    # On 500 test images: what this test checks does not depend on the test set's size (the full one is report_dirs').
    args = ["report", "--epochs", "1", "--train-subset", "1000", "--test-subset", "500", "--iwae-samples", "2"]
    args += ["--out", str(tmp_path / "report"), "--runs-dir", str(tmp_path / "runs")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    started = []
    for line in proc.stderr:  # both lanes busy: a training in each
        started += [line] if " on cores " in line else []
        if len(started) == 2:
            break
    assert {s.split()[2] for s in started} == {"conv", "mlp"}, started  # the longest (conv) first
    time.sleep(8)  # mid-training (or mid-start-up): either way the workers must stop cleanly
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith("run the same `vaelab report` again to continue (finished runs are reused)")
    )
    assert not (tmp_path / "report" / "index.html").exists()

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "report" / "index.html").exists()
    # Pinning the workers must not fork this JAX process (Python warns of a deadlock when it does).
    assert "Warning" not in err + again.stderr, err + again.stderr
    names = [f"{preset}-epochs1-train-subset1000-test-subset500" for preset in REPORT_PRESETS]
    runs = [load_run(tmp_path / "runs" / name) for name in names]
    for run in runs:
        assert run.complete and run.metrics["evaluation"]["samples"] == 2
    # Runs analysed while others trained give the report that their files give afterwards.
    rebuilt = build_report(runs, mnist, tmp_path / "again")
    assert rebuilt.with_name("report.md").read_text() == (tmp_path / "report" / "report.md").read_text()
