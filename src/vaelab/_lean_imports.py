"""A process of vaelab's own (the command line, a sweep's worker) imports Keras without scikit-learn.

Keras imports scikit-learn at start-up for its scikit-learn wrappers (`keras.wrappers`), and scikit-learn
imports SciPy's statistics: about 0.9 s of every command's 4 s start-up on a 2-core CPU, for wrappers that vaelab
never uses. In a process that vaelab owns, those wrappers find no scikit-learn (they then behave as Keras does
without it); everything else, vaelab's own use of scikit-learn included, imports it as usual. A library import of
vaelab (`import vaelab` in a notebook) changes nothing.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

_KERAS_WRAPPERS = "keras.src.wrappers"
_IMPORT_MACHINERY = ("importlib._bootstrap", "importlib._bootstrap_external", __name__)


class _NoScikitLearnForKerasWrappers(MetaPathFinder):
    """Refuses `import sklearn` made by a module of Keras' scikit-learn wrappers; passes every other import on."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] == "sklearn" and _importer().startswith(_KERAS_WRAPPERS):
            raise ModuleNotFoundError(f"No module named {fullname!r} (vaelab skips Keras' scikit-learn wrappers)")
        return None


def _importer() -> str:
    """The module whose `import` statement is being run: the first frame outside the import machinery."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in _IMPORT_MACHINERY:
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


def skip_keras_sklearn_wrappers() -> None:
    """For a process that vaelab owns, before Keras is imported: see the module's docstring. Idempotent."""
    if not any(isinstance(finder, _NoScikitLearnForKerasWrappers) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NoScikitLearnForKerasWrappers())
