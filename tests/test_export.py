""".keras files: a run's encoder and generator open in plain Keras, without vaelab; vaelab's own layers round-trip."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from vaelab.config import make_config
from vaelab.data import scale_pixels
from vaelab.models.layers import ConvMaxPool2D, UpSamplingConv2D
from vaelab.run import KERAS_FILES, load_run
from vaelab.training.loop import train

PRESETS = ["mlp", "mlp-fixed-var", "conv", "conv-fixed-var"]

# Runs in a fresh Python where `import vaelab` fails, as on a machine without it.
PLAIN_KERAS = """
import sys
sys.modules["vaelab"] = None  # vaelab is not importable here
import json, numpy as np, keras
run, x, z = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
encoder = keras.saving.load_model(run + "/encoder.keras")
generator = keras.saving.load_model(run + "/generator.keras")
z_mean, z_log_var = encoder.predict(x, verbose=0)
np.savez(sys.argv[4], z_mean=z_mean, z_log_var=z_log_var, x=generator.predict(z, verbose=0))
layers = sorted({type(layer).__module__.split(".")[0] for m in (encoder, generator) for layer in m.layers})
print(json.dumps(layers))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist):
    base = tmp_path_factory.mktemp("export")
    return {
        preset: train(make_config(preset, epochs=1, train_subset=1000, test_subset=200), base / preset, verbose=0)
        for preset in PRESETS
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_a_completed_run_opens_in_plain_keras_without_vaelab(runs, preset, mnist, tmp_path):
    run = runs[preset]
    assert all((run.path / name).exists() for name in KERAS_FILES)
    x = scale_pixels(mnist.x_test[:50])
    z = np.random.default_rng(0).normal(size=(50, run.config.model.latent_dim)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "z.npy", z)
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS, str(run.path), str(tmp_path / "x.npy"), str(tmp_path / "z.npy"),
         str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["keras"]  # stock layers only
    out = np.load(tmp_path / "out.npz")
    z_mean, z_log_var = run.encoder.predict(x, verbose=0)
    np.testing.assert_allclose(out["z_mean"], z_mean, atol=1e-6)
    np.testing.assert_allclose(out["z_log_var"], z_log_var, atol=1e-6)
    np.testing.assert_allclose(out["x"], run.generator.predict(z, verbose=0), atol=1e-6)


def test_the_vae_saves_and_loads_where_vaelab_is_installed(runs, mnist, tmp_path):
    run = runs["conv"]
    run.vae.save(tmp_path / "vae.keras")
    loaded = keras.saving.load_model(tmp_path / "vae.keras")
    x = scale_pixels(mnist.x_test[:20])
    before, after = run.vae.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for key in ("z_mean", "z_log_var"):
        np.testing.assert_allclose(after[key], before[key], atol=1e-6)


# A fresh Python: importing vaelab.models registers vaelab's layers with Keras.
VAELAB_KERAS = """
import sys
import numpy as np, keras
import vaelab.models
x = np.load(sys.argv[2])
np.save(sys.argv[3], keras.saving.load_model(sys.argv[1]).predict(x, verbose=0)["z_mean"])
"""


def test_a_loaded_runs_vae_saves_and_opens_in_a_fresh_python(runs, mnist, tmp_path):
    """A loaded run's layers are built without random initial weights; what it saves names the real initializers."""
    run = load_run(runs["mlp"].path)
    run.vae.save(tmp_path / "vae.keras")
    x = scale_pixels(mnist.x_test[:20])
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run(
        [sys.executable, "-c", VAELAB_KERAS, str(tmp_path / "vae.keras"), str(tmp_path / "x.npy"),
         str(tmp_path / "z.npy")], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), run.vae.predict(x, verbose=0)["z_mean"], atol=1e-6)


def test_fused_layers_round_trip_their_config():
    for layer in (ConvMaxPool2D(8, name="a"), UpSamplingConv2D(4, "valid", activation="sigmoid", name="b")):
        again = type(layer).from_config(layer.get_config())
        assert again.get_config() == layer.get_config()


def test_export_command_writes_the_files_for_an_older_run(runs, tmp_path, vaelab):
    result = vaelab("export", str(runs["mlp"].path), "--out", str(tmp_path / "exported"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == sorted(KERAS_FILES)
    missing = vaelab("export", str(tmp_path / "no-run"))
    assert missing.returncode == 2 and "no run at" in missing.stderr
