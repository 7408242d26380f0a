"""Building the kernels (cache key, missing or failing compiler) and training on them end to end."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import LEAN_KERAS, TEST_SUBSET, TRAIN_SUBSET
from vaelab import kernels
from vaelab.config import make_config
from vaelab.kernels import _build
from vaelab.run import load_run
from vaelab.training.loop import train

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the kernels are for the JAX backend")

SANITIZED_CHECK = Path(__file__).with_name("kernels_sanitized.cc")  # every kernel against naive loops, without XLA

# Builds the conv network and runs it once (building the kernels on first use), then prints the status.
USE = """
import json, numpy as np
from vaelab import kernels
from vaelab.config import PRESETS
from vaelab.models import build_models
models = build_models(PRESETS["conv"], seed=0)
codes = models.encoder.predict(np.zeros((4, 28, 28, 1), np.float32), verbose=0)
print(json.dumps({"in_use": kernels.status().in_use, "finite": bool(np.isfinite(codes[0]).all())}))
"""

# Trains conv for one epoch on a subset into argv[1], then prints whether the kernels ran and the loss.
TRAIN = """
import json, sys
from vaelab import kernels
from vaelab.config import make_config
from vaelab.training.loop import train
run = train(make_config("conv", epochs=1, train_subset=500, test_subset=100), sys.argv[1], verbose=0)
print(json.dumps({"in_use": kernels.status().in_use, "loss": run.history[0]["loss"]}))
"""


def python(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen:
    """`code` in a fresh Python, as vaelab's commands start (`LEAN_KERAS`), with the kernels switched on unless `env`
    says otherwise."""
    return subprocess.Popen(
        [sys.executable, "-c", LEAN_KERAS + code, *args],
        env={**os.environ, kernels.SWITCH: "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[dict, list[str]]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), [line for line in err.splitlines() if line.strip()]


@pytest.fixture
def compiler():
    """The C++ compiler (skipped without one, a failure in CI)."""
    try:
        return _build.find_compiler()
    except _build.BuildError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must exercise the compiled kernels: {err}")
        pytest.skip(str(err))


def test_without_a_working_compiler_or_switched_off_everything_runs_on_the_fallback(tmp_path, compiler):
    cases = {  # environment -> what the one line from vaelab says (None: nothing, the user chose it)
        "no compiler": ({"CXX": "/nonexistent"}, "/nonexistent"),
        "compile error": ({"CXX": "c++ -include /nonexistent.h"}, "compiling the kernels failed"),
        "switched off": ({kernels.SWITCH: "0"}, None),
    }
    procs = {
        name: python(USE, env={**env, "VAELAB_KERNEL_CACHE": str(tmp_path / name.replace(" ", "_"))})
        for name, (env, _) in cases.items()
    }  # run at once: each spends most of its time importing and tracing
    for name, proc in procs.items():
        result, stderr = finish(proc)
        assert result == {"in_use": False, "finite": True}, name
        said = [line for line in stderr if line.startswith("vaelab:")]
        reason = cases[name][1]
        if reason is None:
            assert not said, stderr
        else:
            assert len(said) == 1 and "not in use" in said[0] and reason in said[0], stderr


def test_cache_key_changes_with_the_sources_and_the_flags(tmp_path, monkeypatch, compiler):
    sources = tmp_path / "src"
    shutil.copytree(_build.SOURCE_DIR, sources, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(_build, "SOURCE_DIR", sources)
    key = _build.plan().key
    assert _build.plan().key == key  # the same inputs, the same key
    with open(sources / "conv_layers.h", "a") as f:
        f.write("\n// a change\n")
    changed = _build.plan().key
    assert changed != key
    monkeypatch.setenv("VAELAB_KERNELS_SANITIZE", "1")
    assert _build.plan().key not in (key, changed)


@pytest.mark.slow
def test_two_trainings_at_once_compile_the_kernels_once_and_finish(tmp_path, mnist, compiler):
    cache = tmp_path / "cache"  # empty: both processes need the library at about the same time
    procs = [python(TRAIN, str(tmp_path / f"run{i}"), env={"VAELAB_KERNEL_CACHE": str(cache)}) for i in range(2)]
    finished = [finish(p) for p in procs]
    results = [result for result, _ in finished]
    assert all(r["in_use"] for r in results)
    for _, log in finished:  # the training log says the backend and what computes the conv layers
        assert any(line.startswith("vaelab: training conv ") and line.endswith(" on jax)") for line in log), log
        assert any(line.startswith("vaelab: conv layers: vaelab's compiled C++ kernels (") for line in log), log
    said = [line for _, log in finished for line in log if "the kernels into" in line]
    assert sum(line.startswith("vaelab: compiling the kernels") for line in said) == 1, said
    assert all(line.startswith(("vaelab: compiling", "vaelab: waiting for another process")) for line in said), said
    assert results[0]["loss"] == results[1]["loss"] and 0 < results[0]["loss"] < 600  # same seed, same losses
    assert [sorted(p.name for p in d.iterdir()) for d in cache.iterdir()] == [[_build.LIBRARY]]  # no leftovers
    for i in range(2):
        assert load_run(tmp_path / f"run{i}").complete


def test_a_process_that_needs_the_library_waits_for_the_one_compiling_it(tmp_path, monkeypatch):
    import fcntl
    import threading

    monkeypatch.setenv("VAELAB_KERNEL_CACHE", str(tmp_path))
    build = _build.Build(["/nonexistent-compiler"], [], "none", "somekey")  # compiling it would fail
    path = _build.library_path(build)
    path.parent.mkdir(parents=True)
    folder = os.open(path.parent, os.O_RDONLY)
    fcntl.flock(folder, fcntl.LOCK_EX)  # this test is the process compiling it
    said, outcome = [], []
    waiter = threading.Thread(target=lambda: outcome.append(_build.ensure_built(build, announce=said.append)))
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive()
    assert said == [f"vaelab: waiting for another process compiling the kernels into {path.parent}"]
    path.write_bytes(b"the library")  # renamed into place, then the lock released
    os.close(folder)
    waiter.join(timeout=10)
    assert outcome == [(path, False)] and len(said) == 1  # loaded what the other wrote, compiled nothing


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["conv", "conv-fixed-var"])
def test_kernels_and_fallback_train_alike_and_load_each_others_runs(preset, tmp_path, monkeypatch, mnist, compiler):
    from vaelab.data import scale_pixels

    monkeypatch.setenv(kernels.SWITCH, "1")
    assert kernels.status().in_use, str(kernels.status())
    config = make_config(preset, epochs=2, train_subset=TRAIN_SUBSET, test_subset=TEST_SUBSET)
    runs = {}
    for switch in ("1", "0"):
        monkeypatch.setenv(kernels.SWITCH, switch)
        runs[switch] = train(config, tmp_path / switch, verbose=0)
    for a, b in zip(runs["1"].history, runs["0"].history, strict=True):
        for key in ("loss", "val_loss"):
            assert abs(a[key] - b[key]) < 0.05, (key, a[key], b[key])
    x = scale_pixels(mnist.x_test[:100])
    z = np.random.default_rng(0).normal(size=(100, config.model.latent_dim)).astype(np.float32)
    for trained in ("1", "0"):  # saved with one implementation, loaded with the other
        outputs = {}
        for switch in ("1", "0"):
            monkeypatch.setenv(kernels.SWITCH, switch)
            run = load_run(tmp_path / trained)
            outputs[switch] = [*run.encoder.predict(x, verbose=0), run.generator.predict(z, verbose=0)]
        for a, b in zip(outputs["1"], outputs["0"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_every_kernel_equals_naive_loops_under_address_and_undefined_behaviour_sanitizers(tmp_path, compiler):
    """tests/kernels_sanitized.cc built with -fsanitize=address,undefined: CI's sanitizer check.

    Every kernel of the five layers (forward, weights, input) at batches 1, 7 and 33, in conv_chunks.h's
    chunks on two threads, against naive loops, max-pooling ties included: the kernel math and the
    chunking. And the dense layers' passes (5 shapes, 4 activations) and the optimizers' updates, in pieces
    on two threads, bitwise equal to one thread. And a dense VAE's and IWAE's whole step (vae_step.h): objectives
    against a reference in double, gradients against its central differences. The FFI handlers' glue (conv_ffi.cc)
    runs under the sanitizers only in `tests/run_sanitized.sh`, by hand (minutes). Skipped where the compiler cannot
    link the sanitizers' runtime, except in CI, where that is a failure."""
    binary = tmp_path / "kernels_sanitized"
    # -O0: a third of -O1's compile time (11 s against 31 s here), the same checks, 3 s against 1 s to run them.
    flags = ["-std=c++17", "-O0", *_build.loop_flags(), *_build.SANITIZE_FLAGS, f"-I{_build.SOURCE_DIR}"]
    built = subprocess.run(
        [*compiler, *flags, str(SANITIZED_CHECK), "-o", str(binary)], capture_output=True, text=True, timeout=600
    )
    if built.returncode != 0:
        probe = tmp_path / "probe.cc"
        probe.write_text("int main() { return 0; }\n")
        bare = subprocess.run(
            [*compiler, *_build.SANITIZE_FLAGS, str(probe), "-o", str(tmp_path / "probe")], capture_output=True
        )
        if bare.returncode != 0 and not os.environ.get("CI"):
            pytest.skip(f"{shlex.join(compiler)} cannot link AddressSanitizer and UndefinedBehaviorSanitizer")
    assert built.returncode == 0, built.stderr[-4000:]
    symbols = subprocess.run(["nm", str(binary)], capture_output=True, text=True, check=True).stdout
    assert "__asan_" in symbols and "__ubsan_" in symbols, "the check was not built with the sanitizers"
    # The kernels allocate only std::vectors, and LeakSanitizer cannot run in some containers (ptrace).
    sanitizers = {"ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    done = subprocess.run([str(binary)], env={**os.environ, **sanitizers}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    passed = r"kernels_sanitized: 15 kernels x 3 batches \(1, 7, 33\) on 2 threads equal the reference loops \(\d+ max"
    assert re.match(passed, done.stdout), done.stdout
    assert "180 dense passes" in done.stdout and "Adam and RMSprop updates" in done.stdout, done.stdout
    assert "8 whole VAE and IWAE steps (vae_step.h) equal the reference" in done.stdout, done.stdout


def test_a_file_system_without_locks_still_gets_a_whole_library(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setenv("VAELAB_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(_build.fcntl, "flock", no_locks)
    writes_its_output = [sys.executable, "-c", "import sys; open(sys.argv[-1], 'w').write('the library')"]
    build = _build.Build(writes_its_output, [], "python", "nolocks")
    said = []
    path, compiled = _build.ensure_built(build, announce=said.append)
    assert compiled and path.read_text() == "the library" and len(said) == 1 and "compiling the kernels" in said[0]
    assert sorted(p.name for p in path.parent.iterdir()) == [_build.LIBRARY]  # renamed into place, nothing left
