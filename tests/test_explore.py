"""The explorer: its JSON API (validated, never a 5xx, fuzzed from its OpenAPI schema), the command, and
the page in a real Chromium."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import http.client
import json
import os
import shutil
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

from tests.conftest import console_problems, draw_a_one, run_cli
from vaelab.errors import VaelabError
from vaelab.explore.guards import MAX_BODY_BYTES, AllowedHosts, HostCheck
from vaelab.explore.server import create_app


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
    assert [row["label"] for row in m["table"]] == list(range(10))
    assert m["class_names"] == [str(d) for d in range(10)] and m["image_shape"] == [28, 28, 1]
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
        ("/api/runs/0/encode", json.dumps({"pixels": [0.5] * 783}), 422, "takes 784 values (a 28x28x1 image), got 783"),
        ("/api/runs/0/encode", json.dumps({"pixels": []}), 422, "at least 1"),
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
    assert page.status_code == 200 and "static/app.js" in page.text
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
        proc.send_signal(signal.SIGINT)  # at once: the server may still be starting, which a Ctrl-C must stop too
        proc.wait(timeout=30)
    assert proc.returncode == 130
    assert proc.stderr.read().strip().splitlines() == ["vaelab explore: interrupted"]


@pytest.mark.slow
def test_page_in_chromium_decodes_draws_and_interpolates(server, browser, artifacts):
    url, _ = server
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    errors = console_problems(page)  # CSP violations too
    remote = []
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

    draw_a_one(page)
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
    from vaelab.training.loop import train

    run = train(
        make_config("mlp", latent_dim=3, epochs=1, train_subset=500, test_subset=100), tmp_path / "d3", verbose=0
    )
    client = TestClient(create_app([run], mnist))
    m = client.get("/api/runs/0/map").json()
    assert m["is_pca"] and m["axis_labels"] == ["PC1", "PC2"] and len(m["plane_axes"]) == 3
    assert len(client.post("/api/runs/0/decode", json={"points": [[0.1, 0.2, 0.3]]}).json()["images"]) == 1
    assert client.post("/api/runs/0/decode", json={"points": [[0.1, 0.2]]}).status_code == 422


# --- hardening: Host check, headers, limits, damaged runs ---------------------------------------------------


def test_security_headers_on_every_response(client):
    big = json.dumps({"points": [[0.0, 0.0]] * 10000})
    responses = [
        client.get("/"),
        client.get("/api/runs"),
        client.get("/static/app.js"),
        client.get("/static/nothing.js"),  # 404
        client.post("/api/runs/0/decode", content="{bad", headers={"content-type": "application/json"}),  # 422
        client.post("/api/runs/0/decode", content=big, headers={"content-type": "application/json"}),  # 413
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 422, 413]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy


def test_a_wrong_host_is_refused(app):
    client = TestClient(HostCheck(app, AllowedHosts.for_server("127.0.0.1", 8000)), base_url="http://127.0.0.1:8000")
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000"):
        assert client.get("/api/runs", headers={"host": host}).status_code == 200, host
    for host in ("attacker.example:8000", "attacker.example", "127.0.0.1:8001", "localhost", "[::1]x", ""):
        response = client.get("/api/runs", headers={"host": host})
        assert response.status_code == 421, host
        detail = response.json()["detail"]
        assert "\n" not in detail and "this server answers to" in detail and "localhost" in detail
    everywhere = AllowedHosts.for_server("0.0.0.0", 80)
    assert everywhere.accepts("192.168.1.20") and everywhere.accepts("[fe80::1]:80")
    assert not everywhere.accepts("attacker.example") and not everywhere.accepts("192.168.1.20:81")


def test_the_served_command_checks_the_host(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/runs", headers={"Host": f"rebound.attacker.example:{port}"})
    response = conn.getresponse()
    assert response.status == 421 and b"this server answers to" in response.read()
    assert response.getheader("x-content-type-options") == "nosniff"  # refusals get the headers too
    conn.close()


@pytest.fixture(scope="module")
def quick_server(small_run):
    """An explorer serving in this process with short timeouts and a small concurrency limit."""
    from vaelab.explore import guards, serve

    class QuickGuard(guards.SlowClientGuard):  # its own class: the other servers keep the shipped limits
        header_seconds = body_seconds = 2.0
        max_connections = 3

    with pytest.MonkeyPatch.context() as at_start:  # read as the server starts: not left to later tests' servers
        at_start.setattr(guards, "KEEP_ALIVE_SECONDS", 2)
        at_start.setattr(guards, "SlowClientGuard", QuickGuard)
        handle = serve([small_run], port=0, background=True)
    yield handle
    handle.stop()


def closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes `sock` (reading and dropping what it sends)."""
    started = time.monotonic()
    sock.settimeout(30)
    while sock.recv(65536):
        pass
    return time.monotonic() - started


def test_slow_and_idle_clients_are_disconnected(quick_server):
    port = int(quick_server.url.rsplit(":", 1)[1].strip("/"))
    config = quick_server.server.config
    assert config.timeout_keep_alive == 2
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(f"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */".encode())  # half a header
        assert 1.5 < closed_after(slow) < 10
    with socket.create_connection(("127.0.0.1", port)) as slow:
        head = f"POST /api/runs/0/decode HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100\r\n"
        slow.sendall(head.encode() + b"content-type: application/json\r\n\r\n" + b'{"points": ')  # half a body
        assert 1.5 < closed_after(slow) < 10
    with socket.create_connection(("127.0.0.1", port)) as idle:
        idle.sendall(f"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert idle.recv(12) == b"HTTP/1.1 200"
        assert 1.5 < closed_after(idle) < 10  # kept alive, then closed when idle


def test_a_connection_beyond_the_limit_closes_the_one_waiting_longest(quick_server):
    port = int(quick_server.url.rsplit(":", 1)[1].strip("/"))
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # idle: waiting for their requests
    try:
        deadline = time.monotonic() + 10
        while len(quick_server.server.server_state.connections) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/runs")
        assert conn.getresponse().status == 200  # served: the oldest idle connection made room
        conn.close()
        held[0].settimeout(5)
        assert held[0].recv(100) == b""  # closed by the server
    finally:
        for sock in held:
            sock.close()


def test_at_most_max_concurrency_requests_are_answered_at_once():
    from vaelab.explore.guards import RequestLimit

    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main():
        limit = RequestLimit(slow_app, limit=2)
        statuses = []

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        calls = [asyncio.create_task(limit({"type": "http"}, None, send)) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert statuses == [503]  # the third, while two are answered
        release.set()
        await asyncio.gather(*calls)
        return statuses, limit.active

    result = concurrent.futures.ThreadPoolExecutor(1).submit(asyncio.run, main())  # a thread and a loop of its own
    assert result.result(timeout=30) == ([503, 200, 200], 0)


@pytest.fixture(scope="module")
def default_server(small_run):
    """An explorer serving in this process with the limits it ships with."""
    from vaelab.explore import serve

    handle = serve([small_run], port=0, background=True)
    yield int(handle.url.rsplit(":", 1)[1].strip("/"))
    handle.stop()


def get_runs(port: int, timeout: float = 10) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/api/runs")
        return conn.getresponse().status
    finally:
        conn.close()


def test_32_slow_clients_do_not_starve_the_others(default_server):
    """The issue's case: 32 clients trickling header bytes; every other request must still be answered, at once."""
    from vaelab.explore import guards

    slow = []
    try:
        for _ in range(guards.MAX_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", default_server))
            sock.sendall(f"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{default_server}\r\nX-a: ".encode())
            slow.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        statuses = [get_runs(default_server) for _ in range(20)]
        assert statuses == [200] * 20 and time.monotonic() - started < 8  # not after the slow ones' deadline
    finally:
        for sock in slow:
            sock.close()


def test_32_concurrent_clients_are_all_served(default_server):
    from vaelab.explore import guards

    with concurrent.futures.ThreadPoolExecutor(guards.MAX_CONNECTIONS) as pool:
        statuses = list(pool.map(lambda _: get_runs(default_server, 30), range(guards.MAX_CONNECTIONS)))
    assert statuses == [200] * guards.MAX_CONNECTIONS


@pytest.mark.parametrize("size", [15 * 1024, 17 * 1024, 100 * 1024])
def test_request_headers_are_limited_to_16_kib_however_they_arrive(default_server, size):
    from vaelab.explore import guards

    head = f"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{default_server}\r\n"
    filler = "X-Fill: " + "a" * (size - len(head) - 12) + "\r\n\r\n"
    with socket.create_connection(("127.0.0.1", default_server)) as sock:
        sock.settimeout(10)
        sock.sendall((head + filler).encode())  # in one piece
        status = sock.recv(12)
    assert status == (b"HTTP/1.1 200" if size <= guards.MAX_HEADER_BYTES else b"HTTP/1.1 431")


def test_serve_in_the_background_from_a_running_event_loop(small_run):
    """As in a Jupyter notebook: serve() returns at once with a URL, and stop() ends it."""
    from vaelab.explore import guards, serve

    async def main():
        handle = serve([small_run], port=0, background=True)
        body = await asyncio.get_running_loop().run_in_executor(
            None, lambda: urllib.request.urlopen(handle.url + "api/runs", timeout=30).read()
        )
        handle.stop()
        return handle, json.loads(body)

    result = concurrent.futures.ThreadPoolExecutor(1).submit(asyncio.run, main())  # a thread of its own: the
    handle, runs = result.result(timeout=120)  # test's thread may already run Playwright's event loop
    assert runs[0]["preset"] == "mlp" and not handle.thread.is_alive()
    config = handle.server.config
    assert config.limit_concurrency is None and config.timeout_keep_alive == guards.KEEP_ALIVE_SECONDS
    assert config.h11_max_incomplete_event_size == guards.MAX_HEADER_BYTES and config.http is guards.SlowClientGuard


@pytest.mark.parametrize("metrics", ["[1, 2]", '{"test": 5}', '{"test": {"loss": "low"}}', '{"test": {}}'])
def test_damaged_metrics_are_refused_when_a_run_is_loaded(small_run, tmp_path, metrics):
    from vaelab.explore import load_runs

    copy = tmp_path / "run"
    shutil.copytree(small_run.path, copy)
    (copy / "metrics.json").write_text(metrics)
    with pytest.raises(VaelabError, match=r"metrics.json is damaged") as err:
        load_runs([copy])
    assert "\n" not in str(err.value) and "--resume" in str(err.value)


def test_a_truncated_checkpoint_is_refused_when_a_run_is_loaded(small_run, tmp_path):
    from vaelab.explore import load_runs

    copy = tmp_path / "run"
    shutil.copytree(small_run.path, copy)
    checkpoint = (copy / "checkpoint.npz").read_bytes()
    (copy / "checkpoint.npz").write_bytes(checkpoint[: len(checkpoint) // 2])
    with pytest.raises(VaelabError, match=r"checkpoint\.npz is damaged") as err:
        load_runs([copy])
    assert "\n" not in str(err.value)


def test_damaged_run_files_are_one_line_at_start(small_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(small_run.path, copy)
    (copy / "metrics.json").write_text('{"test": "nothing"}')
    result = run_cli("explore", str(copy), "--port", str(free_port()))
    assert result.returncode == 2 and "metrics.json is damaged" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_loss_that_is_not_a_number_is_sent_as_null(small_run, mnist):
    run = dataclasses.replace(small_run, metrics={**small_run.metrics, "test": {"loss": float("nan")}})
    client = TestClient(create_app([run], mnist))
    response = client.get("/api/runs")
    assert response.status_code == 200 and response.json()[0]["test_loss"] is None
