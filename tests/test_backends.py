"""The models use keras.ops only, so every installed Keras backend trains and reloads them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys, numpy as np, keras
from vaelab.config import make_config
from vaelab.training.loop import train
from vaelab.run import load_run
from vaelab.data import load_mnist, scale_pixels
config = make_config(sys.argv[2], epochs=1, train_subset=300, test_subset=100)
run = train(config, sys.argv[1], verbose=0)
x = scale_pixels(load_mnist()[1][0][:8])
before, after = run.encoder.predict(x, verbose=0)[0], load_run(sys.argv[1]).encoder.predict(x, verbose=0)[0]
same = bool(np.array_equal(before, after))
print(json.dumps({"backend": keras.backend.backend(), "loss": run.history[0]["loss"], "same": same}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow", "torch"])
@pytest.mark.parametrize("preset", ["mlp", "conv"])
def test_backend_trains_and_reloads(backend, preset, tmp_path, mnist):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"the {backend} backend is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run"), preset],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    assert 0 < result["loss"] < 600 and result["same"]


CHOSEN = "import vaelab, keras, vaelab.training._malloc as m; print(keras.backend.backend(), m._done)"


@pytest.mark.parametrize(
    ("keras_json", "env_backend", "expected"),
    [
        (None, None, "jax"),  # nothing chosen: vaelab's default
        ({"backend": "tensorflow"}, None, "jax"),  # what Keras writes itself on first import: not a choice
        ({"backend": "numpy"}, None, "numpy"),  # the user's keras.json
        ({"backend": "jax"}, "numpy", "numpy"),  # KERAS_BACKEND wins
    ],
)
def test_import_vaelab_respects_the_users_backend(tmp_path, keras_json, env_backend, expected):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)
    if keras_json is not None:
        (tmp_path / "keras.json").write_text(json.dumps(keras_json))
    if env_backend:
        env["KERAS_BACKEND"] = env_backend
    done = subprocess.run([sys.executable, "-c", CHOSEN], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    backend, tuned = done.stdout.split()
    assert backend == expected
    assert tuned == "False"  # importing vaelab changes nothing process-wide (malloc is the CLI's business)
