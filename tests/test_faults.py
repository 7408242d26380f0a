"""Every fault is one line: damaged run files, a refusing file system, arguments out of range."""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest

from vaelab import cli
from vaelab.run import CHECKPOINT, CONFIG, HISTORY, METRICS


@pytest.fixture
def run_copy(small_run, tmp_path):
    """A copy of a trained run, to damage."""
    return shutil.copytree(small_run.path, tmp_path / "run")


def vaelab(capsys, *argv) -> tuple[int, str]:
    """Runs the command in-process; returns its exit status and its last line on stderr."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    return code, lines[-1] if lines else ""


def rewrite_npz(path, **changes):
    with np.load(path) as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def rename_entry(path, old: str, new: str):
    with np.load(path) as saved:
        arrays = {(new if k == old else k): saved[k] for k in saved.files}
    np.savez(path, **arrays)


def flip_byte(path, at: float = 0.5):
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * at)] ^= 0xFF
    path.write_bytes(bytes(raw))


DAMAGE = {
    "truncated checkpoint": (CHECKPOINT, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "bit-flipped checkpoint": (CHECKPOINT, flip_byte),
    "checkpoint array of the wrong shape": (CHECKPOINT, lambda p: rewrite_npz(p, **{"model/000": np.zeros((3, 3))})),
    "checkpoint with NaN weights": (CHECKPOINT, lambda p: rewrite_npz(p, **{"model/000": np.full((784, 256), np.nan)})),
    # one entry's name altered (a stray byte in the zip's directory): the whole file is damaged, not "no optimizer"
    "checkpoint with a damaged entry name": (CHECKPOINT, lambda p: rename_entry(p, "optimizer/003", "optimizer/0#3")),
    "truncated history": (HISTORY, lambda p: p.write_text(p.read_text()[: len(p.read_text()) - 30])),
    "history with extra columns": (HISTORY, lambda p: p.write_text(p.read_text().replace("\n", ",1\n"))),
    "history not UTF-8": (HISTORY, lambda p: p.write_bytes(b"\xff\xfe" + p.read_bytes())),
    "config of the wrong types": (
        CONFIG,
        lambda p: p.write_text(p.read_text().replace('"epochs": 2', '"epochs": "x"')),
    ),
    "config without its data checksum": (
        CONFIG,
        lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "data_sha256"})),
    ),
    "config naming an unknown preset": (
        CONFIG,
        lambda p: p.write_text(p.read_text().replace('"preset": "mlp"', '"preset": "nope"')),
    ),
    "config that is a list": (CONFIG, lambda p: p.write_text("[1, 2]")),
    "metrics that is a list": (METRICS, lambda p: p.write_text("[]")),
    "metrics of the wrong shape": (METRICS, lambda p: p.write_text('{"test": 5}')),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_file_is_named_in_one_line(run_copy, capsys, damage):
    name, spoil = DAMAGE[damage]
    spoil(run_copy / name)
    code, line = vaelab(capsys, "encode", run_copy, "--out", run_copy / "analysis")
    assert code == 2, line
    assert f"{run_copy / name} is damaged" in line
    if name != METRICS:  # resuming says the same
        assert vaelab(capsys, "train", "--resume", run_copy)[1] == line.replace("encode", "train")
    if "preset" in damage:
        assert "unknown preset 'nope'" in line
    if name == METRICS:  # the weights are intact: resuming writes the file again
        assert f"vaelab train --resume {run_copy}" in line
        assert vaelab(capsys, "train", "--resume", run_copy)[0] == 0
        assert vaelab(capsys, "encode", run_copy, "--out", run_copy / "analysis")[0] == 0
    else:
        assert "--overwrite" in line


def test_a_damaged_data_cache_manifest_is_one_line(tmp_path, capsys, mnist):
    from vaelab.data.builtin import BUILTIN

    spec = BUILTIN["mnist"]
    shutil.copy(mnist.path, tmp_path / spec.cache_file)
    (tmp_path / spec.manifest_file).write_text('{"arrays": []}')
    code, line = vaelab(capsys, "data", "--data-dir", tmp_path)
    assert code == 2 and spec.manifest_file in line and "vaelab data" in line


def test_a_full_disk_keeps_the_last_epoch_and_says_how_to_go_on(tmp_path, capsys, monkeypatch, mnist):
    """The file system refuses the second epoch's checkpoint (ENOSPC at the rename): one line, epoch 1 intact."""
    from vaelab import _files

    out = tmp_path / "run"
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(CHECKPOINT) and (out / CHECKPOINT).exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(_files.os, "replace", replace)
    code, line = vaelab(capsys, "train", "--epochs", "2", "--train-subset", "500", "--test-subset", "100", "--out", out)
    assert code == 2 and "No space left on device" in line and f"vaelab train --resume {out}" in line
    monkeypatch.undo()
    assert not list(out.glob(".*.partial*"))  # no temporary file left behind
    assert vaelab(capsys, "train", "--resume", out)[0] == 0  # epoch 1 was intact: it carries on


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--train-subset", "100", "--out", "{file}"], "is a file, not a run directory"),
        (["train", "--train-subset", "100", "--out", "{long}"], "File name too long"),
        (["encode", "{run}", "--out", "{file}"], "cannot write"),
        (["export", "{run}", "--out", "/proc/vaelab"], "cannot write"),
    ],
)
def test_an_unusable_out_is_one_line(small_run, tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("x")
    places = {"file": tmp_path / "file", "long": tmp_path / ("x" * 300), "run": small_run.path}
    code, line = vaelab(capsys, *[a.format(**places) for a in argv])
    assert code == 2 and message in line, line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explore", "{run}", "--port", "70000"], "a TCP port: an integer from 1 to 65535"),
        (["explore", "{run}", "--port", "0"], "from 1 to 65535"),
        (["train", "--seed", "4294967296"], "a seed: an integer from 0 to"),
        (["generate", "{run}", "--samples", "5", "--seed", "-3"], "a seed: an integer from 0 to"),
        (["train", "--latent-dim", "1000000000"], "weights"),
        (["generate", "{run}", "--samples", "100000"], "a number of samples: an integer from 1 to 1000"),
        (["generate", "{run}", "--manifold", "5000"], "a grid size"),
        (["evaluate", "{run}", "--samples", "100000000"], "use fewer --samples or --images"),
        (["generate", "{run}", "--z", "1", "2", "--z", "1", "2", "3"], "differ in length"),
        (["train", "--learning-rate", "inf"], "learning_rate must be a finite number > 0, got inf"),
        (["kl", "0", "1", "0", "1e-320"], "smallest normal float64"),
        (["train", "--learning-rate", "1e308"], "learning_rate 1e+308 is outside float32"),
        (["train", "--learning-rate", "1e-40"], "learning_rate 1e-40 is outside float32"),
        (["train", "--beta", "1e39"], "beta 1e+39 is outside float32"),
        (["explore", "{run}", "--host", "a\udcffb"], "expected a host name or an address"),
        (["explore", "{run}", "--host", "a\x00b"], "expected a host name or an address"),
        (["explore", "{run}", "--host", " "], "expected a host name or an address"),
        (["encode", "{run}", "--out", ""], "expected a path, got an empty string"),
    ],
)
def test_arguments_out_of_range_are_refused_before_any_work(small_run, capsys, argv, message):
    code, line = vaelab(capsys, *[a.format(run=small_run.path) for a in argv])
    assert code == 2 and message in line, line


def test_kl_of_an_infinite_divergence_says_inf_without_warnings(capsys):
    code = cli.main(["kl", "0", "1", "0", "1e-300", "--check"])
    out = capsys.readouterr()
    assert code == 0 and "= inf nats (closed form)" in out.out and "nan" not in out.out
    assert out.err == ""  # no RuntimeWarning from the numerical check
    assert cli.main(["kl", "1e300", "1", "-1e300", "1"]) == 0  # negative numbers in any notation are values
    assert "= inf nats" in capsys.readouterr().out
    assert cli.main(["kl", "1e308", "1", "-1e308", "1"]) == 0  # mu1 - mu2 overflows float64: inf, no warning
    out = capsys.readouterr()
    assert "= inf nats" in out.out and out.err == ""


def test_an_unforeseen_error_is_one_line_naming_the_traceback_file(capsys, monkeypatch):
    from vaelab.models import kl

    monkeypatch.setattr(kl, "gaussian_kl_sigmas", lambda *a: 1 / 0)
    code = cli.main(["kl", "0", "1", "0", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_BUG and len(lines) == 1
    assert "this is a bug in vaelab" in lines[0] and "ZeroDivisionError" in lines[0]
    traceback = lines[0].rsplit("the full traceback is in ", 1)[1]
    with open(traceback) as f:
        assert "Traceback" in f.read()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "iwae", "--k", "1000000"], "of this iwae would need about"),
        (["--model", "vqvae", "--codes", "1000000"], "lower --codes or --batch-size"),
        (["--model", "vamp", "--pseudo-inputs", "120000"], "lower --pseudo-inputs or --batch-size"),
        (["--epochs", str(10**30)], "epochs must be at most 2,147,483,647"),
        (["--epochs", "2000000000"], "over the 2,147,483,647 the optimizer's int32 step counter holds"),
        (["--kl-warmup", str(10**20)], "kl_warmup must be at most"),
    ],
)
def test_a_training_that_cannot_fit_is_refused_before_its_directory_exists(tmp_path, capsys, monkeypatch, argv,
                                                                          message, mnist):  # fmt: skip
    from vaelab import limits

    monkeypatch.setattr(limits, "physical_memory", lambda: 10**9)  # 0.5 GB allowed, whatever the machine
    out = tmp_path / "R"
    code, line = vaelab(capsys, "train", "--train-subset", "500", "--test-subset", "100", *argv, "--out", out)
    assert code == 2 and message in line, line
    assert "0.5 GB allowed" in line or "at most" in line or "step counter" in line
    assert not out.exists()  # no run directory left behind


def test_a_report_or_sweep_whose_evaluation_cannot_fit_is_refused_before_training(tmp_path, capsys, mnist):
    for argv in (["report", "--out", tmp_path / "report", "--runs-dir", tmp_path / "runs"],
                 ["sweep", "--out", tmp_path / "sweep"]):  # fmt: skip
        code, line = vaelab(capsys, *argv, "--iwae-samples", "100000000000", "--epochs", "1", "--train-subset", "100")
        assert code == 2 and "use fewer --samples or --images" in line, line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "report").exists()
    assert not list((tmp_path / "sweep").glob("*/config.json"))
