"""A process of vaelab's own (the command line, a sweep's worker) imports Keras without its optional extras.

At start-up Keras imports scikit-learn for its scikit-learn wrappers (`keras.wrappers`, and scikit-learn imports
SciPy's statistics: about 0.9 s of CPU on a 2-core machine) and Matplotlib's pyplot for its image-gallery plot
(`keras.visualization`, about 0.7 s), extras that vaelab never uses. Keras imports both inside `try`, and does
without them when they are missing. In a process that vaelab owns, those two Keras modules find neither library;
every other module, vaelab's own figures and its GaussianMixture included, imports them as usual. A library import
of vaelab (`import vaelab` in a notebook) changes nothing.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

#: Keras' modules (by prefix) and the optional library each of them goes without in vaelab's own processes.
KERAS_EXTRAS_SKIPPED = {"keras.src.wrappers": "sklearn", "keras.src.visualization": "matplotlib"}
_IMPORT_MACHINERY = ("importlib._bootstrap", "importlib._bootstrap_external", __name__)


class _NoExtrasForKeras(MetaPathFinder):
    """Refuses the imports of `KERAS_EXTRAS_SKIPPED` made by their Keras modules; passes every other import on."""

    def find_spec(self, fullname, path=None, target=None):
        package = fullname.partition(".")[0]
        if package not in KERAS_EXTRAS_SKIPPED.values():
            return None
        importer = _importer()
        for keras_module, skipped in KERAS_EXTRAS_SKIPPED.items():
            if package == skipped and importer.startswith(keras_module):
                raise ModuleNotFoundError(f"No module named {fullname!r} (vaelab skips {keras_module}'s extras)")
        return None


def _importer() -> str:
    """The module whose `import` statement is being run: the first frame outside the import machinery."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in _IMPORT_MACHINERY:
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


def skip_keras_extras() -> None:
    """For a process that vaelab owns, before Keras is imported: see the module's docstring. Idempotent."""
    if not any(isinstance(finder, _NoExtrasForKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NoExtrasForKeras())
