"""Shared fixtures: real MNIST (fetched once into the user's cache), small trained runs."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import numpy as np
import pytest


def _trampolines_keep_their_signatures() -> None:
    """Under mutmut (docs/mutation-testing.md), gives the trampolines of mutated constructors their signature.

    mutmut 3 replaces a mutated function by a `(*args, **kwargs)` trampoline. Keras reads a layer's
    constructor arguments with `inspect.getfullargspec`, which ignores `__wrapped__` but honours
    `__signature__`; without it, building any vaelab layer whose `__init__` has mutants fails. Only
    constructors get it: Keras copies a wrapped method's attributes onto its own wrappers of `build`,
    where a signature that still names `self` would be wrong.
    """
    import inspect

    from mutmut.mutation import trampoline

    wrap = trampoline.wrap_in_trampoline

    def wrap_keeping_the_signature(*args, **kwargs):
        decorate = wrap(*args, **kwargs)

        def decorator(function):
            wrapper = decorate(function)
            if function.__name__ == "__init__":
                wrapper.__signature__ = inspect.signature(function)
            return wrapper

        return decorator

    trampoline.wrap_in_trampoline = wrap_keeping_the_signature


if "MUTANT_UNDER_TEST" in os.environ:  # set by mutmut in every process it runs tests in
    _trampolines_keep_their_signatures()
    # Thousands of processes compile the same XLA programs: share them on disk (about halves a mutant's time).
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path("jax-cache").resolve()))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    # The tests start vaelab in hundreds of processes that compile the same XLA programs (a conv training
    # spends most of a short run compiling): they share them through JAX's persistent compilation cache,
    # fresh for each test session. Tests of what happens during a compilation turn it off (NO_JAX_CACHE).
    # Every program is kept, however quick its compilation: a report's warm second run took 17 s of CPU against 22 s
    # with only those over 0.5 s kept (2026-12-06, Zen 3). A size limit turns on JAX's file lock, so that no process
    # reads an entry while another writes it (that would print a warning into a command's one-line stderr).
    _jax_cache = tempfile.mkdtemp(prefix="vaelab-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)


def _no_cache_eviction_in_this_process() -> None:
    """With a size limit, JAX's cache scans every entry before each write (a stat and a read of each entry's
    access-time file) to see whether to evict. The test processes write thousands of programs into a cache that
    never nears its 8 GiB: the scans took 141 s of the suite's CPU (a profile of the whole suite, 2026-12-07, Zen 3).
    Here nothing is evicted; the file lock, which is what the limit is for, stays. The commands the tests start
    write a few programs each, and keep JAX's own."""
    from jax._src import lru_cache

    if hasattr(lru_cache.LRUCache, "_evict_if_needed"):
        lru_cache.LRUCache._evict_if_needed = lambda self, *, additional_size=0: None


_QUICK_TO_COMPILE = {
    # The tests' trainings are tiny: XLA's compilation, not their steps, is most of their time, and LLVM's first
    # optimisation level compiles in about half the time of the default. A conv training of 500 images took 9.9 s
    # of CPU against 19 s (a weight initialiser's random numbers alone compiled for 3.3 s), while Burda et al.'s
    # dense step ran about as fast (2026-12-06, Zen 3; docs/performance.md "The test suite"). Level 0 compiles
    # faster still but runs that dense step 5 times slower.
    "xla_backend_optimization_level": "1",
    # XLA's older loop emitters compile these programs faster than its MLIR fusion emitters: seven of the heaviest
    # test files took 250 s of CPU against 286 s, and level 0 on top of it saved nothing more (2026-12-06, Zen 3).
    "xla_cpu_use_fusion_emitters": "false",
}
for _flag, _value in _QUICK_TO_COMPILE.items():  # the commands the tests start inherit them; a flag set outside wins
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{_flag}={_value}".strip()

# For a subprocess's environment: compile from scratch, as a first run does.
NO_JAX_CACHE = {"JAX_ENABLE_COMPILATION_CACHE": "false"}

import vaelab  # noqa: E402  (chooses the Keras backend before any test imports Keras)
from vaelab.data import TEST_LABEL_COUNTS, TRAIN_LABEL_COUNTS  # noqa: E402

_no_cache_eviction_in_this_process()


def _vaelab_compiled_to_bytecode() -> None:
    """Where PYTHONDONTWRITEBYTECODE is set (as on the machines this suite is timed on), an editable install's
    modules are compiled from source in every process that imports them: about 0.25 s of CPU in each of the
    hundred-odd commands the tests start (2026-12-07, Zen 3). Compiled once here, they are read as the installed
    libraries' are; the files go where Python would put them (`__pycache__`, ignored by git)."""
    import compileall

    compileall.compile_dir(Path(vaelab.__file__).parent, quiet=2)


_vaelab_compiled_to_bytecode()

T = TypeVar("T")
TRAIN_SUBSET = 2000
TEST_SUBSET = 500


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end tests (`slow`) first, each group in file order: with each test sent to the first test process
    free (pyproject.toml), the quick ones are left to even out the end. In file order, one test process's tests took
    582 s and the other's 530 s; in this order, 521 s each (2026-12-07, Zen 3)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, as vaelab's users get it (fetched through the first source that works)."""
    from vaelab.data import fetch_mnist

    return fetch_mnist()


def synthetic_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """MNIST-shaped random arrays with MNIST's label counts: for data-loader tests only."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
        "y_train": rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), TRAIN_LABEL_COUNTS)),
        "x_test": rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
        "y_test": rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), TEST_LABEL_COUNTS)),
    }


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs the installed `vaelab` entry point as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "vaelab", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


# The first line of a test's Python script that trains as vaelab's commands do: Keras without the extras that vaelab's
# processes skip (vaelab._lean_imports; about a second of CPU at each start).
LEAN_KERAS = "from vaelab._lean_imports import skip_keras_extras; skip_keras_extras()\n"


def made_once(tmp_path_factory, name: str, make: Callable[[Path], T], load: Callable[[Path], T]) -> T:
    """`make(folder)`, made once per test session in `folder` (named `name`) and loaded from it (`load(folder)`) by
    every other pytest-xdist worker that asks: the workers of one session share the parent of their temporary
    folders, and a file lock lets one of them make it while the others wait (pytest-xdist's recipe). Under
    `-n 0`, in this process's temporary folder."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    folder, done = root / "made-once" / name, root / "made-once" / f"{name}.done"
    folder.parent.mkdir(exist_ok=True)
    with FileLock(root / "made-once" / f"{name}.lock"):
        if done.exists():
            return load(folder)
        shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed half-way left
        made = make(folder)
        done.touch()
        return made


@pytest.fixture(name="vaelab")
def in_process_vaelab(capsys):
    """`vaelab ARGS...` run in this process (`vaelab.cli.main`, as the console script runs it): its exit status,
    stdout and stderr. For tests of what a command does, not of the process (its signals, its start-up): they do
    not pay for starting JAX and Keras again at every command."""

    from vaelab import cli

    def run(*argv) -> SimpleNamespace:
        capsys.readouterr()
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as usage:  # argparse's one line about a bad argument
            code = usage.code
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, mnist):
    """An mlp run trained for 2 epochs on a subset of real MNIST."""
    from vaelab.config import make_config
    from vaelab.training.loop import train

    config = make_config("mlp", epochs=2, train_subset=TRAIN_SUBSET, test_subset=TEST_SUBSET)
    return train(config, tmp_path_factory.mktemp("runs") / "mlp", verbose=0)


PRESETS = ("mlp", "mlp-fixed-var", "conv", "conv-fixed-var")
REPORT_EPOCHS = 1


@pytest.fixture(scope="session")
def preset_runs(tmp_path_factory, mnist) -> dict:
    """Every preset trained for 1 epoch on 2000 real MNIST images, in one runs directory.

    Their configurations are those of `vaelab report --epochs 1 --train-subset 2000`, which reuses them. Trained
    once per session (`made_once`).
    """
    from vaelab.config import make_config
    from vaelab.run import load_run, run_dir_name
    from vaelab.training.loop import train

    configs = {preset: make_config(preset, epochs=REPORT_EPOCHS, train_subset=TRAIN_SUBSET) for preset in PRESETS}

    def make(runs_dir: Path) -> dict:
        return {preset: train(c, runs_dir / run_dir_name(c), verbose=0) for preset, c in configs.items()}

    def load(runs_dir: Path) -> dict:
        return {preset: load_run(runs_dir / run_dir_name(c)) for preset, c in configs.items()}

    return made_once(tmp_path_factory, "preset-runs", make, load)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """A real headless Chromium driven by Playwright (Debian's chromium; Playwright's download is not used).

    Skipped where Chromium or Playwright is missing, except in CI, where that is a failure.
    """
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"{CHROMIUM} is not installed (Debian: apt-get install chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            missing = "playwright is not installed (pip install -e '.[test]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def console_problems(page) -> list[str]:
    """The page's console errors and warnings (CSP violations; Chromium's advice, such as its "Multiple readback
    operations using getImageData") and uncaught exceptions, recorded as they come: a test asserts there are none."""
    problems = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def offline_page(browser, url: str, **options):
    """A new page that may load `url` and nothing else: every other request fails, and is recorded.

    Returns (page, requests, errors): the URLs it tried besides `url`, and its console errors and warnings and
    uncaught exceptions (`console_problems`).
    """
    page = browser.new_page(**options)
    requests, errors = [], console_problems(page)
    page.on("request", lambda r: requests.append(r.url) if r.url != url else None)
    page.on("websocket", lambda w: requests.append(w.url))
    page.route("**/*", lambda r: r.continue_() if r.request.url == url else r.abort())
    page.goto(url)
    return page, requests, errors


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave screenshots for people to look at (`artifacts/`, or $VAELAB_ARTIFACTS)."""
    path = Path(os.environ.get("VAELAB_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def draw_a_one(page) -> None:
    """Draws a vertical stroke (a 1) on the explorer page's pad; waits until the page has placed it on the map."""
    pad = page.locator("#pad").bounding_box()
    page.mouse.move(pad["x"] + 100, pad["y"] + 30)
    page.mouse.down()
    for y in range(30, 170, 10):
        page.mouse.move(pad["x"] + 100, pad["y"] + y)
    page.mouse.up()
    page.wait_for_function("document.getElementById('drawn-coords').textContent !== '–'")


def canvas_pixels(page, selector: str) -> np.ndarray:
    """The first canvas `selector` finds, as painted: (height, width, 4) RGBA bytes. Read from a copy, so that the
    test's readings do not make Chromium warn of repeated readbacks of a canvas the page itself only paints."""
    width, height, rgba = page.locator(selector).first.evaluate(
        """(c) => { const copy = document.createElement("canvas"); [copy.width, copy.height] = [c.width, c.height];
           const ctx = copy.getContext("2d"); ctx.drawImage(c, 0, 0);
           return [c.width, c.height, Array.from(ctx.getImageData(0, 0, c.width, c.height).data)]; }"""
    )
    return np.array(rgba, np.uint8).reshape(height, width, 4)


def strip_lines(page, selector: str) -> int:
    """On how many lines the page shows the interpolation strip's images (`selector`)."""
    return page.evaluate(
        "s => new Set(Array.from(document.querySelectorAll(s), (c) => Math.round(c.getBoundingClientRect().top))).size",
        selector,
    )


def marker_labels(page, live: str) -> list[str]:
    """The texts the live map `live` (a JavaScript expression) writes on its table's markers as it draws them: its
    canvas keeps pixels, so the page's fillText is watched while the map draws again (its points, axis names
    included, stay drawn in a layer of their own)."""
    return page.evaluate(
        f"""() => {{ const seen = [], proto = CanvasRenderingContext2D.prototype, fillText = proto.fillText;
            proto.fillText = function (text, ...rest) {{
              seen.push(String(text));
              return fillText.call(this, text, ...rest);
            }};
            try {{ {live}.draw(); }} finally {{ proto.fillText = fillText; }}
            return seen; }}"""
    )


SHAPE_CLASSES = ("red disc", "green square", "blue ring", "yellow bar")


def shapes_arrays(n_train: int, n_test: int, shape: tuple[int, ...] = (32, 32, 3), seed: int = 0) -> dict:
    """Real-looking small images made here: one coloured shape per image (its class) at a random place and
    size on a mottled background, uint8 (n, H, W, C), or (n, H, W) for a one-channel `shape`."""
    rng = np.random.default_rng(seed)
    height, width, channels = shape
    colours = np.array([[220, 40, 40], [40, 180, 60], [50, 80, 220], [230, 200, 30]], np.float32)
    yy, xx = np.mgrid[:height, :width]

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, len(SHAPE_CLASSES), n).astype(np.uint8)
        x = np.empty((n, height, width, 3), np.float32)
        for k, label in enumerate(labels):
            background = rng.uniform(60, 200, 3) + rng.normal(0, 12, (height, width, 1))
            cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
            r = rng.uniform(0.15, 0.3) * min(height, width)
            dist = np.hypot(yy - cy, xx - cx)
            mask = [dist < r, np.maximum(abs(yy - cy), abs(xx - cx)) < r, abs(dist - r) < r / 3,
                    (abs(yy - cy) < r / 3) & (abs(xx - cx) < 1.5 * r)][label]  # fmt: skip
            x[k] = np.where(mask[..., None], colours[label], background)
        x = x if channels == 3 else x.mean(axis=-1)
        return np.clip(x, 0, 255).astype(np.uint8), labels

    x_train, y_train = images(n_train)
    x_test, y_test = images(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def shapes_dataset(name: str, n_train: int = 300, n_test: int = 100, shape: tuple[int, ...] = (32, 32, 3)):
    """`shapes_arrays` as a vaelab Dataset named `name` (not loadable by name: pass it as `data=`)."""
    from vaelab.data.dataset import make_dataset

    arrays = shapes_arrays(n_train, n_test, shape)
    return make_dataset(arrays, name=name, source="made in the test", class_names=SHAPE_CLASSES)


@pytest.fixture(scope="session")
def colour_run(tmp_path_factory):
    """A convnet of 32, 64 and 128 filters (1.25 million weights: too many for the exported page in float16, so its
    export falls back to the generator alone) trained for 1 epoch on 300 32x32 colour images of shapes, and its
    dataset. Trained once per session (`made_once`)."""
    from vaelab.config import make_config
    from vaelab.run import load_run
    from vaelab.training.loop import train

    data = shapes_dataset("shapes")
    config = make_config("convnet", dataset="shapes", epochs=1, latent_dim=2, filters=(32, 64, 128))
    run = made_once(
        tmp_path_factory,
        "colour",
        lambda folder: train(config, folder / "convnet", data=data, verbose=0),
        lambda folder: load_run(folder / "convnet"),
    )
    return run, data
