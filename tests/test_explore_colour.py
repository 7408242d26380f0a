"""The explorer for a run on colour images of another size than MNIST's: a convnet on 32x32 colour images.

Its data are made in the test (tests/conftest.py `shapes_dataset`), so the served page is started with the
Dataset in memory (`serve(..., dataset=data)`)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import canvas_pixels, console_problems, draw_a_one
from vaelab.explore.guards import MAX_BODY_BYTES
from vaelab.explore.server import create_app


@pytest.fixture(scope="module")
def colour_client(colour_run):
    run, data = colour_run
    return TestClient(create_app([run], data))


def colour_image(b64: str) -> np.ndarray:
    raw = base64.b64decode(b64)
    assert len(raw) == 32 * 32 * 3
    return np.frombuffer(raw, np.uint8).reshape(32, 32, 3)


def test_colour_run_decodes_and_encodes_in_its_own_shape(colour_client, colour_run):
    run, data = colour_run
    m = colour_client.get("/api/runs/0/map").json()
    assert m["image_shape"] == [32, 32, 3] and len(m["table"]) == 4
    np.testing.assert_array_equal(colour_image(m["table"][0]["image"]), data.x_test[m["table"][0]["index"]])
    points = [[0.5, 0.2], [-1.0, 1.0]]
    got = colour_client.post("/api/runs/0/decode", json={"points": points}).json()["images"]
    np.testing.assert_allclose(colour_image(got[0]), np.rint(run.decode(points)[0] * 255), atol=1)
    pixels = data.x_test[:1] / 255.0
    encoded = colour_client.post("/api/runs/0/encode", json={"pixels": pixels.ravel().tolist()})
    assert encoded.status_code == 200, encoded.text
    np.testing.assert_allclose(encoded.json()["z_mean"], run.encode(pixels)[0][0], atol=1e-5)
    assert colour_image(encoded.json()["reconstruction"]).std() > 0
    longest = json.dumps({"pixels": [1.2345678901234567e-05] * 3072})  # the longest numbers JSON writes here
    assert len(longest) > MAX_BODY_BYTES  # a grey run's limit would refuse it
    response = colour_client.post("/api/runs/0/encode", content=longest, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def test_colour_run_refuses_a_grey_image(colour_client):
    response = colour_client.post("/api/runs/0/encode", json={"pixels": [0.5] * 784})
    assert response.status_code == 422
    assert response.json()["detail"] == "pixels: run 0 takes 3072 values (a 32x32x3 image), got 784"


@pytest.mark.slow
def test_served_colour_run_in_chromium_draws_in_colour_and_encodes_drawings(colour_run, browser, artifacts):
    """The served page holds the encoder: the pad encodes a drawing as ink on the data's background, in every channel,
    and says so; the table's thumbnails are shown at the images' size."""
    from vaelab.explore import serve
    from vaelab.explore.pagedata import background

    run, data = colour_run
    handle = serve([run], port=0, background=True, dataset=data)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors = console_problems(page)  # CSP violations too
        page.goto(handle.url)
        page.wait_for_selector("body[data-ready=true]", timeout=60000)
        rgba = canvas_pixels(page, "#decoded")
        height, width = rgba.shape[:2]
        expected = np.rint(np.clip(run.decode([[0.0, 0.0]])[0], 0, 1) * 255)
        assert (width, height) == (32, 32)
        np.testing.assert_allclose(rgba[..., :3], expected, atol=1)  # the colour as it is
        thumbnail = page.locator("#table tbody canvas").first
        assert thumbnail.evaluate("c => [c.width, c.height, c.clientWidth, c.clientHeight]") == [32, 32, 32, 32]
        paper = 0.0 if np.mean(background(data.x_test)) < 0.5 else 1.0  # the test's mottled background: 0.49
        note = page.locator("#pad-note").text_content()
        ink = "white ink on black" if paper == 0 else "black ink on white"
        assert note.startswith(f"32x32 colour images: your drawing is encoded as {ink}")
        assert page.locator("#pad").is_visible()
        draw_a_one(page)
        draw_a_one(page)  # a second stroke: the pad is read again, without Chromium's warning about it
        z = page.evaluate("JSON.parse('[' + document.getElementById('drawn-coords').textContent.slice(1, -1) + ']')")
        pixels = page.evaluate("vaelabExplorer.lastDrawing")
        drawing = np.array(pixels).reshape(1, 32, 32, 3)
        assert np.mean(drawing == paper) > 0.5 and np.any(drawing == 1 - paper)  # the paper, and ink on it
        np.testing.assert_array_equal(drawing[..., 0], drawing[..., 2])
        np.testing.assert_allclose(z, run.encode(drawing)[0][0], atol=2e-3)  # the page shows 3 decimals
        page.screenshot(path=str(artifacts / "explorer-colour.png"), full_page=True)
        page.close()
    finally:
        handle.stop()
    assert not errors, errors
