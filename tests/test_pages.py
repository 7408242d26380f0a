"""The networks in the page (webmodel + nn.js) against Keras, and the exported explorer offline in Chromium."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from tests.conftest import PRESETS, canvas_pixels, draw_a_one, marker_labels, offline_page, run_cli, strip_lines
from vaelab.config import make_config
from vaelab.errors import VaelabError
from vaelab.explore import webmodel, webpage
from vaelab.explore.export import RUN_BUDGET_BYTES
from vaelab.models import build_models, likelihoods

POINTS = 100  # latent points per preset
IMAGES = 20  # test images per preset


def test_fused_layers_are_described_as_their_stock_pairs(preset_runs):
    run = preset_runs["conv"]
    generator = [op["op"] for op in webmodel.describe(run.generator)["ops"]]
    assert generator == ["dense", "dense", "reshape", "conv2d", "upsample2d", "conv2d", "upsample2d", "conv2d"]
    encoder = webmodel.describe(run.encoder)
    assert [op["op"] for op in encoder["ops"]] == [
        "conv2d", "maxpool2d", "conv2d", "maxpool2d", "reshape", "dense", "dense", "dense"
    ]  # fmt: skip
    assert encoder["input_shapes"] == [[28, 28, 1]] and encoder["output_shapes"] == [[2], [2]]
    assert encoder["ops"][0]["activation"] == "relu" and encoder["ops"][0]["padding"] == "same"


def test_weights_take_half_the_room_as_float16(preset_runs):
    run = preset_runs["mlp"]
    full = webmodel.describe(run.generator, dtype="float32")["weights"]["data"]
    half = webmodel.describe(run.generator, dtype="float16")["weights"]["data"]
    assert len(full) == pytest.approx(4 / 3 * 4 * webmodel.weight_count(run.generator), abs=4)
    assert len(half) == pytest.approx(len(full) / 2, abs=4)


def test_int8_weights_take_a_quarter_of_the_room_each_within_half_its_step(preset_runs):
    run = preset_runs["mlp"]
    full = webmodel.describe(run.generator, dtype="float32")
    small = webmodel.describe(run.generator, dtype="int8")
    assert len(small["weights"]["data"]) == pytest.approx(
        len(full["weights"]["data"]) / 4, abs=4 * len(run.generator.weights)
    )
    for exact, stored, scale in zip(
        webmodel.page_weights(full), webmodel.page_weights(small), small["weights"]["scales"], strict=True
    ):
        assert np.abs(stored - exact).max() <= scale / 2 * (1 + 1e-6)
        assert np.abs(stored).max() == pytest.approx(np.abs(exact).max(), rel=1e-6)  # the largest is exact


def test_the_page_runs_int8_weights_as_the_description_holds_them(nn_page):
    x = keras.Input((3,))
    h = keras.layers.Dense(16, activation="relu", bias_initializer="random_normal")(x)
    model = keras.Model(x, keras.layers.Dense(5, bias_initializer="random_normal")(h))
    model.layers[-1].set_weights([np.zeros((16, 5), np.float32), np.zeros(5, np.float32)])  # an array of zeros: scale 1
    description = webmodel.describe(model, dtype="int8")
    points = np.random.default_rng(3).normal(size=(6, 3)).astype(np.float32)
    got = nn_page.evaluate(
        "([spec, x]) => { const m = vaelab.nn.load(spec); return x.map((e) => Array.from(m.predict(e)[0])); }",
        [description, points.tolist()],
    )
    model.set_weights(webmodel.page_weights(description))
    np.testing.assert_allclose(np.array(got), model.predict(points, verbose=0), atol=1e-5)


@pytest.mark.parametrize("preset", ["mlp", "convnet"])
def test_the_page_shows_black_with_its_own_mass_as_python_does(nn_page, preset):
    """logistic-black's generator gives each pixel its channels' locations and pi's logit; the page, as `Run.decode`,
    shows pi times the locations clipped to [0, 1] (webmodel's last op, "black_mass_mean")."""
    config = make_config(preset, hidden=[16]) if preset == "mlp" else make_config(preset, filters=[4, 8])
    model = config.model.for_data((8, 6, 3))
    assert model.pixel_likelihood == "logistic-black"
    generator = build_models(model, seed=1).generator
    last = generator.get_layer("decoder_mean")
    last.set_weights([w * 12 for w in last.get_weights()])  # locations past both ends, pi far from 1/2 too
    description = webmodel.describe(generator, likelihood="logistic-black")
    assert description["output_shapes"] == [[8, 6, 3]] and description["ops"][-1]["op"] == "black_mass_mean"
    z = np.random.default_rng(4).normal(scale=2.0, size=(8, 2)).astype(np.float32)
    got = np.array(nn_page.evaluate(
        "([spec, x]) => { const m = vaelab.nn.load(spec); return x.map((e) => Array.from(m.predict(e)[0])); }",
        [description, z.tolist()],
    ))  # fmt: skip
    decoded = generator.predict(z, verbose=0)
    assert decoded.min() < 0 and decoded.max() > 1  # the clipping is tested
    expected = likelihoods.image("logistic-black", decoded).reshape(len(z), -1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_a_layer_the_page_cannot_run_is_a_one_line_error():
    x = keras.Input((8, 8, 1))
    model = keras.Model(x, keras.layers.Conv2D(2, 3, dilation_rate=2, name="dilated")(x), name="generator")
    with pytest.raises(VaelabError, match=r"cannot run layer 'dilated' \(Conv2D\) of the generator: dilation") as err:
        webmodel.describe(model)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def nn_page(browser):
    """A blank page holding nn.js only: runs any description."""
    page = browser.new_page()
    page.set_content("<!DOCTYPE html><html><body></body></html>")
    page.add_script_tag(content=webpage.asset("nn.js"))
    yield page
    page.close()


def run_in_page(page, model: keras.Model, x: np.ndarray) -> np.ndarray:
    """`model` described by webmodel and run by nn.js in Chromium, one example at a time, outputs flattened."""
    got = page.evaluate(
        "([spec, x]) => { const m = vaelab.nn.load(spec); return x.map((e) => Array.from(m.predict(e)[0])); }",
        [webmodel.describe(model), x.reshape(len(x), -1).tolist()],
    )
    return np.array(got)


@pytest.mark.parametrize(("height", "width"), [(8, 8), (7, 9), (5, 6)])
@pytest.mark.parametrize(("strides", "kernel"), [(2, 3), (2, 4), (3, 3), (1, 3), (2, 2)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_strided_and_transposed_convolutions_align_as_in_keras(nn_page, height, width, strides, kernel, padding):
    """Even and odd sizes, kernels that cover the stride or not: where Keras pads (XLA puts the odd row of a
    "same" convolution's padding after the image) and where a transposed convolution's outputs land."""
    x = keras.Input((height, width, 3))
    init = {"bias_initializer": "random_normal"}
    down = keras.layers.Conv2D(4, kernel, strides=strides, padding=padding, activation="tanh", **init)(x)
    up = keras.layers.Conv2DTranspose(5, kernel, strides=strides, padding=padding, **init)(down)
    cropped = keras.layers.Cropping2D(((1, 0), (0, 1)))(up)
    model = keras.Model(x, keras.layers.Flatten()(cropped))
    images = np.random.default_rng(height * strides + kernel).uniform(size=(3, height, width, 3)).astype(np.float32)
    np.testing.assert_allclose(run_in_page(nn_page, model, images), model.predict(images, verbose=0), atol=1e-5)


def test_data_blocks_cannot_close_their_script_element():
    block = webpage.json_block("x", {"name": "</script><script>alert(1)</script><!--"})
    assert block.count("</script>") == 1 and block.endswith("</script>") and "<!--" not in block


# --- the exported explorer, in Chromium, from file://, with the network blocked ------------------------------


@pytest.fixture(scope="module")
def exported(preset_runs, tmp_path_factory, mnist):
    from vaelab.config import make_config
    from vaelab.training.loop import train

    base = tmp_path_factory.mktemp("export")
    d3 = train(make_config("mlp", latent_dim=3, epochs=1, train_subset=500, test_subset=100), base / "d3", verbose=0)
    runs = [*preset_runs.values(), d3]
    result = run_cli("explore", *(str(run.path) for run in runs), "--export", str(base / "site"))
    assert result.returncode == 0, result.stderr
    return base / "site" / "index.html", result.stdout, runs


@pytest.fixture(scope="module")
def explorer_page(exported, browser):
    path, _, _ = exported
    page, requests, errors = offline_page(browser, path.as_uri(), viewport={"width": 1280, "height": 1100})
    page.wait_for_selector("body[data-ready=true]", timeout=60000)
    yield page, requests, errors
    page.close()


def test_export_fits_its_budget_and_forbids_connections(exported):
    path, stdout, runs = exported
    html = path.read_text()
    blocks = re.findall(r'<script type="application/json" id="vaelab-run-\d+">.*?</script>', html, re.S)
    assert len(blocks) == len(runs)
    assert all(len(block.encode()) <= RUN_BUDGET_BYTES for block in blocks)
    assert "mlp-epochs1-train-subset2000: " in stdout and "weights as float16" in stdout  # float32 would not fit
    assert "conv-epochs1-train-subset2000: " in stdout and "weights as float32" in stdout
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1)
    assert "default-src 'none'" in policy and "connect-src 'none'" in policy and "unsafe" not in policy
    assert not re.search(r"<script[^>]*\ssrc=", html) and '<link rel="stylesheet"' not in html


def page_models_as_keras(page, run_id: int, run):
    """The run's Keras generator and encoder as the page holds them: weights rounded to the page's dtype."""
    dtype = page.evaluate(
        f"JSON.parse(document.getElementById('vaelab-run-{run_id}').textContent).models.generator.weights.dtype"
    )
    if dtype == "float32":
        return run.generator, run.encoder, dtype
    models = build_models(run.config.model, seed=run.config.train.seed, binarize=run.config.train.binarize)
    for layer in models.vae.layers:
        weights = run.vae.get_layer(layer.name).get_weights()
        layer.set_weights([np.asarray(w).astype(dtype).astype(np.float32) for w in weights])
    return models.generator, models.encoder, dtype


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_page_decoder_equals_the_keras_generator(explorer_page, exported, preset, record_property):
    page, _, _ = explorer_page
    run_id = PRESETS.index(preset)
    run = exported[2][run_id]
    z = np.random.default_rng(run_id).normal(scale=1.5, size=(POINTS, run.config.model.latent_dim)).astype(np.float32)
    got = np.array(page.evaluate(
        "async ([id, z]) => { const { models } = await vaelabExplorer.loadRun(id);"
        " return z.map((p) => Array.from(models.generator.predict(p)[0])); }",
        [str(run_id), z.tolist()],
    ))  # fmt: skip
    generator, _, dtype = page_models_as_keras(page, run_id, run)
    expected = np.asarray(generator.predict(z, verbose=0)).reshape(POINTS, -1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    float32 = np.asarray(run.generator.predict(z, verbose=0)).reshape(POINTS, -1)
    record_property(f"max |page - float32 generator| ({dtype} weights)", float(np.abs(got - float32).max()))


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_page_encoder_equals_the_keras_encoder(explorer_page, exported, preset, mnist):
    page, _, _ = explorer_page
    run_id = PRESETS.index(preset)
    run = exported[2][run_id]
    x = mnist.x_test[:IMAGES].astype(np.float32) / 255
    got = page.evaluate(
        "async ([id, x]) => { const { models } = await vaelabExplorer.loadRun(id);"
        " return x.map((im) => models.encoder.predict(im).map((a) => Array.from(a))); }",
        [str(run_id), x.reshape(IMAGES, -1).tolist()],
    )
    _, encoder, _ = page_models_as_keras(page, run_id, run)
    z_mean, z_log_var = encoder.predict(x[..., None], verbose=0)
    np.testing.assert_allclose(np.array([g[0] for g in got]), z_mean, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.array([g[1] for g in got]), z_log_var, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_exported_explorer_works_offline(explorer_page, artifacts):
    page, requests, errors = explorer_page
    box = page.locator("#map").bounding_box()

    def hover(fx: float, fy: float) -> str:
        before = page.locator("#decoded").get_attribute("data-z")
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_function("b => document.getElementById('decoded').dataset.z !== b", arg=before)
        return page.evaluate("document.getElementById('decoded').toDataURL()")

    assert hover(0.3, 0.3) != hover(0.7, 0.65), "moving over the map did not change the decoded image"
    page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.5 * box["height"])
    page.wait_for_function("document.querySelectorAll('#strip canvas').length === 10")
    for width in (1280, 1600):  # the ten steps on one line beside the pad, on a laptop's screen and a wider one
        page.set_viewport_size({"width": width, "height": 1100})
        assert strip_lines(page, "#strip canvas") == 1, width
    page.set_viewport_size({"width": 1280, "height": 1100})

    draw_a_one(page)
    draw_a_one(page)  # a second stroke reads the pad again (Chromium warns where its context is not made for that)
    assert page.evaluate("vaelabExplorer.drawn") is not None
    page.screenshot(path=str(artifacts / "explorer-export.png"), full_page=True)

    page.select_option("#run", str(len(PRESETS)))  # the latent_dim 3 run: one slider per dimension
    page.wait_for_function("document.querySelectorAll('#sliders input').length === 3")
    before = page.locator("#decoded").get_attribute("data-z")
    page.locator("#sliders input").nth(2).fill("1.5")
    assert page.locator("#decoded").get_attribute("data-z") != before
    assert not errors, errors
    assert not requests, f"the page tried to fetch: {requests}"


@pytest.mark.slow
def test_exported_explorer_of_unlabelled_data(tmp_path, mnist, browser):
    """Data without classes: one colour for every point, no class table, and decoding as usual."""
    from vaelab.config import make_config
    from vaelab.data import load_dataset
    from vaelab.explore import load_data
    from vaelab.explore.export import export
    from vaelab.training.loop import train

    np.savez(tmp_path / "plain.npz", x_train=mnist.x_train[:500], x_test=mnist.x_test[:200])
    data = load_dataset(tmp_path / "plain.npz")
    run = train(
        make_config("conv", epochs=1, dataset=str(tmp_path / "plain.npz")), tmp_path / "run", data=data, verbose=0
    )
    path, _ = export([run], load_data([run]), tmp_path / "site")
    page, requests, errors = offline_page(browser, path.as_uri(), viewport={"width": 1280, "height": 1100})
    page.wait_for_selector("body[data-ready=true]", timeout=60000)
    assert page.locator("#table-card").is_hidden() and page.locator("#legend li").count() == 0
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.4 * box["height"])
    page.wait_for_function("document.getElementById('decoded').dataset.z !== '[0,0]'")
    assert page.locator("#decoded-title").text_content() == "Decoded image"
    page.close()
    assert not errors, errors
    assert not requests, f"the page tried to fetch: {requests}"


# --- the exported explorer of a colour convnet and of a grey convnet at an odd size ---------------------------


@pytest.fixture(scope="module")
def exported_shapes(colour_run, tmp_path_factory):
    """The page of two convnet runs (Python API: data made in the test have no name to load): the colour run,
    and one on 18x22 grey images of the same shapes, whose decoder crops its 20x24 output."""
    from tests.conftest import shapes_dataset
    from vaelab.config import make_config
    from vaelab.explore.export import export
    from vaelab.training.loop import train

    base = tmp_path_factory.mktemp("export-shapes")
    colour, colour_data = colour_run
    grey_data = shapes_dataset("grey-shapes", shape=(18, 22, 1))
    config = make_config("convnet", dataset="grey-shapes", epochs=1, latent_dim=2, filters=(8, 16))
    grey = train(config, base / "grey", data=grey_data, verbose=0)
    sites = {}
    for name, run, data in (("colour", colour, colour_data), ("grey", grey, grey_data)):
        sites[name] = (*export([run], data, base / name), run, data)
    return sites


@pytest.fixture(scope="module")
def shapes_pages(exported_shapes, browser):
    pages = {}
    for name, (path, _, _, _) in exported_shapes.items():
        page, requests, errors = offline_page(browser, path.as_uri(), viewport={"width": 1280, "height": 1100})
        page.wait_for_selector("body[data-ready=true]", timeout=60000)
        pages[name] = (page, requests, errors)
    yield pages
    for page, _, _ in pages.values():
        page.close()


def test_colour_convnet_export_keeps_its_generator_within_the_budget(exported_shapes):
    """5 MB of float32 weights: the page embeds the generator alone, in float16, and stays under 2 MB."""
    (colour,) = exported_shapes["colour"][1]
    assert (colour.dtype, colour.encoder) == ("float16", False) and colour.bytes <= RUN_BUDGET_BYTES
    (grey,) = exported_shapes["grey"][1]
    assert (grey.dtype, grey.encoder) == ("float32", True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["colour", "grey"])
def test_exported_convnet_decoder_equals_the_keras_generator(shapes_pages, exported_shapes, name):
    page, _, _ = shapes_pages[name]
    run = exported_shapes[name][2]
    z = np.random.default_rng(7).normal(scale=1.5, size=(30, 2)).astype(np.float32)
    got = np.array(page.evaluate(
        "z => z.map((p) => Array.from(vaelabExplorer.models.generator.predict(p)[0]))", z.tolist()
    ))  # fmt: skip
    generator, encoder, _ = page_models_as_keras(page, 0, run)
    shown = likelihoods.image(run.config.model.pixel_likelihood, generator.predict(z, verbose=0))  # as Run.decode
    np.testing.assert_allclose(got, shown.reshape(30, -1), rtol=0, atol=1e-4)
    if name == "grey":  # the colour page leaves its encoder out
        x = exported_shapes[name][3].x_test[:10].astype(np.float32) / 255
        got = page.evaluate(
            "x => x.map((im) => Array.from(vaelabExplorer.models.encoder.predict(im)[0]))", x.reshape(10, -1).tolist()
        )
        np.testing.assert_allclose(got, encoder.predict(x[..., None], verbose=0)[0], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_exported_colour_explorer_shows_colour_and_no_pad(shapes_pages, exported_shapes, artifacts):
    page, requests, errors = shapes_pages["colour"]
    assert page.locator("#pad").is_hidden() and "leaves the encoder out" in page.locator("#pad-note").text_content()
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.4 * box["height"])
    page.wait_for_function("document.getElementById('decoded').dataset.z !== '[0,0]'")
    assert page.locator("#decoded").evaluate("c => [c.width, c.height]") == [32, 32]
    thumbnail = canvas_pixels(page, "#table tbody canvas")
    data = exported_shapes["colour"][3]
    first_row = page.evaluate("vaelabExplorer.map.table[0].index")
    assert thumbnail.shape == (32, 32, 4)
    np.testing.assert_array_equal(thumbnail[..., :3], data.x_test[first_row])
    shown = page.locator("#table tbody canvas").evaluate_all("cs => cs.map((c) => [c.clientWidth, c.clientHeight])")
    assert shown == [[32, 32]] * 4  # each at the image's own size, none squeezed
    table = page.evaluate("vaelabExplorer.map.table.map((row) => String(row.label))")
    assert marker_labels(page, "vaelabExplorer.live") == table == ["0", "1", "2", "3"]  # as the figures number them
    page.locator("#table tbody tr").nth(0).click()
    page.locator("#table tbody tr").nth(2).click()
    page.wait_for_function("document.querySelectorAll('#strip canvas').length === 10")
    assert strip_lines(page, "#strip canvas") == 1  # beside the note that the pad is left out
    page.screenshot(path=str(artifacts / "explorer-export-colour.png"), full_page=True)
    assert not errors, errors
    assert not requests, f"the page tried to fetch: {requests}"


@pytest.mark.slow
def test_exported_grey_explorer_of_another_size_encodes_drawings(shapes_pages):
    page, requests, errors = shapes_pages["grey"]
    assert page.locator("#pad-note").is_hidden()
    draw_a_one(page)
    drawing = np.array(page.evaluate("vaelabExplorer.lastDrawing"))
    assert drawing.shape == (18 * 22,) and drawing.max() == 1 and drawing.mean() < 0.3  # ink on a blank frame
    assert page.locator("#reconstruction").evaluate("c => [c.width, c.height]") == [22, 18]
    assert not errors, errors
    assert not requests, f"the page tried to fetch: {requests}"
