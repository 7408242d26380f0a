"""What training snapshots cost, against the epoch they are taken after.

    python benchmarks/snapshot_cost.py [--preset mlp] [--epochs 5]

Trains the preset on the full 60,000 images, batch 100, without snapshots (history.csv gives the
epochs' seconds: the median after the first, which includes compilation), then runs the snapshot
callback on the trained networks 11 times, as training does after each epoch (encode 10 test
images, decode them and 10 prior draws, write the PNG, hand the .npz to its background writer), and
takes the median time training waits for it over calls 2-11 (the first compiles). Then, because the
.npz is rewritten whole and grows with the epochs recorded, times the wait and the background write
with 50, 200 and 1,000 epochs recorded.
The cheapest epoch (the MLP's) is the worst case: a ConvNet epoch is ~8 times longer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import table

REPEATS = 11


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mlp")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    import vaelab  # noqa: F401  (chooses the Keras backend)
    from vaelab.config import make_config
    from vaelab.data import load_dataset, test_images
    from vaelab.run import machine
    from vaelab.training._malloc import tune_malloc
    from vaelab.training.loop import train
    from vaelab.training.snapshots import SnapshotCallback

    tune_malloc()
    data = load_dataset("mnist")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        run = train(make_config(args.preset, epochs=args.epochs), out, data=data, snapshots=False, verbose=0,
                    log=lambda msg: None)  # fmt: skip
        epoch_s = statistics.median(row["seconds"] for row in run.history[1:])
        # The same work the callback does after each epoch, on the trained networks, timed alone.
        x_test, labels = test_images(data, binarized=False), data.y_test
        callback = SnapshotCallback(out, run.models, x_test, labels, seed=0, first_epoch=0)
        for epoch in range(REPEATS):
            callback._wait_for_writer()  # in training the last .npz write had a whole epoch to finish
            callback.on_epoch_end(epoch)
        callback.on_train_end()
        snap_s = statistics.median(callback.seconds[1:])  # the first call compiles the encoder and generator
        rows = [[args.preset, f"{epoch_s:.3f}", f"{snap_s * 1000:.1f}", f"{snap_s / epoch_s:.2%}"]]
        # The .npz is rewritten whole, in the background: its cost with many epochs already recorded.
        growth = []
        for recorded in (50, 200, 1000):
            lists = (list(range(1, recorded + 1)), [callback.reconstructions[-1]] * recorded,
                     [callback.samples[-1]] * recorded)  # fmt: skip
            callback.epochs, callback.reconstructions, callback.samples = (list(x) for x in lists)
            blocking, writing = [], []
            for _ in range(3):
                callback.on_train_end()
                started = time.perf_counter()
                callback.on_epoch_end(recorded)
                blocking.append(time.perf_counter() - started)
                callback.on_train_end()
                started = time.perf_counter()
                callback._write_npz(*lists)
                writing.append(time.perf_counter() - started)
                for kept in (callback.epochs, callback.reconstructions, callback.samples):
                    kept.pop()
            size = (out / "snapshots.npz").stat().st_size / 1e6
            block, write = statistics.median(blocking), statistics.median(writing)
            growth.append([str(recorded), f"{block * 1000:.1f}", f"{block / epoch_s:.2%}", f"{write * 1000:.1f}",
                           f"{size:.1f}"])  # fmt: skip
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d')}; other work may have been running\n")
    print(table(["preset", "s/epoch (median, epochs 2+)", "training waits, ms (median)", "% of an epoch"], rows))
    print()
    header = ["epochs recorded", "training waits, ms", "% of the epoch above", "background .npz write, ms", "npz MB"]
    print(table(header, growth))


if __name__ == "__main__":
    main()
