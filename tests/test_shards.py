"""Datasets in shards: the file set, the round trip, clear errors for missing or damaged shards, the
loader's batches equal to those of the same data in memory, and memory that does not grow with the data."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import TEST_SUBSET, TRAIN_SUBSET, run_cli
from vaelab._lock import LOCK_FILE
from vaelab.data import binarized_test_set, load_dataset
from vaelab.data.batches import Batches, epoch_order
from vaelab.data.shard_writer import convert
from vaelab.data.shards import MANIFEST, ShardedArray, verify
from vaelab.errors import VaelabError


def small_npz(path, seed=0, train=53, test=11, labels=True):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (train, 28, 28), np.uint8),
        "x_test": rng.integers(0, 256, (test, 28, 28), np.uint8),
    }
    if labels:
        arrays |= {
            "y_train": rng.integers(0, 3, train),
            "y_test": rng.integers(0, 3, test),
            "class_names": ["a", "b", "c"],
        }
    np.savez(path, **arrays)
    return path


def quiet(msg):
    pass


def test_round_trip_file_set_and_checksum(tmp_path):
    source = load_dataset(small_npz(tmp_path / "src.npz"))
    manifest = convert([str(source.path)], tmp_path / "shards", shard_rows=10, log=quiet)
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    expected = [f"x_train-{i:05d}.npy" for i in range(6)] + [f"y_train-{i:05d}.npy" for i in range(6)]
    expected += ["x_test-00000.npy", "x_test-00001.npy", "y_test-00000.npy", "y_test-00001.npy"]
    assert names == sorted([*expected, MANIFEST, LOCK_FILE])
    assert manifest["arrays"]["x_train"]["shards"][-1]["rows"] == 3  # 53 = 5 x 10 + 3

    data = load_dataset(tmp_path / "shards")
    assert isinstance(data.x_train, ShardedArray) and isinstance(data.x_test, np.ndarray)
    assert data.sha256 == source.sha256  # the same checksum as the arrays in memory: the same data
    assert data.class_names == ("a", "b", "c")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(np.asarray(getattr(data, key)), getattr(source, key))
    rows = np.random.default_rng(1).integers(0, 53, 40)  # any order, repeats, across shards
    np.testing.assert_array_equal(data.x_train.take(rows, axis=0), source.x_train[rows])
    np.testing.assert_array_equal(data.x_train[17:33], source.x_train[17:33])
    verify(tmp_path / "shards")


def test_several_npz_files_make_one_dataset(tmp_path):
    parts = [load_dataset(small_npz(tmp_path / f"{k}.npz", seed=k, train=20 + k)) for k in range(3)]
    convert([str(p.path) for p in parts], tmp_path / "shards", shard_rows=16, log=quiet)
    data = load_dataset(tmp_path / "shards")
    np.testing.assert_array_equal(np.asarray(data.x_train), np.concatenate([p.x_train for p in parts]))
    np.testing.assert_array_equal(data.y_test, np.concatenate([p.y_test for p in parts]))
    unlabelled = small_npz(tmp_path / "plain.npz", labels=False)
    with pytest.raises(VaelabError, match="has other classes than"):
        convert([str(parts[0].path), str(unlabelled)], tmp_path / "mixed", log=quiet)


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_truncated_shard_is_one_line(tmp_path, damage):
    convert([str(small_npz(tmp_path / "src.npz"))], tmp_path / "shards", shard_rows=10, log=quiet)
    shard = tmp_path / "shards" / "x_train-00002.npy"
    if damage == "missing":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:-100])
    result = run_cli("data", "--dataset", str(tmp_path / "shards"))  # training opens it the same way: load_dataset
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"shard {shard} is {damage}" in lines[0] and "vaelab data convert" in lines[0]


def test_a_damaged_shard_is_found_by_vaelab_data(tmp_path):
    convert([str(small_npz(tmp_path / "src.npz"))], tmp_path / "shards", shard_rows=10, log=quiet)
    shard = tmp_path / "shards" / "x_train-00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF  # same size, other bytes: only the checksum tells
    shard.write_bytes(bytes(raw))
    result = run_cli("data", "--dataset", str(tmp_path / "shards"))
    assert result.returncode == 2
    assert f"shard {shard} is damaged" in result.stderr.strip()


def test_convert_from_the_command_line_and_its_mistakes(tmp_path):
    source = small_npz(tmp_path / "src.npz")
    done = run_cli("data", "convert", str(source), str(tmp_path / "shards"), "--shard-size", "20")
    assert done.returncode == 0, done.stderr
    assert "x_train: 53 rows in 3 shards" in done.stdout
    shown = run_cli("data", "--dataset", str(tmp_path / "shards"))
    assert shown.returncode == 0 and load_dataset(source).sha256 in shown.stdout
    again = run_cli("data", "convert", str(source), str(tmp_path / "shards"))
    assert again.returncode == 2 and "already holds shards; pass --overwrite" in again.stderr
    assert run_cli("data", "convert", str(source), str(tmp_path / "shards"), "--overwrite").returncode == 0
    (tmp_path / "shards" / MANIFEST).unlink()  # as a conversion killed before its end leaves it
    unfinished = run_cli("data", "--dataset", str(tmp_path / "shards"))
    assert unfinished.returncode == 2 and "its conversion did not finish" in unfinished.stderr


def test_the_epoch_order_is_the_one_keras_shuffling_drew():
    """Runs made before the loader shuffled with numpy's global generator seeded from (seed, epoch)."""
    for seed, epoch in ((0, 0), (3, 7)):
        np.random.seed(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
        np.testing.assert_array_equal(epoch_order(1000, seed, epoch), np.random.permutation(1000))


def test_shard_batches_equal_in_memory_batches(tmp_path, mnist):
    """The loader gives the same float batches from shards as from the arrays: same seed, same epoch, same bytes."""
    convert(["mnist"], tmp_path / "shards", log=quiet)
    sharded = load_dataset(tmp_path / "shards")
    for epoch in (0, 4):
        a = Batches(mnist.x_train, 100, count=TRAIN_SUBSET, seed=0, part=(1, 2))
        b = Batches(sharded.x_train, 100, count=TRAIN_SUBSET, seed=0, part=(1, 2))
        a.set_epoch(epoch), b.set_epoch(epoch)
        for i in (0, 7, len(a) - 1):
            np.testing.assert_array_equal(a[i], b[i])
    test = Batches(sharded.x_test, 64, count=TEST_SUBSET, binarized=True)  # binarised one batch at a time
    np.testing.assert_array_equal(
        np.concatenate([test[i] for i in range(len(test))]), binarized_test_set(mnist)[:TEST_SUBSET]
    )


@pytest.mark.slow
def test_an_epoch_over_shards_equals_an_epoch_in_memory(tmp_path, small_run):
    from vaelab.config import make_config
    from vaelab.training.loop import train

    convert(["mnist"], tmp_path / "shards", log=quiet)
    data = load_dataset(tmp_path / "shards")
    config = make_config("mlp", epochs=1, train_subset=TRAIN_SUBSET, test_subset=TEST_SUBSET, dataset=data.name)
    run = train(config, tmp_path / "run", data=data, verbose=0)
    for key in ("loss", "reconstruction_loss", "kl_loss", "val_loss"):
        assert run.history[0][key] == small_run.history[0][key]


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, numpy as np
    from pathlib import Path
    from vaelab.data import load_dataset
    from vaelab.data.batches import Batches

    def status(key):
        return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) // 1024

    data = load_dataset(sys.argv[1])
    batches = Batches(data.x_train, 100, seed=0)
    batches.order()  # the epoch's order: 4 bytes an image, part of the loader's memory, made before the mark
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size (VmHWM) to the current one
    start = status("VmRSS")
    total = 0.0
    for i in range(len(batches)):
        total += float(batches[i][0, 0, 0, 0])
    print(json.dumps({"start_mb": start, "peak_mb": status("VmHWM"), "images": len(data.x_train)}))
    """
)


@pytest.mark.slow
def test_memory_stays_bounded_over_a_dataset_larger_than_the_limit(tmp_path):
    """A generated dataset (random pixels: this tests the format, not learning) 6 times the memory limit set
    here: one epoch of the loader over it must grow the process by less than the limit."""
    limit_mb = 48
    images = 6 * limit_mb * 2**20 // 784  # 6 x the limit in image bytes
    rng = np.random.default_rng(0)

    def parts():
        for start in range(0, images, 50_000):
            n = min(50_000, images - start)
            yield {"x_train": rng.integers(0, 256, (n, 28, 28), np.uint8)}
        yield {"x_test": rng.integers(0, 256, (100, 28, 28), np.uint8)}

    from vaelab.data.shard_writer import write_shards

    write_shards(tmp_path / "big", parts(), source="generated for a memory test", class_names=None)
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "big")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["images"] * 784 > 6 * limit_mb * 2**20 - 784
    assert result["peak_mb"] - result["start_mb"] < limit_mb, result
