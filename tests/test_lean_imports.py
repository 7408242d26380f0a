"""vaelab's own processes import Keras without its optional extras (vaelab._lean_imports)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vaelab import _lean_imports


def import_from(module: str, name: str):
    """`finder.find_spec(name)` as the import machinery calls it for an `import` in `module`."""
    finder = _lean_imports._NoExtrasForKeras()
    return eval("finder.find_spec(name)", {"__name__": module, "finder": finder, "name": name})


@pytest.mark.parametrize(
    "module, name",
    [
        ("keras.src.wrappers.fixes", "sklearn"),
        ("keras.src.wrappers.sklearn_wrapper", "sklearn.base"),
        ("keras.src.visualization.plot_image_gallery", "matplotlib"),
        ("keras.src.visualization.plot_bounding_box_gallery", "matplotlib.pyplot"),
    ],
)
def test_kerass_extras_find_nothing(module, name):
    with pytest.raises(ModuleNotFoundError, match=r"vaelab skips keras\.src\.[a-z]+'s extras"):
        import_from(module, name)


@pytest.mark.parametrize(
    "module", ["vaelab.analysis.plots", "vaelab.analysis.samplers", "keras.src.backend", "__main__"]
)
def test_every_other_import_is_passed_on(module):
    assert import_from(module, "sklearn.mixture") is None  # to the next finder: imported as usual
    assert import_from(module, "matplotlib.figure") is None
    assert import_from("keras.src.wrappers.fixes", "matplotlib") is None  # each Keras module skips its own only
    assert import_from("keras.src.visualization.plot_image_gallery", "scipy") is None


def test_keras_imports_without_them_and_vaelab_still_draws():
    """In a fresh process, as `vaelab` starts: Keras leaves both out; what a sweep's worker imports to train and
    evaluate its point does not draw, so it leaves Matplotlib out too; vaelab's figures import it."""
    script = (
        "import sys; from vaelab import _lean_imports; _lean_imports.skip_keras_extras(); import keras; "
        "print(sorted({'sklearn', 'matplotlib'} & set(sys.modules))); "
        "import vaelab.sweep, vaelab.experiments.job, vaelab.analysis.evaluate, vaelab.analysis.disentanglement; "
        "print('matplotlib' in sys.modules); "
        "from vaelab.analysis import plots; print('matplotlib.figure' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:3] == ["[]", "False", "True"]


def test_the_command_line_installs_it_once(monkeypatch):
    from vaelab import _entry, _interrupt, cli

    monkeypatch.setattr(_interrupt, "leave_on_interrupt", lambda: None)  # not in the test's own process
    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    before = list(sys.meta_path)
    assert _entry.main() == 0 and _entry.main() == 0
    added = [f for f in sys.meta_path if f not in before]
    assert len(added) == 1 and isinstance(added[0], _lean_imports._NoExtrasForKeras)
    assert sys.meta_path[0] is added[0]
