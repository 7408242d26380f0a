"""The explorer: its JSON API (validated, never a 5xx, fuzzed from its OpenAPI schema), the command, and
the page in a real Chromium."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from tests.conftest import run_cli
from vaelab.explore.server import MAX_BODY_BYTES, create_app


@pytest.fixture(scope="module")
def app(small_run, mnist):
    return create_app([small_run], mnist)


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


def image(b64: str) -> np.ndarray:
    raw = base64.b64decode(b64)
    assert len(raw) == 784
    return np.frombuffer(raw, np.uint8).reshape(28, 28)


def test_runs_and_latent_map(client):
    runs = client.get("/api/runs").json()
    assert [r["id"] for r in runs] == ["0"] and runs[0]["latent_dim"] == 2
    m = client.get("/api/runs/0/map").json()
    assert len(m["coords"]) == len(m["labels"]) == 10000
    assert [row["digit"] for row in m["table"]] == list(range(10))
    assert image(m["table"][7]["image"]).max() == 255  # test image #0, a 7


def test_decode_returns_one_digit_per_point(client, small_run):
    points = [[0.5, 0.2], [-1.0, 1.0], [0.0, 0.0]]
    got = client.post("/api/runs/0/decode", json={"points": points}).json()["images"]
    assert len(got) == 3
    expected = np.clip(np.rint(small_run.decode(points) * 255), 0, 255)
    np.testing.assert_allclose(image(got[0]), expected[0], atol=1)
    assert not np.array_equal(image(got[0]), image(got[1]))


def test_encode_and_interpolate(client, mnist):
    pixels = (mnist.x_test[0] / 255.0).ravel().tolist()
    encoded = client.post("/api/runs/0/encode", json={"pixels": pixels}).json()
    assert len(encoded["z_mean"]) == 2 and len(encoded["coords"]) == 2 and image(encoded["reconstruction"]).any()
    body = {"start": [0.0, 0.0], "end": [1.0, -1.0], "steps": 10}
    result = client.post("/api/runs/0/interpolate", json=body).json()
    assert len(result["images"]) == len(result["points"]) == 10
    assert result["points"][0] == [0.0, 0.0] and result["points"][-1] == [1.0, -1.0]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/runs/0/decode", '{"points": [[1, 2, 3]]}', 422, "needs 2 coordinates"),
        ("/api/runs/0/decode", '{"points": [[NaN, 0]]}', 422, "points.0.0"),
        ("/api/runs/0/decode", '{"points": [[Infinity, 0]]}', 422, "points.0.0"),
        ("/api/runs/0/decode", '{"points": [[1e9, 0]]}', 422, "less than or equal to 1000"),
        ("/api/runs/0/decode", json.dumps({"points": [[0, 0]] * 257}), 422, "at most 256"),
        ("/api/runs/0/decode", '{"points": []}', 422, "at least 1"),
        ("/api/runs/0/decode", "{not json", 422, "JSON"),
        ("/api/runs/7/decode", '{"points": [[0, 0]]}', 404, "no run '7'"),
        ("/api/runs/0/encode", json.dumps({"pixels": [0.5] * 783}), 422, "at least 784"),
        ("/api/runs/0/encode", json.dumps({"pixels": [2.0] * 784}), 422, "less than or equal to 1"),
        ("/api/runs/0/interpolate", '{"start": [0, 0], "end": [1, 1], "steps": 65}', 422, "less than or equal to 64"),
        ("/api/runs/0/interpolate", '{"start": [0, 0], "end": [1, 1], "steps": 1}', 422, "greater than or equal to 2"),
    ],
)
def test_bad_requests_are_4xx_with_a_one_line_message(client, path, body, status, message):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and message in detail


def test_oversized_bodies_are_refused(client):
    big = json.dumps({"points": [[0.0, 0.0]] * 10000})
    assert len(big) > MAX_BODY_BYTES
    assert (
        client.post("/api/runs/0/decode", content=big, headers={"content-type": "application/json"}).status_code == 413
    )

    def chunks():  # no content-length: the limit applies while reading
        for _ in range(100):
            yield b" " * 1024

    response = client.post("/api/runs/0/decode", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_the_page_and_its_files_are_served_and_nothing_else(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    assert client.get("/static/app.js").status_code == 200
    for path in ("/static/../server.py", "/static/%2e%2e%2fserver.py", "/static/nothing.js"):
        assert client.get(path).status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "vaelab explorer"


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_fuzzed_requests_never_get_a_server_error(app, mode):
    """Requests generated from the OpenAPI schema, valid (positive) and invalid (negative): no 5xx."""
    strategy = schemathesis.openapi.from_asgi("/openapi.json", app).as_strategy(generation_mode=mode)

    @given(case=strategy)
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call()
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"

    check()


# --- the command and the page in a real browser -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(small_run):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "explore", str(small_run.path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "api/runs", timeout=1)
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the explorer did not start"
            time.sleep(0.2)
    yield url, proc
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def test_explore_command_serves_on_loopback(server):
    url, _ = server
    runs = json.loads(urllib.request.urlopen(url + "api/runs").read())
    assert runs[0]["preset"] == "mlp"


def test_explore_command_refuses_bad_input(small_run):
    result = run_cli("explore", "/nonexistent/run")
    assert result.returncode == 2 and "no run at /nonexistent/run" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("explore", str(small_run.path), "--port", str(taken.getsockname()[1]))
    assert result.returncode == 2 and "pass another --port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_explore_warns_when_listening_beyond_loopback(small_run):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "explore", str(small_run.path), "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        line = proc.stderr.readline()
        assert "warning" in line and "0.0.0.0" in line
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_page_in_chromium_decodes_draws_and_interpolates(server, browser, artifacts):
    url, _ = server
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    errors, remote = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: remote.append(r.url) if not r.url.startswith(url) else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=60000)

    box = page.locator("#map").bounding_box()
    decoded = page.locator("#decoded")

    def hover(fx: float, fy: float) -> str:
        before = decoded.get_attribute("data-z")
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function("b => document.getElementById('decoded').dataset.z !== b", arg=before)
        return page.evaluate("document.getElementById('decoded').toDataURL()")

    first, second = hover(0.3, 0.3), hover(0.7, 0.65)
    assert first != second, "moving over the map did not change the decoded digit"

    pad = page.locator("#pad").bounding_box()
    page.mouse.move(pad["x"] + 100, pad["y"] + 30)
    page.mouse.down()
    for y in range(30, 170, 10):  # a vertical stroke: a 1
        page.mouse.move(pad["x"] + 100, pad["y"] + y)
    page.mouse.up()
    page.wait_for_function("document.getElementById('drawn-coords').textContent !== '–'")
    assert page.evaluate("window.vaelabExplorer.drawn") is not None  # the drawn digit's point on the map

    page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.5 * box["height"])
    page.wait_for_function("document.querySelectorAll('#strip canvas').length === 10")
    assert page.evaluate("window.vaelabExplorer.path.length") == 10
    page.locator("#table tbody tr").nth(3).click()
    page.locator("#table tbody tr").nth(8).click()
    page.wait_for_function("window.vaelabExplorer.picks.length === 2 && window.vaelabExplorer.path !== null")

    page.screenshot(path=str(artifacts / "explorer.png"), full_page=True)
    assert not errors, errors
    assert not remote, f"the page fetched from elsewhere: {remote}"
    page.close()


def test_higher_latent_dims_get_the_principal_plane(tmp_path, mnist):
    from vaelab.config import make_config
    from vaelab.training import train

    run = train(
        make_config("mlp", latent_dim=3, epochs=1, train_subset=500, test_subset=100), tmp_path / "d3", verbose=0
    )
    client = TestClient(create_app([run], mnist))
    m = client.get("/api/runs/0/map").json()
    assert m["is_pca"] and m["axis_labels"] == ["PC1", "PC2"] and len(m["plane_axes"]) == 3
    assert len(client.post("/api/runs/0/decode", json={"points": [[0.1, 0.2, 0.3]]}).json()["images"]) == 1
    assert client.post("/api/runs/0/decode", json={"points": [[0.1, 0.2]]}).status_code == 422
