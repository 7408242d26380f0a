"""The explorer for the family's two members whose codes are not a plain z: the cvae (a class selector decides
the class its networks are given) and the vqvae (a code grid in place of the map). Its page data, its API
against `Run.decode`, and the served and the exported page in Chromium."""

from __future__ import annotations

import base64
import dataclasses

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import canvas_pixels, console_problems, draw_a_one, offline_page
from vaelab.config import make_config
from vaelab.data.batches import one_hot
from vaelab.explore import pagedata, serve, webmodel, webpage
from vaelab.explore.export import export
from vaelab.explore.server import create_app
from vaelab.models import build_models

TINY = {"latent_dim": 2, "epochs": 1, "train_subset": 500, "test_subset": 100, "hidden": (32,)}


def tiny_run(path, model: str, **options):
    """An mlp `model` of 32 hidden units trained 1 epoch on 500 MNIST images."""
    from vaelab.training.loop import train

    return train(make_config("mlp", model=model, **{**TINY, **options}), path, verbose=0)


@pytest.fixture(scope="module")
def cvae(tmp_path_factory, mnist):
    """A cvae of latent_dim 2."""
    return tiny_run(tmp_path_factory.mktemp("family") / "cvae", "cvae")


@pytest.fixture(scope="module")
def vqvae(tmp_path_factory, mnist):
    """A vqvae of 4 codes of 16."""
    return tiny_run(tmp_path_factory.mktemp("family") / "vqvae", "vqvae", latent_dim=4, codes=16)


@pytest.fixture(scope="module")
def family(cvae, vqvae):
    return cvae, vqvae


@pytest.fixture(scope="module")
def client(family, mnist):
    return TestClient(create_app(list(family), mnist))


def image(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(28, 28).astype(int)


def as_bytes(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images * 255), 0, 255)


def test_a_cvae_maps_each_test_image_encoded_with_its_own_label(cvae, mnist):
    page = pagedata.page_map("0", cvae, mnist)
    z_mean, _ = cvae.encode(mnist.x_test, labels=mnist.y_test)
    assert page["kind"] == "map" and page["run"]["family"] == "cvae"
    np.testing.assert_allclose(page["coords"], z_mean, atol=1e-4)
    assert page["class_names"] == [str(d) for d in range(10)]
    models = pagedata.models(cvae)
    assert models["generator"]["classes"] == models["encoder"]["classes"] == 10
    assert models["generator"]["inputs"] == ["decoder_input:0:0"]  # the label folded into class biases
    assert models["generator"]["weights"]["shapes"][1] == [10, 32]


def test_a_vqvae_gets_a_code_grid_of_test_images_and_their_codes(vqvae, mnist):
    page = pagedata.page_map("1", vqvae, mnist)
    assert page["kind"] == "codes" and (page["codebook_size"], page["code_length"]) == (16, 4)
    assert [im["label"] for im in page["images"]] == list(range(10))
    indices = [im["index"] for im in page["images"]]
    np.testing.assert_array_equal([im["codes"] for im in page["images"]], vqvae.codes(mnist.x_test[indices]))
    models = pagedata.models(vqvae)
    assert "encoder" not in models and models["generator"]["ops"][0]["op"] == "embedding"


def test_the_api_decodes_a_cvae_as_run_decode_with_that_label(client, cvae):
    points = [[0.5, -0.3], [-1.0, 1.0]]
    decoded = {}
    for label in (3, 7):
        got = client.post("/api/runs/0/decode", json={"points": points, "label": label}).json()["images"]
        expected = as_bytes(cvae.decode(points, labels=np.full(2, label)))
        for k in range(2):
            np.testing.assert_allclose(image(got[k]), expected[k], atol=1)
        decoded[label] = image(got[0])
    assert not np.array_equal(decoded[3], decoded[7])  # the class changes the image
    body = {"start": [0, 0], "end": [1, 1], "steps": 3, "label": 3}
    got = client.post("/api/runs/0/interpolate", json=body).json()["images"]
    np.testing.assert_allclose(image(got[2]), as_bytes(cvae.decode([[1, 1]], labels=[3]))[0], atol=1)


def test_the_api_decodes_a_vqvaes_codes_as_run_decode(client, vqvae):
    codes = [[0, 5, 15, 2], [3, 3, 3, 3]]
    got = client.post("/api/runs/1/decode", json={"points": codes}).json()["images"]
    expected = as_bytes(vqvae.decode(codes))
    for k in range(2):
        np.testing.assert_allclose(image(got[k]), expected[k], atol=1)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/runs/0/decode", {"points": [[0, 0]]}, "is a cvae: give the class, 0 to 9"),
        ("/api/runs/0/decode", {"points": [[0, 0]], "label": 10}, "is a cvae: give the class, 0 to 9"),
        ("/api/runs/0/encode", {"pixels": [0.0] * 784}, "is a cvae: give the class"),
        ("/api/runs/1/decode", {"points": [[0, 1, 2, 3]], "label": 1}, "reads no class"),
        ("/api/runs/1/decode", {"points": [[0, 1, 2, 16]]}, "code indices, integers 0 to 15"),
        ("/api/runs/1/decode", {"points": [[0, 1.5, 2, 3]]}, "code indices, integers 0 to 15"),
        ("/api/runs/1/interpolate", {"start": [0, 0, 0, 0], "end": [1, 1, 1, 1]}, "cannot interpolate"),
        ("/api/runs/1/encode", {"pixels": [0.0] * 784}, "cannot place on a map"),
    ],
)
def test_classes_and_codes_the_runs_cannot_take_are_a_422(client, path, body, message):
    response = client.post(path, json=body)
    assert response.status_code == 422 and message in response.json()["detail"]


def decoded_pixels(page) -> np.ndarray:
    """The page's decoded image, as the page painted it (grey: 255 = ink)."""
    return 255 - canvas_pixels(page, "#decoded")[..., 0].astype(int)


def check_cvae_page(page, cvae) -> None:
    """The class selector decides the class decoded, as `Run.decode` with that label; the pad encodes with it."""
    assert page.locator("#class-choice").is_visible()
    assert page.locator("#decode-class option").all_text_contents() == [str(d) for d in range(10)]
    images = {}
    for label in (1, 8):
        page.select_option("#decode-class", str(label))
        images[label] = decoded_pixels(page)
        np.testing.assert_allclose(images[label], as_bytes(cvae.decode([[0.0, 0.0]], labels=[label]))[0], atol=1)
        got = page.evaluate("Array.from(vaelabExplorer.live.decode([0.5, -0.25]))")
        expected = cvae.decode([[0.5, -0.25]], labels=[label]).ravel()
        np.testing.assert_allclose(got, expected, atol=1e-5)  # the class bias folded as Keras concatenates
    assert not np.array_equal(images[1], images[8]), "the class selector did not change the decoded image"


def check_vqvae_page(page, vqvae) -> None:
    """The code grid shows the chosen test image's codes; typing in a cell decodes the changed codes at each key,
    with no Enter needed."""
    page.select_option("#run", "1")
    page.wait_for_selector("#codes-panel:not([hidden])")
    assert page.locator("#map-panel").is_hidden() and page.locator("#class-choice").is_hidden()
    cells = page.locator("#code-grid input")
    assert cells.count() == 4
    info = page.locator("#run-info").text_content()  # 1 epoch, and its -ELBO in nats (its objective is not in nats)
    assert info.startswith(f"{vqvae.config.preset} (vqvae): ")
    assert ", 1 epoch, test loss " in info and f"{vqvae.metrics['test']['elbo_loss']:.2f} nats" in info
    codes = [int(v) for v in cells.evaluate_all("cs => cs.map((c) => c.value)")]
    before = decoded_pixels(page)
    np.testing.assert_allclose(before, as_bytes(vqvae.decode([codes]))[0], atol=1)
    codes[0] = 10 + (codes[0] + 5) % 6  # two digits: the first decodes (as code 1) before the second is typed
    cells.first.fill("")
    cells.first.press_sequentially(str(codes[0])[0])
    assert page.evaluate("JSON.parse(document.getElementById('decoded').dataset.codes)")[0] == 1
    cells.first.press_sequentially(str(codes[0])[1])
    assert page.evaluate("JSON.parse(document.getElementById('decoded').dataset.codes)") == codes
    after = decoded_pixels(page)
    np.testing.assert_allclose(after, as_bytes(vqvae.decode([codes]))[0], atol=1)
    assert not np.array_equal(before, after), "changing a code did not change the decoded image"
    page.click("#random-codes")
    drawn = page.evaluate("JSON.parse(document.getElementById('decoded').dataset.codes)")
    assert len(drawn) == 4 and all(0 <= c < 16 for c in drawn)


def test_served_page_gives_a_cvae_its_class_and_a_vqvae_its_code_grid(family, mnist, browser, artifacts):
    cvae, vqvae = family
    handle = serve(list(family), port=0, background=True, dataset=mnist)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors = console_problems(page)  # CSP violations too
        page.goto(handle.url)
        page.wait_for_selector("body[data-ready=true]", timeout=60000)
        check_cvae_page(page, cvae)
        draw_a_one(page)  # encoded as the chosen class (8)
        z = page.evaluate("vaelabExplorer.models.encoder.predict(vaelabExplorer.lastDrawing, 8)[0]")
        drawing = np.array(page.evaluate("vaelabExplorer.lastDrawing"), np.float32).reshape(1, 28, 28, 1)
        np.testing.assert_allclose(z, cvae.encode(drawing, labels=[8])[0][0], atol=1e-4)
        page.screenshot(path=str(artifacts / "explorer-cvae.png"), full_page=True)
        check_vqvae_page(page, vqvae)
        page.screenshot(path=str(artifacts / "explorer-vqvae.png"), full_page=True)
        page.close()
    finally:
        handle.stop()
    assert not errors, errors


def test_exported_page_works_for_a_cvae_and_a_vqvae(family, mnist, browser, tmp_path):
    cvae, vqvae = family
    path, exported = export(list(family), mnist, tmp_path / "site")
    assert [(run.encoder, run.code_grid) for run in exported] == [(True, False), (False, True)]
    page, requests, errors = offline_page(browser, path.as_uri(), viewport={"width": 1280, "height": 1100})
    page.wait_for_selector("body[data-ready=true]", timeout=60000)
    check_cvae_page(page, cvae)
    check_vqvae_page(page, vqvae)
    page.close()
    assert not errors and not requests, (errors, requests)


def test_a_convnet_cvaes_networks_in_the_page_equal_keras_for_each_class(browser):
    """The label folded into class biases (webmodel) gives what Keras gives on [z, one-hot]: untrained weights, the
    label after convolutional features (the mlp's is in the page tests above)."""
    config = dataclasses.replace(make_config("convnet", model="cvae", latent_dim=2, filters=(4, 8)).model, classes=10)
    models = build_models(config, seed=3)
    rng = np.random.default_rng(0)
    labels = np.array([0, 3, 9])
    z = rng.normal(size=(3, 2)).astype(np.float32)
    x = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    page = browser.new_page()
    page.set_content("<!DOCTYPE html><html><body></body></html>")
    page.add_script_tag(content=webpage.asset("nn.js"))
    decoded, encoded = page.evaluate(
        """([g, e, z, x, labels]) => { const [gen, enc] = [vaelab.nn.load(g), vaelab.nn.load(e)];
           return [labels.map((c, i) => Array.from(gen.predict(z[i], c)[0])),
                   labels.map((c, i) => Array.from(enc.predict(x[i], c)[0]))]; }""",
        [
            webmodel.describe(models.generator),
            webmodel.describe(models.encoder),
            z.tolist(),
            x.reshape(3, -1).tolist(),
            labels.tolist(),
        ],
    )
    page.close()
    onehot = one_hot(labels, 10)
    expected = models.generator.predict([z, onehot], verbose=0).reshape(3, -1)
    np.testing.assert_allclose(decoded, expected, atol=1e-5)
    np.testing.assert_allclose(encoded, models.encoder.predict([x, onehot], verbose=0)[0], atol=1e-4)
