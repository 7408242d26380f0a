"""vaelab's own processes import Keras without its scikit-learn wrappers (vaelab._lean_imports)."""

from __future__ import annotations

import sys

import pytest

from vaelab import _lean_imports


def import_from(module: str, name: str):
    """`finder.find_spec(name)` as the import machinery calls it for an `import` in `module`."""
    finder = _lean_imports._NoScikitLearnForKerasWrappers()
    return eval("finder.find_spec(name)", {"__name__": module, "finder": finder, "name": name})


@pytest.mark.parametrize("module", ["keras.src.wrappers.fixes", "keras.src.wrappers.sklearn_wrapper"])
@pytest.mark.parametrize("name", ["sklearn", "sklearn.base"])
def test_keras_wrappers_find_no_scikit_learn(module, name):
    with pytest.raises(ModuleNotFoundError, match="vaelab skips Keras' scikit-learn wrappers"):
        import_from(module, name)


@pytest.mark.parametrize("module", ["vaelab.analysis.samplers", "keras.src.backend", "__main__"])
def test_every_other_import_is_passed_on(module):
    assert import_from(module, "sklearn.mixture") is None  # to the next finder: imported as usual
    assert import_from("keras.src.wrappers.fixes", "scipy") is None


def test_the_command_line_installs_it_once(monkeypatch):
    from vaelab import _entry, _interrupt, cli

    monkeypatch.setattr(_interrupt, "leave_on_interrupt", lambda: None)  # not in the test's own process
    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    before = list(sys.meta_path)
    assert _entry.main() == 0 and _entry.main() == 0
    added = [f for f in sys.meta_path if f not in before]
    assert len(added) == 1 and isinstance(added[0], _lean_imports._NoScikitLearnForKerasWrappers)
    assert sys.meta_path[0] is added[0]
