"""The command line: exit codes, one-line errors, files written; Ctrl-C keeps the last epoch."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import TEST_SUBSET, run_cli
from vaelab.run import CHECKPOINT, load_run


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--preset", "resnet"], "invalid choice: 'resnet'"),
        (["train", "--epochs", "0"], "expected an integer >= 1, got 0"),
        (["train", "--latent-dim", "0"], "expected an integer >= 1, got 0"),
        (["train", "--epochs", "many"], "expected an integer >= 1, got 'many'"),
        (["train", "--resume", "/nonexistent/run"], "no run at /nonexistent/run"),
        (["data", "--data-dir", "/etc/hostname"], "is not a directory"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected):
    result = run_cli(*args)
    assert result.returncode == 2
    assert expected in one_line_error(result)


def test_an_argument_left_over_is_refused_by_its_command(vaelab):
    # `--manifold` takes an optional value: "-inf" looks like an option to argparse, and is left over
    result = vaelab("generate", "some-run", "--manifold", "-inf")
    assert result.returncode == 2
    expected = "vaelab generate: error: unrecognized arguments: -inf (see `vaelab generate --help`)\n"
    assert result.stderr == expected, result.stderr


def test_unreadable_data_dir(tmp_path, monkeypatch, capsys):
    from vaelab import cli, data

    monkeypatch.setattr(data.os, "access", lambda path, mode: False)  # as root, chmod 0 would not lock us out
    assert cli.main(["data", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not readable; fix its permissions" in err


def test_data_reports_the_source_and_canonical_counts(mnist):
    result = run_cli("data")
    assert result.returncode == 0, result.stderr
    assert "per digit 0-9: 980 1135 1032 1010 982 892 958 1028 974 1009" in result.stdout
    assert "source:" in result.stdout and mnist.sha256 in result.stdout


def test_presets_lists_the_networks_and_says_whether_the_kernels_run_them():
    result = run_cli("presets", env={"VAELAB_KERNELS": "0"})
    assert result.returncode == 0
    networks, kernels = result.stdout.split("\n\n")
    assert [line.split()[0] for line in networks.splitlines()] == [
        "mlp",
        "mlp-fixed-var",
        "conv",
        "conv-fixed-var",
        "convnet",
    ]
    assert "take images of any size and colour" in kernels
    assert kernels.strip().splitlines()[-1] == (
        "The conv presets' layers, on this machine: compiled kernels: not in use (turned off by "
        "VAELAB_KERNELS=0); the ConvNet runs on its keras.ops layers"
    )


def test_train_writes_a_run_and_refuses_to_overwrite_it(tmp_path, mnist, vaelab):
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--train-subset", "500", "--test-subset", "200", "--out", str(out)]
    result = vaelab(*args)
    assert result.returncode == 0, result.stderr
    assert "1 epoch in" in result.stdout and "s wall" in result.stdout and "test loss" in result.stdout
    again = vaelab(*args)
    assert again.returncode == 2 and "already holds a run" in one_line_error(again)
    assert vaelab(*args, "--overwrite").returncode == 0


@pytest.mark.slow
def test_ctrl_c_keeps_the_last_completed_epoch_and_resume_finishes(tmp_path, mnist):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "vaelab",
        "train",
        "--epochs",
        "50",
        "--train-subset",
        "20000",
        "--test-subset",
        str(TEST_SUBSET),
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / CHECKPOINT).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    last = stderr.strip().splitlines()[-1]
    assert "interrupted" in last and f"vaelab train --resume {out}" in last
    assert "Traceback" not in stderr
    done = load_run(out).epoch
    assert done >= 1
    result = run_cli("train", "--resume", str(out), "--epochs", str(done + 1))
    assert result.returncode == 0, result.stderr
    assert load_run(out).epoch == done + 1
