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
    from vaelab.run import run_dir_name
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
            binarize=args.binarize or None,
            implementation=args.implementation,
        )
        out = args.out or Path("runs") / run_dir_name(config)
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


def _load(args: argparse.Namespace):
    """The run named on the command line, MNIST, and the output directory (default RUN/analysis)."""
    from vaelab.data import fetch_mnist
    from vaelab.run import load_run

    run = load_run(args.run)
    if run.epoch == 0:
        raise VaelabError(f"{args.run} has no completed epoch yet; train it with `vaelab train --resume {args.run}`")
    out = args.out or Path(args.run) / "analysis"
    return run, fetch_mnist(args.data_dir), out


def _wrote(*paths: Path) -> None:
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)


def cmd_encode(args: argparse.Namespace) -> int:
    """(c) Encodes the test set: the latent map and the one-image-per-digit table."""
    from vaelab import analysis, plots
    from vaelab._files import write_text

    run, data, out = _load(args)
    picks = analysis.parse_picks(data.y_test, args.pick)
    codes = analysis.encode_test_set(run, data)
    rows = analysis.digit_table(run, data, picks)
    print(analysis.table_markdown(rows))
    files = [out / "latent_map.png", out / "digit_table.png", out / "digit_table.md", out / "digit_table.csv"]
    plots.save(plots.plot_latent_map(codes, table=rows, title=run.name), files[0])
    plots.save(plots.plot_digit_table(rows, data.x_test[[r.index for r in rows]], title=run.name), files[1])
    write_text(files[2], analysis.table_markdown(rows) + "\n")
    write_text(files[3], analysis.table_csv(rows))
    _wrote(*files)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """(d) Decodes latent points, prior samples or the manifold grid into digits."""
    from vaelab import analysis, plots

    run, _, out = _load(args)
    files = []
    if args.z or not (args.samples or args.manifold):
        z = analysis.check_points(args.z or [[0.5, 0.2]], run.config.model.latent_dim)
        images = analysis.generate(run, z)
        for point in z:
            print(f"z = {analysis.format_point(point)}")
        titles = [analysis.format_point(p, 2) for p in z]
        files.append(out / "generated.png")
        plots.save(plots.plot_images(images, titles, title=f"{run.name}: generator(z)"), files[-1])
    if args.samples:
        z, images = analysis.prior_samples(run, args.samples, seed=args.seed)
        files.append(out / "samples.png")
        plots.save(plots.plot_images(images, title=f"{run.name}: {args.samples} samples, z ~ N(0, I)"), files[-1])
    if args.manifold:
        grid, images = analysis.manifold(run, args.manifold)
        files.append(out / "manifold.png")
        plots.save(plots.plot_manifold(grid, images), files[-1])
    _wrote(*files)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    """(e) Interpolates between two test images of different digits through the latent space."""
    from vaelab import analysis, plots

    run, data, out = _load(args)
    start, end = analysis.pick_pair(
        data.y_test,
        from_index=args.from_index,
        to_index=args.to_index,
        from_digit=args.from_digit,
        to_digit=args.to_digit,
        allow_same_digit=args.allow_same_digit,
    )
    interp = analysis.interpolate(run, data, start, end, args.steps)
    print(
        f"from test #{start} (digit {interp.start_digit}) at {analysis.format_point(interp.z_start)} "
        f"to test #{end} (digit {interp.end_digit}) at {analysis.format_point(interp.z_end)}:"
    )
    print(analysis.points_markdown(interp.points))
    files = [out / "interpolation.png", out / "interpolation_path.png"]
    plots.save(plots.plot_interpolation(interp, title=f"{run.name}: interpolation"), files[0])
    codes = analysis.encode_test_set(run, data)
    plots.save(plots.plot_latent_map(codes, interpolation=interp, title=run.name), files[1])
    _wrote(*files)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Test-set ELBO and the importance-weighted bound on log p(x); saved into the run's metrics.json."""
    from tqdm import tqdm

    from vaelab._malloc import tune_malloc
    from vaelab.evaluate import evaluate_and_save

    run, data, _ = _load(args)
    tune_malloc()
    with tqdm(total=args.images or len(data.x_test), unit="image", desc="evaluate", file=sys.stderr) as bar:
        result = evaluate_and_save(
            run,
            data,
            samples=args.samples,
            images=args.images,
            seed=args.seed,
            progress=lambda done, total: bar.update(done - bar.n),
        )
    kind = "binarised" if result.binarized else "grey-level"
    print(f"{run.name}: {result.images:,} {kind} test images, K = {result.samples} importance samples")
    print(
        f"  ELBO                       {result.elbo:9.2f} nats = -(reconstruction {result.reconstruction_loss:.2f} "
        f"+ KL {result.kl_loss:.2f})"
    )
    print(
        f"  ELBO with z = z_mean       {result.elbo_at_mean:9.2f} nats (reconstruction "
        f"{result.reconstruction_loss_at_mean:.2f})"
    )
    print(f"  log p(x) >= IWAE bound     {result.iwae:9.2f} nats, i.e. NLL <= {result.nll:.2f}")
    print(f"written to {run.path / 'metrics.json'} ({result.seconds:.0f} s)")
    return 0


def cmd_kl(args: argparse.Namespace) -> int:
    """Question 2: the KL divergence of two normal distributions, in closed form (and checked numerically)."""
    import math

    from vaelab.kl import gaussian_kl_float64, kl_by_integration

    values = (args.mu1, args.sigma1, args.mu2, args.sigma2)
    if not all(math.isfinite(v) for v in values):
        raise VaelabError("MU1 SIGMA1 MU2 SIGMA2 must be finite numbers")
    if args.sigma1 <= 0 or args.sigma2 <= 0:
        raise VaelabError("SIGMA1 and SIGMA2 are standard deviations and must be > 0")
    kl = float(gaussian_kl_float64(*values))
    print(f"KL(N({args.mu1:g}, {args.sigma1:g}^2) || N({args.mu2:g}, {args.sigma2:g}^2))")
    print("  = log(sigma2/sigma1) + (sigma1^2 + (mu1 - mu2)^2) / (2 sigma2^2) - 1/2")
    print(f"  = {kl!r} nats (closed form)")
    if args.check:
        numeric = kl_by_integration(*values)
        diff = abs(numeric - kl) / max(abs(kl), 1e-300)
        print(f"  = {numeric!r} nats (numerical integration of the definition; relative difference {diff:.1e})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Trains (or reuses) mlp, mlp-fixed-var and conv and writes the report answering the exercise."""
    from vaelab.report import report

    started = time.perf_counter()
    index = report(
        out=args.out,
        runs_dir=args.runs_dir,
        epochs=args.epochs or 50,
        iwae_samples=args.iwae_samples,
        train_subset=args.train_subset,
        data_dir=args.data_dir,
    )
    print(f"report written to {index} and {index.with_name('report.md')} in {time.perf_counter() - started:.0f} s")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    """Serves the interactive latent-space explorer for one or more runs."""
    from vaelab.explore import serve

    serve(args.runs, host=args.host, port=args.port, data_dir=args.data_dir)
    return 0


# --- parser ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from vaelab import __version__
    from vaelab.config import IMPLEMENTATIONS, OPTIMIZERS, PRESETS

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
    p.add_argument(
        "--binarize",
        action="store_true",
        help="dynamic binarisation: binary pixels drawn afresh each epoch; tested on a fixed binarised set",
    )
    p.add_argument(
        "--implementation",
        choices=IMPLEMENTATIONS,
        help="conv layer pairs fused (default, faster) or the exercise's Keras layers one by one",
    )
    p.add_argument("--out", type=Path, help="run directory (default: runs/PRESET, plus any non-default setting)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in RUN from its last epoch")
    _add_data_dir(p)
    p.set_defaults(func=cmd_train)

    def analysis_parser(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("run", type=Path, metavar="RUN", help="run directory")
        p.add_argument("--out", type=Path, help="directory for the figures and tables (default: RUN/analysis)")
        _add_data_dir(p)
        p.set_defaults(func=func)
        return p

    p = analysis_parser("encode", "(c) latent map of the test set and one image per digit with its code", cmd_encode)
    p.add_argument(
        "--pick",
        type=int,
        nargs="+",
        metavar="INDEX",
        help="test-set indices to use in the digit table instead of each digit's first image",
    )

    p = analysis_parser("generate", "(d) decode latent points into digits", cmd_generate)
    p.add_argument(
        "--z",
        type=float,
        nargs="+",
        action="append",
        metavar="Z",
        help="a latent point (repeat --z for more); default: 0.5 0.2, the exercise's example",
    )
    p.add_argument("--samples", type=_positive_int, metavar="N", help="also decode N draws from the prior N(0, I)")
    p.add_argument(
        "--manifold",
        type=_positive_int,
        nargs="?",
        const=15,
        metavar="N",
        help="also decode an N x N grid over Gaussian quantiles (default N: 15)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --samples (default: 0)")

    p = analysis_parser("interpolate", "(e) decode points on the segment between two digits' codes", cmd_interpolate)
    p.add_argument("--from-index", type=int, metavar="I", help="first test image (default: the first 3)")
    p.add_argument("--to-index", type=int, metavar="J", help="second test image (default: the first 8)")
    p.add_argument("--from-digit", type=int, metavar="D", help="use the first test image of digit D")
    p.add_argument("--to-digit", type=int, metavar="D", help="use the first test image of digit D")
    p.add_argument("--steps", type=int, default=10, help="points on the segment, endpoints included (default: 10)")
    p.add_argument("--allow-same-digit", action="store_true", help="allow two images of the same digit")

    p = analysis_parser("evaluate", "test-set ELBO and importance-weighted log-likelihood bound", cmd_evaluate)
    p.add_argument(
        "--samples", type=_positive_int, default=1000, metavar="K", help="importance samples per image (default: 1000)"
    )
    p.add_argument("--images", type=_positive_int, metavar="N", help="evaluate the first N test images only")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default: 0)")

    p = sub.add_parser("report", help="train (or reuse) the exercise's three networks and write the report")
    p.add_argument("--epochs", type=_positive_int, help="epochs per network (default: 50)")
    p.add_argument("--out", type=Path, default=Path("report"), help="report directory (default: report)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the runs live (default: runs)")
    p.add_argument(
        "--iwae-samples",
        type=_positive_int,
        default=100,
        metavar="K",
        help="importance samples per test image for the log-likelihood bound (default: 100)",
    )
    p.add_argument("--train-subset", type=_positive_int, help="train on the first N images only (quick tries)")
    _add_data_dir(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("explore", help="explore the latent space of one or more runs in the browser")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--port", type=int, default=8000, help="default: 8000")
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    _add_data_dir(p)
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("kl", help="question 2: KL(N(MU1, SIGMA1^2) || N(MU2, SIGMA2^2)) in closed form")
    for name in ("mu1", "sigma1", "mu2", "sigma2"):
        p.add_argument(name, type=float, metavar=name.upper())
    p.add_argument("--check", action="store_true", help="also integrate the definition numerically")
    p.set_defaults(func=cmd_kl)
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
