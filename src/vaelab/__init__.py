"""vaelab: train, explore and explain variational autoencoders on MNIST, with Keras 3."""

from __future__ import annotations

import json
import os
import sys

__version__ = "0.1.0"


def _user_chose_a_backend() -> bool:
    """Whether the user picked a Keras backend: KERAS_BACKEND, or keras.json naming one other than Keras' default.

    Keras writes keras.json itself on first import, with "tensorflow"; that file cannot be told from a
    user's choice of TensorFlow, so only another backend named there counts as a choice.
    """
    if os.environ.get("KERAS_BACKEND"):
        return True
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow") != "tensorflow"
    except (OSError, ValueError, AttributeError):
        return False


# JAX is the default backend (the fastest for these networks on a CPU) where the user chose none, and
# Keras is not imported yet (after that its backend is fixed).
if "keras" not in sys.modules and not _user_chose_a_backend():
    os.environ["KERAS_BACKEND"] = "jax"

_LAZY = {
    "load_mnist": "vaelab.data",
    "fetch_mnist": "vaelab.data",
    "load_dataset": "vaelab.data",
    "Dataset": "vaelab.data",
    "resume": "vaelab.training.loop",
    "tune_malloc": "vaelab.training._malloc",
    "make_config": "vaelab.config",
    "RunConfig": "vaelab.config",
    "ModelConfig": "vaelab.config",
    "TrainConfig": "vaelab.config",
    "PRESETS": "vaelab.config",
    "build_models": "vaelab.models",
    "gaussian_kl": "vaelab.models.kl",
    "train": "vaelab.training.loop",
    "load_run": "vaelab.run",
    "Run": "vaelab.run",
    "sampler": "vaelab.analysis.samplers",
    "VaelabError": "vaelab.errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """Imports the public API on first use, so `import vaelab` stays fast and Keras loads only when needed."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
