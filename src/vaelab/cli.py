"""The `vaelab` command: a thin layer over the Python API. Each subcommand parses, calls, prints."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vaelab.errors import Interrupted, VaelabError

EXIT_USER_ERROR = VaelabError.exit_code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (what was wrong, where to look) and exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory holding (or to cache) MNIST; default $VAELAB_DATA_DIR or ~/.cache/vaelab",
    )


# --- commands -------------------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    """Fetches (if needed) and verifies MNIST, and says where it came from."""
    import numpy as np

    from vaelab.data import fetch_mnist

    data = fetch_mnist(args.data_dir)
    print(f"source:  {data.source}")
    print(f"file:    {data.path}")
    print(f"sha256:  {data.sha256} (of the four arrays)")
    for name, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        counts = " ".join(str(c) for c in np.bincount(y, minlength=10))
        print(f"{name + ':':8} {x.shape[0]} images {x.shape[1]}x{x.shape[2]} {x.dtype}; per digit 0-9: {counts}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """Lists the presets and what each sets."""
    from vaelab.config import PRESETS

    for name, model in PRESETS.items():
        print(
            f"{name:15} arch={model.arch} variance={model.variance} latent_dim={model.latent_dim} "
            f"intermediate_dim={model.intermediate_dim}"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Trains a preset into a run directory (or resumes one)."""
    from vaelab.config import make_config
    from vaelab.training import train

    started = time.perf_counter()
    if args.resume is not None:
        out = args.resume
        run = _interruptible(lambda: train(out=out, resume=True, epochs=args.epochs, data_dir=args.data_dir), out)
    else:
        config = make_config(
            args.preset,
            latent_dim=args.latent_dim,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            optimizer=args.optimizer,
            learning_rate=args.learning_rate,
            train_subset=args.train_subset,
            test_subset=args.test_subset,
        )
        out = args.out or Path("runs") / args.preset
        run = _interruptible(lambda: train(config, out, overwrite=args.overwrite, data_dir=args.data_dir), out)
    test = run.metrics["test"]
    print(
        f"{run.config.preset}: {run.epoch} epochs in {time.perf_counter() - started:.1f} s wall "
        f"(training {run.metrics['train_seconds']:.1f} s); test loss {test['loss']:.2f} nats = reconstruction "
        f"{test['reconstruction_loss']:.2f} + KL {test['kl_loss']:.2f}; run saved in {run.path}"
    )
    return 0


def _interruptible(work: Callable, out: Path):
    try:
        return work()
    except KeyboardInterrupt:
        from vaelab.run import CHECKPOINT

        if (Path(out) / CHECKPOINT).exists():
            raise Interrupted(
                f"interrupted; {out} holds the last completed epoch: continue with `vaelab train --resume {out}`"
            ) from None
        raise Interrupted("interrupted before the first epoch ended; start again with `vaelab train`") from None


# --- parser ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from vaelab import __version__
    from vaelab.config import OPTIMIZERS, PRESETS

    parser = _Parser(prog="vaelab", description="Train, explore and explain variational autoencoders on MNIST.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("data", help="fetch and verify MNIST; say where it came from")
    _add_data_dir(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("presets", help="list the networks of the exercise")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train", help="train a preset into a run directory")
    p.add_argument("--preset", default="mlp", choices=list(PRESETS), help="network (default: mlp)")
    p.add_argument("--epochs", type=_positive_int, help="passes over the training set (default: 50)")
    p.add_argument("--batch-size", type=_positive_int, help="images per gradient step (default: 100)")
    p.add_argument("--latent-dim", type=_positive_int, help="size of z (default: 2)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: rmsprop")
    p.add_argument("--learning-rate", type=float, help="default: 0.001")
    p.add_argument("--train-subset", type=_positive_int, help="train on the first N training images only")
    p.add_argument("--test-subset", type=_positive_int, help="validate on the first N test images only")
    p.add_argument("--out", type=Path, help="run directory (default: runs/PRESET)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in RUN from its last epoch")
    _add_data_dir(p)
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import vaelab  # noqa: F401  (chooses the default Keras backend before anything imports Keras)

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VaelabError as err:
        print(f"vaelab {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"vaelab {args.command}: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
