"""vaelab: train, explore and explain variational autoencoders on MNIST, with Keras 3."""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

# JAX is the default backend (the fastest for these networks on a CPU), unless the user chose one.
if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "jax")

_LAZY = {
    "load_mnist": "vaelab.data",
    "fetch_mnist": "vaelab.data",
    "make_config": "vaelab.config",
    "RunConfig": "vaelab.config",
    "ModelConfig": "vaelab.config",
    "TrainConfig": "vaelab.config",
    "PRESETS": "vaelab.config",
    "build_models": "vaelab.model",
    "gaussian_kl": "vaelab.kl",
    "train": "vaelab.training",
    "load_run": "vaelab.run",
    "Run": "vaelab.run",
    "VaelabError": "vaelab.errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """Imports the public API on first use, so `import vaelab` stays fast and Keras loads only when needed."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
