"""The `vaelab` command: a thin layer over the Python API. Each subcommand parses, calls, prints."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from vaelab import _interrupt
from vaelab.errors import Interrupted, VaelabError
from vaelab.training import distribute

EXIT_USER_ERROR = VaelabError.exit_code
MAX_FIGURE_IMAGES = 1000  # images in one figure: more is unreadable and slow to draw


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


def _path(text: str) -> Path:
    """An argparse type: a non-empty path (an empty string would silently mean the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r} (a NUL byte cannot be in a path)")
    return Path(text)


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name or a path, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"expected a name or a path, got {text!r} (a NUL byte cannot be in either)")
    return text


def _host(text: str) -> str:
    """An argparse type: a host name or address, printable (a NUL or undecodable bytes cannot name a host)."""
    if not text.strip() or not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"expected a host name or an address, got {text!r}")
    try:
        text.encode("idna" if not text.isascii() else "ascii")
    except UnicodeError:
        raise argparse.ArgumentTypeError(f"expected a host name or an address, got {text!r}") from None
    return text


def _int_in(low: int, high: int, what: str):
    """An argparse type: an integer from `low` to `high`, else one line saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what}, an integer from {low} to {high}, got {text!r}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}: an integer from {low} to {high}, got {value}")
        return value

    return parse


def _sampler(text: str):
    """An argparse type: a sampler after training, prior, gmm or gmm:K (vaelab.analysis.samplers)."""
    from vaelab.analysis.samplers import parse_sampler

    try:
        return parse_sampler(text)
    except VaelabError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _devices(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'all', got {text!r}") from None


def _add_data_options(p: argparse.ArgumentParser, of_run: bool = False) -> None:
    """--dataset and --data-dir; unless `of_run` (a run reads its data as it was trained), --image-size and --grey,
    which say how a folder's or an .npz's images are read."""
    from vaelab.data import BUILTIN

    p.add_argument(
        "--dataset",
        metavar="NAME|PATH",
        type=_nonempty,
        default=None,
        help="the run's own dataset (a different one is refused)"
        if of_run
        else f"{', '.join(BUILTIN)} (default: mnist), a folder of images (one subfolder per class) or an .npz",
    )
    p.add_argument(
        "--data-dir",
        type=_path,
        default=None,
        help="directory holding (or to cache) the built-in datasets; default $VAELAB_DATA_DIR or ~/.cache/vaelab",
    )
    if not of_run:
        _add_image_options(p)


def _add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image-size",
        type=_positive_int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="pad and resize the images of a folder or an .npz to H x W pixels (default: their own size, one for all)",
    )
    p.add_argument("--grey", action="store_true", help="convert colour images to grey (ITU-R 601-2 luma)")


# --- commands -------------------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    """Fetches (if needed) and verifies a dataset, and says where it came from."""
    import numpy as np

    from vaelab.data import load_dataset
    from vaelab.data.shards import ShardedArray, verify

    data = load_dataset(args.dataset or "mnist", args.data_dir, image_size=args.image_size, grey=args.grey)
    if isinstance(data.x_train, ShardedArray):
        verify(data.path)  # training checks the shards' sizes only; here every byte is checked
    print(f"dataset: {data.title}")
    print(f"source:  {data.source}")
    print(f"file:    {data.path}")
    print(f"sha256:  {data.sha256} (of the four arrays)")
    for key, value in data.details.items():
        print(f"{key + ':':8} {value}")
    if data.class_names:
        names = ", ".join(data.class_names)
        print(f"classes: {len(data.class_names)} ({names if len(names) < 200 else names[:200] + ', ...'})")
    for name, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        h, w, c = data.image_shape
        line = f"{name + ':':8} {x.shape[0]} images {h}x{w}{' grey' if c == 1 else f'x{c} colour'} {x.dtype}"
        if y is not None and data.class_names:
            counts = " ".join(str(c) for c in np.bincount(y, minlength=len(data.class_names)))
            line += f"; per {data.class_word} {_range(data.class_names)}: {counts}"
        else:
            line += "; no labels"
        print(line)
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    """Writes a dataset as shards that training streams from disk (`vaelab.data.shards`)."""
    from vaelab.data.shard_writer import convert

    *sources, out = args.paths
    if not sources:
        raise VaelabError("give the source(s), then the directory for the shards: vaelab data convert SRC DIR")
    manifest = convert(
        sources,
        out,
        data_dir=args.data_dir,
        image_size=args.image_size,
        grey=args.grey,
        shard_rows=args.shard_size,
        overwrite=args.overwrite,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    for key, entry in manifest["arrays"].items():
        print(f"{key + ':':8} {entry['shape'][0]} rows in {len(entry['shards'])} shards")
    print(f"sha256:  {manifest['sha256']} (of the four arrays)")
    print(f"wrote {out}; train on it with `vaelab train --dataset {out}`")
    return 0


def _range(names: tuple[str, ...]) -> str:
    return f"{names[0]}-{names[-1]}" if names == tuple(str(k) for k in range(len(names))) else "in the order above"


def cmd_presets(args: argparse.Namespace) -> int:
    """Lists the presets and what each sets."""
    from vaelab.config import PRESETS

    for name, model in PRESETS.items():
        filters = f" filters={'x'.join(map(str, model.conv_filters))}" if model.arch == "convnet" else ""
        print(
            f"{name:15} arch={model.arch} variance={model.variance} latent_dim={model.latent_dim} "
            f"intermediate_dim={model.intermediate_dim}{filters}"
        )
    from vaelab import kernels

    print("\nmlp and convnet take images of any size and colour; conv and conv-fixed-var are the exercise's ConvNet")
    print("for 28x28 grey images. The likelihood is bernoulli for grey images and logistic for colour (--likelihood).")
    print(f"The conv presets' layers, on this machine: {kernels.status()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Trains a preset into a run directory (or resumes one)."""
    from vaelab.config import make_config
    from vaelab.data import load_dataset
    from vaelab.run import run_data, run_dir_name
    from vaelab.training.loop import resume, train

    started = time.perf_counter()
    if args.resume is not None:
        if args.image_size is not None or args.grey:
            raise VaelabError("a resumed run reads its data as it was trained; leave out --image-size and --grey")
        if any(v is not None for v in (args.model, args.k, args.pseudo_inputs, args.codes)):
            raise VaelabError(
                "a resumed run keeps the model its config.json names; leave out --model, --k, --pseudo-inputs and "
                "--codes"
            )
        data = run_data(args.resume, args.dataset, args.data_dir)
        run = resume(args.resume, epochs=args.epochs, data=data, snapshots=args.snapshots, devices=args.devices)
    else:
        data = load_dataset(args.dataset or "mnist", args.data_dir, image_size=args.image_size, grey=args.grey)
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
            hidden=args.hidden,
            activation=args.activation,
            likelihood=args.likelihood,
            scale=args.scale,
            filters=args.filters,
            beta=args.beta,
            kl_warmup=args.kl_warmup,
            lr_decay_epochs=args.lr_decay_epochs,
            model=args.model,
            k=args.k,
            pseudo_inputs=args.pseudo_inputs,
            codes=args.codes,
            dataset=data.name,
            image_size=args.image_size,
            grey=args.grey,
            image_shape=data.image_shape,
        )
        out = args.out or Path("runs") / run_dir_name(config)
        run = train(config, out, overwrite=args.overwrite, data=data, snapshots=args.snapshots, devices=args.devices)
    test = run.metrics["test"]
    index, count = distribute.process()
    saved = f"run saved in {run.path}" if index == 0 else f"process {index} of {count}; process 0 saved the run"
    print(
        f"{run.config.preset}: {run.epoch} epochs in {time.perf_counter() - started:.1f} s wall "
        f"(training {run.metrics['train_seconds']:.1f} s); test {_test_losses(test, run.config.model)}; {saved}"
    )
    return 0


def _test_losses(test: dict, model) -> str:
    """The test figures after training, each loss term named: the member's `test_line` (vaelab.family)."""
    return model.member.test_line(model, test)


def _load(args: argparse.Namespace):
    """The run named on the command line, its data, and the output directory (default RUN/analysis)."""
    from vaelab.run import load_run

    run = load_run(args.run)
    if run.epoch == 0:
        raise VaelabError(f"{args.run} has no completed epoch yet; train it with `vaelab train --resume {args.run}`")
    out = args.out or Path(args.run) / "analysis"
    return run, run.load_data(args.dataset, args.data_dir), out


def _gaussian(run, command: str) -> None:
    """Refuses a vqvae in a command that draws or walks a Gaussian latent space."""
    if not run.config.model.member.gaussian_latent:
        raise VaelabError(
            f"vaelab {command} maps a Gaussian latent space, and a {run.config.model.family}'s codes are codebook "
            "indices; use "
            f"`vaelab evaluate {run.path}` (code usage) or `vaelab generate {run.path} --samples N`"
        )


def _wrote(*paths: Path) -> None:
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)


def cmd_encode(args: argparse.Namespace) -> int:
    """(c) Encodes the test set: the latent map and the one-image-per-class table."""
    from vaelab.analysis import latent as analysis
    from vaelab.analysis.figures import draw_run_figures

    run, data, out = _load(args)
    _gaussian(run, "encode")
    figures = draw_run_figures(run, data, out, parts=["encode"], picks=args.pick)
    if figures.table:
        print(analysis.table_markdown(figures.table, data.class_word))
    else:
        print(f"{data.title} has no labels: no table of one image per class, only the latent map")
    _wrote(*figures.files.values())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """(d) Decodes latent points, prior samples or the manifold grid into images."""
    from vaelab.analysis import latent as analysis
    from vaelab.analysis.figures import draw_run_figures, exercise_point
    from vaelab.analysis.samplers import gaussian_latent, sampler

    run, data, out = _load(args)
    model = run.config.model
    if not model.member.gaussian_latent:
        if args.sampler is not None and args.sampler.kind != "prior":
            gaussian_latent(run, str(args.sampler))
        return _generate_codes(run, data, args, out)
    samples = args.samples or 0
    if args.label is not None or model.conditional:
        run = _with_label(run, data, args.label)
    if (args.label is not None or model.conditional or args.sampler) and not (args.z or args.samples or args.manifold):
        samples = LABEL_SAMPLES  # a class's, or a sampler's, draws by default
    asked = args.z or samples or args.manifold
    z = args.z if args.z else (None if asked else exercise_point(model.latent_dim))
    drawn = sampler(run, args.sampler, data, log=_log) if args.sampler and samples else None
    figures = draw_run_figures(
        run,
        data,
        out,
        parts=["generate"],
        z=z,
        samples=samples,
        seed=args.seed,
        manifold=args.manifold or 0,
        sampler=drawn,
    )
    for point in figures.z if figures.z is not None else []:
        print(f"z = {analysis.format_point(point)}")
    _wrote(*figures.files.values())
    return 0


LABEL_SAMPLES = 20  # draws `vaelab generate RUN --label C` (or --sampler S) decodes when asked for nothing else


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _generate_codes(run, data, args: argparse.Namespace, out: Path) -> int:
    """A vqvae's generate: each --z is L codebook indices, decoded; --samples N (alone: LABEL_SAMPLES) draws codes
    from the run's learned prior (`vaelab train-prior`), or from the uniform prior where it has none."""
    import numpy as np

    from vaelab.analysis.figures import draw_code_figures

    model = run.config.model
    k = model.codebook_size
    if args.manifold or args.label is not None:
        raise VaelabError(
            f"{run.name} is a vqvae: its codes are {model.latent_dim} indices into {model.codebook_size} codebook "
            "vectors, with no Gaussian grid and no labels; give --samples N or --z with the indices"
        )
    codes = None
    if args.z:
        codes = np.asarray([p for p in args.z if len(p) == model.latent_dim], np.float64)
        if len(codes) != len(args.z) or np.any((codes % 1 != 0) | (codes < 0) | (codes >= k)):
            raise VaelabError(f"a vqvae's --z is {model.latent_dim} codebook indices, integers from 0 to {k - 1}")
    samples = args.samples or (0 if args.z else LABEL_SAMPLES)
    figures = draw_code_figures(run, data, out, parts=["generate"], codes=codes, samples=samples, seed=args.seed)
    for drawn in (figures.z, figures.sample_codes):
        for row in drawn if drawn is not None else []:
            print("codes = " + " ".join(str(c) for c in row))
    _wrote(*figures.files.values())
    return 0


def _with_label(run, data, label: int | None):
    """The run, set to generate class `label` (a cvae's --label); one line for a label the run cannot take."""
    import dataclasses

    model = run.config.model
    if not model.conditional:
        raise VaelabError(
            f"--label picks the class a cvae generates; {run.name} (--model {model.family}) has no labels"
        )
    if label is None:
        names = f" ({_range(data.class_names)})" if data.class_names else ""
        raise VaelabError(f"{run.name} is a {model.family}: say which class to generate with --label C{names}")
    if not 0 <= label < model.classes:
        raise VaelabError(f"--label must be a class from 0 to {model.classes - 1}, got {label}")
    return dataclasses.replace(run, label=label)


def cmd_interpolate(args: argparse.Namespace) -> int:
    """(e) Interpolates between two test images of different classes through the latent space."""
    from vaelab.analysis import latent as analysis
    from vaelab.analysis.figures import draw_run_figures

    run, data, out = _load(args)
    _gaussian(run, "interpolate")
    pair = analysis.pick_pair(
        data,
        from_index=args.from_index,
        to_index=args.to_index,
        from_class=args.from_class,
        to_class=args.to_class,
        allow_same_class=args.allow_same_class,
    )
    figures = draw_run_figures(run, data, out, parts=["interpolate"], pair=pair, steps=args.steps)
    interp = figures.interpolation
    print(
        f"from test #{interp.start_index} ({interp.start_name}) at {analysis.format_point(interp.z_start)} "
        f"to test #{interp.end_index} ({interp.end_name}) at {analysis.format_point(interp.z_end)}:"
    )
    print(analysis.points_markdown(interp.points))
    _wrote(*figures.files.values())
    return 0


def _wants_disentanglement(args: argparse.Namespace, run, data) -> bool:
    """Whether `vaelab evaluate` scores disentanglement: asked for (an error without factors), or by default when the
    data has factors and the run has coordinates to score (not a vqvae)."""
    from vaelab.analysis.disentanglement import no_factors

    if args.disentanglement and data.factors is None:
        raise VaelabError(no_factors(data))
    gaussian = run.config.model.member.gaussian_latent
    if args.disentanglement and not gaussian:
        raise VaelabError(
            f"{run.name} is a {run.config.model.family}: its codes are codebook indices, not coordinates to score"
        )
    if args.disentanglement is None:
        return data.factors is not None and gaussian
    return args.disentanglement


def cmd_train_prior(args: argparse.Namespace) -> int:
    """Fits a prior over a vqvae's codes (vaelab.analysis.code_prior), saved as RUN/code_prior.npz, and compares the
    test images' codes' likelihood under it with the uniform prior's."""
    from vaelab.analysis.code_prior import train_prior, uniform_nll
    from vaelab.config import PriorConfig

    run, data, _ = _load(args)
    if not run.config.model.member.code_prior:
        raise VaelabError(
            f"{args.run} is a {run.config.model.family}, whose prior is fixed; train-prior fits a prior over a "
            "vqvae's codes: give a run trained with --model vqvae"
        )
    started = time.perf_counter()
    config = PriorConfig(**{k: v for k, v in {"epochs": args.epochs, "seed": args.seed}.items() if v is not None})
    prior = train_prior(run, data, config, verbose=args.verbose)
    test_codes = run.codes(data.x_test[: run.config.train.test_subset])
    nll = float(-prior.log_prob(test_codes).mean())
    print(
        f"{run.name}: prior over {run.config.model.latent_dim} codes trained {len(prior.history)} epochs in "
        f"{time.perf_counter() - started:.1f} s; the test codes' -log p(z) {nll:.2f} nats per image "
        f"(uniform prior: L log K = {uniform_nll(run):.2f}); saved {run.path / 'code_prior.npz'}"
    )
    print(f"`vaelab evaluate {args.run}` gives the bound on log p(x) with it", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Test-set ELBO, the importance-weighted bound on log p(x) and the latent diagnostics; saved into the run's
    metrics.json; the diagnostic figures (reconstructions, KL per dimension, traversal, snapshots) drawn."""
    from tqdm import tqdm

    from vaelab.analysis.evaluate import evaluate_and_save
    from vaelab.analysis.figures import draw_run_figures
    from vaelab.models.likelihoods import likelihood_note

    run, data, out = _load(args)
    tangle = _wants_disentanglement(args, run, data)  # before the slow part: no factors is an error at once
    bars = []  # the progress bar appears once the work has started (not before an error)

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="image", desc="evaluate", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        result = evaluate_and_save(
            run, data, samples=args.samples, images=args.images, seed=args.seed, progress=progress
        )
    finally:
        for bar in bars:
            bar.close()
    if not run.config.model.member.gaussian_latent:
        from vaelab.analysis.evaluate_codes import describe

        print("\n".join([f"{run.name}: {result.images:,} test images", *describe(result)]))
        print(f"written to {run.path / 'metrics.json'} ({result.seconds:.0f} s)")
        print(f"no diagnostic figures for a {run.config.model.family} yet", file=sys.stderr)
        return 0
    kind = "binarised" if result.binarized else "8-bit"
    shape = "x".join(str(d) for d in run.config.model.input_shape)
    print(
        f"{run.name}: {result.images:,} {kind} {shape} test images, K = {result.samples} importance samples, "
        f"{result.likelihood} likelihood"
    )
    train = run.config.train
    if train.beta != 1 or train.kl_warmup:
        test = run.metrics["test"]
        weighted = run.config.model.member.weighted_kl
        print(
            f"  trained with beta {train.beta:g}, KL warm-up {train.kl_warmup} epochs: its final objective was "
            f"{test['loss']:.2f} nats = reconstruction + {weighted.format(test.get('kl_weight', 1))}; the figures "
            "below are the true ELBO (KL weight 1)"
        )
    print(
        f"  ELBO                       {result.elbo:9.2f} nats = -(reconstruction {result.reconstruction_loss:.2f} "
        f"+ KL {result.kl_loss:.2f}{' estimated at the K samples' if run.config.model.member.kl_estimated else ''})"
    )
    print(
        f"  ELBO with z = z_mean       {result.elbo_at_mean:9.2f} nats (reconstruction "
        f"{result.reconstruction_loss_at_mean:.2f})"
    )
    print(f"  {result.bound + ' >= IWAE bound':26} {result.iwae:9.2f} nats, i.e. NLL <= {result.nll:.2f}")
    if result.bits_per_dim is not None:
        bits = f"{result.bits_per_dim:9.4f} (NLL bound; -ELBO: {result.elbo_bits_per_dim:.4f})"
        print(f"  bits per dimension         {bits}")
    print(f"  {likelihood_note(result.likelihood, result.binarized)}")
    dim = len(result.kl_per_dim)
    print(f"  active units               {result.active_units:9d} of {dim} (Cov_x(E_q[z_j]) > 0.01)")
    print(f"  KL per dimension, nats     {' '.join(f'{k:.2f}' for k in result.kl_per_dim)}")
    seconds = result.seconds
    if tangle:
        from vaelab.analysis.disentanglement import describe, score_and_save

        scores = score_and_save(run, data, images=args.images)
        print("\n".join(describe(scores)))
        seconds += scores.seconds
    print(f"written to {run.path / 'metrics.json'} ({seconds:.0f} s)")
    if run.config.model.conditional:
        print(f"no diagnostic figures for a {run.config.model.family} yet", file=sys.stderr)
        return 0
    figures = draw_run_figures(run, data, out, parts=["diagnose"])
    _wrote(*figures.files.values())
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    """Ranks runs and samplers by the quality of their samples: Fréchet distance, precision and recall against the
    test set in the features of the data set's classifier (vaelab.analysis.sample_quality)."""
    from vaelab._files import write_json, write_text
    from vaelab.analysis import plots
    from vaelab.analysis.sample_quality import measure_runs, plot_sample_quality, table_markdown
    from vaelab.run import load_run

    runs = [load_run(path) for path in args.runs]
    for run in runs:
        if not run.config.model.member.gaussian_latent:  # refused before the classifier's training, not after
            raise VaelabError(
                f"vaelab quality draws Gaussian codes from a prior or a mixture; {run.path} is a "
                f"{run.config.model.family}, whose codes are codebook indices: leave it out"
            )
        if run.epoch == 0:
            raise VaelabError(
                f"{run.path} has no completed epoch yet; train it with `vaelab train --resume {run.path}`"
            )
        if run.info["data_sha256"] != runs[0].info["data_sha256"]:
            raise VaelabError(f"{run.path} was trained on other data than {runs[0].path}; compare runs of one data set")
    data = runs[0].load_data(args.dataset, args.data_dir)
    samplers = [str(s) for s in dict.fromkeys(args.sampler)]
    rows, record = measure_runs(
        runs, data, samplers, samples=args.samples, seed=args.seed, data_dir=args.data_dir, log=_log
    )
    out = args.out
    title = f"{data.title}: {rows[0].images:,} samples each against the {len(data.x_test):,} test images"
    plots.save(plot_sample_quality(rows, title), out / "sample_quality.png")
    table = table_markdown(rows)
    write_text(out / "sample_quality.md", table + "\n")
    write_json(out / "sample_quality.json", {"rows": [r.as_dict() for r in rows], "classifier": record})
    print(table)
    print(
        f"features: the penultimate layer of vaelab's {data.title} classifier (test accuracy "
        f"{record['test_accuracy']:.4f}), not Inception's: compare these numbers only with each other"
    )
    _wrote(*(out / f"sample_quality.{ext}" for ext in ("png", "md", "json")))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Writes the run's encoder.keras and generator.keras (stock Keras layers, open without vaelab)."""
    from vaelab.run import load_run
    from vaelab.training.export import export_run

    run = load_run(args.run)
    if run.epoch == 0:
        raise VaelabError(f"{args.run} has no completed epoch yet; train it with `vaelab train --resume {args.run}`")
    for path in export_run(run, args.out):
        print(path)
    return 0


def cmd_kl(args: argparse.Namespace) -> int:
    """Question 2: the KL divergence of two normal distributions, in closed form (and checked numerically)."""
    import math

    from vaelab.models.kl import gaussian_kl_sigmas, kl_by_integration

    values = (args.mu1, args.sigma1, args.mu2, args.sigma2)
    if not all(math.isfinite(v) for v in values):
        raise VaelabError("MU1 SIGMA1 MU2 SIGMA2 must be finite numbers")
    if args.sigma1 <= 0 or args.sigma2 <= 0:
        raise VaelabError("SIGMA1 and SIGMA2 are standard deviations and must be > 0")
    if min(args.sigma1, args.sigma2) < sys.float_info.min:
        raise VaelabError(f"SIGMA1 and SIGMA2 must be at least {sys.float_info.min:.3g}, the smallest normal float64")
    kl = float(gaussian_kl_sigmas(*values))
    print(f"KL(N({args.mu1:g}, {args.sigma1:g}^2) || N({args.mu2:g}, {args.sigma2:g}^2))")
    print("  = log(sigma2/sigma1) + (sigma1^2 + (mu1 - mu2)^2) / (2 sigma2^2) - 1/2")
    print(f"  = {kl!r} nats (closed form)")
    if args.check:
        numeric = kl_by_integration(*values)
        if math.isfinite(numeric) and math.isfinite(kl):
            diff = abs(numeric - kl) / max(abs(kl), 1e-300)
            print(f"  = {numeric!r} nats (numerical integration of the definition; relative difference {diff:.1e})")
        else:
            print("  (the numerical integration cannot represent this case in float64: no check)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Trains (or reuses) mlp, mlp-fixed-var and conv (convnet for other images; a vqvae has no mlp-fixed-var) and
    writes the report answering the exercise."""
    from vaelab.config import TrainConfig
    from vaelab.report.exercise import report

    started = time.perf_counter()
    index = report(
        dataset=args.dataset or "mnist",
        out=args.out,
        runs_dir=args.runs_dir,
        epochs=args.epochs or TrainConfig.epochs,
        iwae_samples=args.iwae_samples,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        data_dir=args.data_dir,
        image_size=args.image_size,
        grey=args.grey,
        likelihood=args.likelihood,
        model=args.model,
        k=args.k,
        pseudo_inputs=args.pseudo_inputs,
        codes=args.codes,
        sampler=str(args.sampler),
    )
    print(f"report written to {index} and {index.with_name('report.md')} in {time.perf_counter() - started:.0f} s")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Trains and evaluates a grid of settings, then writes the comparison page."""
    from vaelab.sweep import sweep

    started = time.perf_counter()
    # one --model is a fixed setting (run names as before); several are an axis, compared per model
    models = args.model if args.model and len(args.model) > 1 else None
    axes = {"preset": args.preset, "model": models, "latent_dim": args.latent_dim, "beta": args.beta,
            "seed": args.seed}  # fmt: skip
    fixed = {"epochs": args.epochs, "kl_warmup": args.kl_warmup, "train_subset": args.train_subset,
             "test_subset": args.test_subset, "binarize": args.binarize or None,
             "likelihood": args.likelihood, "scale": args.scale,
             "model": args.model[0] if args.model and models is None else None, "k": args.k,
             "pseudo_inputs": args.pseudo_inputs, "codes": args.codes}  # fmt: skip
    points = sweep(
        {k: v for k, v in axes.items() if v is not None},
        args.out,
        fixed={k: v for k, v in fixed.items() if v is not None},
        dataset=args.dataset or "mnist",
        data_dir=args.data_dir,
        image_size=args.image_size,
        grey=args.grey,
        samples=args.iwae_samples,
        images=args.images,
        workers=args.workers,
        ray_address=args.ray,
    )
    print((args.out / "sweep.md").read_text().split("## Every point")[0].strip())
    failed = [p for p in points if p.status != "done"]
    print(f"\nwritten to {args.out / 'index.html'} in {time.perf_counter() - started:.0f} s")
    if failed:
        print(
            f"vaelab sweep: {len(failed)} of {len(points)} points failed ({failed[0].name}: {failed[0].error}); "
            "the others are done; see the table",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    """Serves the interactive latent-space explorer for one or more runs, or exports it as a static page."""
    from vaelab.explore import load_runs, serve

    if args.export is None:
        serve(args.runs, host=args.host, port=args.port, dataset=args.dataset, data_dir=args.data_dir)
        return 0
    from vaelab.explore import load_data
    from vaelab.explore.export import export

    runs = load_runs(args.runs)
    data = load_data(runs, args.dataset, args.data_dir)
    path, exported = export(runs, data, args.export, log=lambda m: print(m, file=sys.stderr))
    size = path.stat().st_size / 1e6
    print(f"vaelab explore: wrote {path} ({size:.2f} MB); open it in a browser, or put it on any web server")
    for run in exported:
        pad_left_out = not (run.encoder or run.code_grid)
        without = " (generator only: no drawing pad; `vaelab explore RUN` serves it)" if pad_left_out else ""
        print(f"  {run.name}: {run.bytes / 1e6:.2f} MB, weights as {run.dtype}{without}")
    return 0


# --- parser ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from vaelab import __version__
    from vaelab.config import (
        ACTIVATIONS,
        DEFAULT_FILTERS,
        IMPLEMENTATIONS,
        LIKELIHOODS,
        MAX_SEED,
        OPTIMIZERS,
        PRESETS,
        REPORT_IWAE_SAMPLES,
        SCALES,
        SNAPSHOTS,
        ModelConfig,
        PriorConfig,
        TrainConfig,
    )
    from vaelab.data.shards import SHARD_BYTES, SHARD_ROWS

    parser = _Parser(prog="vaelab", description="Train, explore and explain variational autoencoders on small images.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("data", help="fetch and verify a dataset (default MNIST); say where it came from")
    _add_data_options(p)
    p.set_defaults(func=cmd_data)
    data_sub = p.add_subparsers(dest="data_command", metavar="convert", parser_class=_Parser)
    c = data_sub.add_parser("convert", help="write a dataset as shards that training streams from disk")
    c.add_argument(
        "paths",
        nargs="+",
        type=_path,
        metavar="SRC [SRC ...] DIR",
        help="a dataset (mnist, fashion-mnist, a folder of images, an .npz) or several .npz files; then the "
        "directory to write",
    )
    c.add_argument(
        "--shard-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"images per shard (default: as many as fit in {SHARD_BYTES / 1e6:.0f} MB, {SHARD_ROWS} 28x28 grey ones)",
    )
    c.add_argument("--overwrite", action="store_true", help="replace shards already in DIR")
    c.add_argument("--data-dir", type=_path, default=None, help="where the built-in datasets are cached")
    _add_image_options(c)
    c.set_defaults(func=cmd_data_convert)

    p = sub.add_parser("presets", help="list the networks of the exercise")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train", help="train a preset into a run directory")
    p.add_argument("--preset", default="mlp", choices=list(PRESETS), help="network (default: mlp)")
    p.add_argument("--epochs", type=_positive_int, help=f"passes over the training set (default: {TrainConfig.epochs})")
    p.add_argument(
        "--batch-size", type=_positive_int, help=f"images per gradient step (default: {TrainConfig.batch_size})"
    )
    p.add_argument("--latent-dim", type=_positive_int, help=f"size of z (default: {ModelConfig.latent_dim})")
    p.add_argument("--seed", type=_int_in(0, MAX_SEED, "a seed"), help="random seed (default: 0)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default: {TrainConfig.optimizer}")
    p.add_argument("--learning-rate", type=float, help=f"default: {TrainConfig.learning_rate}")
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
    p.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        metavar="WIDTH",
        help="widths of the dense network's hidden layers, e.g. 200 200 "
        f"(default: one of {ModelConfig.intermediate_dim})",
    )
    p.add_argument(
        "--activation",
        choices=ACTIVATIONS,
        help=f"of the dense network's hidden layers (default: {ModelConfig.activation})",
    )
    p.add_argument(
        "--filters",
        type=_positive_int,
        nargs="+",
        metavar="WIDTH",
        help="the convnet preset's stride-2 blocks, each halving the image "
        f"(default: {' '.join(map(str, DEFAULT_FILTERS))})",
    )
    _add_likelihood_options(p, LIKELIHOODS, SCALES)
    _add_model_options(p)
    p.add_argument(
        "--beta", type=float, help=f"weight of the KL term in the objective (default: {TrainConfig.beta:g}, the ELBO)"
    )
    p.add_argument(
        "--kl-warmup",
        type=int,
        metavar="N",
        help=f"raise the KL weight linearly to beta over the first N epochs (default: {TrainConfig.kl_warmup}, none)",
    )
    p.add_argument(
        "--lr-decay-epochs",
        type=_positive_int,
        metavar="N",
        help="decay the learning rate as Burda et al. (2015), 8 stages compressed into N epochs (default: constant)",
    )
    p.add_argument(
        "--snapshots",
        action=argparse.BooleanOptionalAction,
        default=SNAPSHOTS,
        help="after every epoch, save fixed test images reconstructed and prior draws decoded (default: "
        f"{'on' if SNAPSHOTS else 'off'})",
    )
    p.add_argument("--out", type=_path, help="run directory (default: runs/PRESET, plus any non-default setting)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", type=_path, metavar="RUN", help="continue the run in RUN from its last epoch")
    _add_data_options(p)
    g = p.add_argument_group(
        "devices and processes", "data-parallel training; the batch size is that of all devices together"
    )
    g.add_argument(
        "--devices", type=_devices, default=1, metavar="N|all", help="devices of each process to train on (default: 1)"
    )
    g.add_argument(
        "--coordinator", type=_nonempty, metavar="HOST:PORT", help="address of process 0: the processes meet there"
    )
    g.add_argument("--num-processes", type=_positive_int, metavar="N", help="how many processes train together")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0..N-1 (0 writes the run)")
    g.add_argument(
        "--peer-timeout",
        type=_positive_int,
        default=distribute.PEER_TIMEOUT_S,
        metavar="S",
        help=f"seconds a silent process counts as alive; then all stop (default: {distribute.PEER_TIMEOUT_S})",
    )
    p.set_defaults(func=cmd_train)

    def analysis_parser(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("run", type=_path, metavar="RUN", help="run directory")
        p.add_argument("--out", type=_path, help="directory for the figures and tables (default: RUN/analysis)")
        _add_data_options(p, of_run=True)
        p.set_defaults(func=func)
        return p

    p = analysis_parser("encode", "(c) latent map of the test set and one image per class with its code", cmd_encode)
    p.add_argument(
        "--pick",
        type=int,
        nargs="+",
        metavar="INDEX",
        help="test-set indices to use in the class table instead of each class's first image",
    )

    p = analysis_parser("generate", "(d) decode latent points into images", cmd_generate)
    p.add_argument(
        "--z",
        type=float,
        nargs="+",
        action="append",
        metavar="Z",
        help="a latent point (repeat --z for more); default: 0.5 0.2, the exercise's example",
    )
    p.add_argument(
        "--samples",
        type=_int_in(1, MAX_FIGURE_IMAGES, "a number of samples"),
        metavar="N",
        help="also decode N draws from the prior (N(0, I); a vamp's VampPrior), or from --sampler",
    )
    p.add_argument(
        "--manifold",
        type=_int_in(2, 30, "a grid size"),
        nargs="?",
        const=15,
        metavar="N",
        help="also decode an N x N grid over Gaussian quantiles (default N: 15)",
    )
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1, "a seed"), default=0, help="seed for --samples (default: 0)")
    p.add_argument(
        "--label",
        type=int,
        metavar="C",
        help=f"a cvae's class to generate (alone: {LABEL_SAMPLES} prior draws of it); only a cvae takes it",
    )
    p.add_argument(
        "--sampler",
        type=_sampler,
        metavar="prior|gmm[:K]",
        help="where --samples come from: the model's prior (default), or a K-component Gaussian mixture fitted to "
        f"the training set's codes and saved in RUN as gmm.npz (default K: 10; alone: {LABEL_SAMPLES} draws)",
    )

    p = analysis_parser("interpolate", "(e) decode points on the segment between two images' codes", cmd_interpolate)
    p.add_argument("--from-index", type=int, metavar="I", help="first test image (default: the first 3)")
    p.add_argument("--to-index", type=int, metavar="J", help="second test image (default: the first 8)")
    p.add_argument(
        "--from-class", "--from-digit", metavar="C", help="use the first test image of class C (name or number)"
    )
    p.add_argument("--to-class", "--to-digit", metavar="C", help="use the first test image of class C (name or number)")
    p.add_argument("--steps", type=int, default=10, help="points on the segment, endpoints included (default: 10)")
    p.add_argument(
        "--allow-same-class", "--allow-same-digit", action="store_true", help="allow two images of the same class"
    )

    p = analysis_parser(
        "evaluate", "test-set ELBO, importance-weighted log-likelihood bound and latent diagnostics", cmd_evaluate
    )
    p.add_argument(
        "--samples", type=_positive_int, default=1000, metavar="K", help="importance samples per image (default: 1000)"
    )
    p.add_argument("--images", type=_positive_int, metavar="N", help="evaluate the first N test images only")
    p.add_argument(
        "--seed", type=_int_in(0, 2**32 - 1, "a seed"), default=0, help="seed of the importance samples (default: 0)"
    )
    p.add_argument(
        "--disentanglement",
        action=argparse.BooleanOptionalAction,
        help="score the codes against the data's known factors: MIG, DCI, FactorVAE score, SAP (default: when the "
        "data has factors: shapes, dsprites, an .npz with `factors`)",
    )

    p = sub.add_parser("train-prior", help="fit a learned prior over a vqvae run's codes (code_prior.npz)")
    p.add_argument("run", type=_path, metavar="RUN", help="run directory of a vqvae")
    p.add_argument("--epochs", type=_positive_int, help=f"at most (default: {PriorConfig.epochs}; stops earlier)")
    p.add_argument("--seed", type=int, help=f"of the held-out codes and the weights (default: {PriorConfig.seed})")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0, help="Keras' progress output (default: 0)")
    _add_data_options(p, of_run=True)
    p.set_defaults(func=cmd_train_prior, out=None)

    p = sub.add_parser("report", help="train (or reuse) the exercise's three networks and write the report")
    p.add_argument("--epochs", type=_positive_int, help=f"epochs per network (default: {TrainConfig.epochs})")
    p.add_argument("--out", type=_path, default=Path("report"), help="report directory (default: report)")
    p.add_argument("--runs-dir", type=_path, default=Path("runs"), help="where the runs live (default: runs)")
    p.add_argument(
        "--iwae-samples",
        type=_positive_int,
        default=REPORT_IWAE_SAMPLES,
        metavar="K",
        help=f"importance samples per test image for the log-likelihood bound (default: {REPORT_IWAE_SAMPLES})",
    )
    p.add_argument("--train-subset", type=_positive_int, help="train on the first N images only (quick tries)")
    p.add_argument(
        "--test-subset",
        type=_positive_int,
        metavar="N",
        help="validate, evaluate and draw on the first N test images only (quick tries; default: all)",
    )
    p.add_argument(
        "--likelihood",
        choices=LIKELIHOODS,
        help="p(x|z) of every network (default: bernoulli for grey images, logistic for colour)",
    )
    _add_model_options(p, "of every network")
    p.add_argument(
        "--sampler",
        type=_sampler,
        default="prior",
        metavar="prior|gmm[:K]",
        help="where the sample grids draw z: the prior (default), or a K-component mixture fitted to each run's "
        "training codes (saved in the run as gmm.npz)",
    )
    _add_data_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sweep", help="train and evaluate a grid of settings, and compare them on one page")
    p.add_argument("--preset", nargs="+", choices=list(PRESETS), help="networks (default: mlp)")
    p.add_argument(
        "--latent-dim", type=_positive_int, nargs="+", metavar="D", help="sizes of z (default: the preset's)"
    )
    p.add_argument("--beta", type=float, nargs="+", metavar="B", help="KL weights (default: 1)")
    p.add_argument("--seed", type=_int_in(0, MAX_SEED, "a seed"), nargs="+", metavar="S", help="seeds (default: 0)")
    p.add_argument("--epochs", type=_positive_int, help=f"epochs per point (default: {TrainConfig.epochs})")
    p.add_argument("--kl-warmup", type=int, metavar="N", help="KL warm-up epochs for every point (default: 0)")
    p.add_argument("--train-subset", type=_positive_int, help="train on the first N images only (quick tries)")
    p.add_argument("--test-subset", type=_positive_int, help="validate on the first N test images during training")
    p.add_argument("--binarize", action="store_true", help="dynamic binarisation for every point")
    _add_likelihood_options(p, LIKELIHOODS, SCALES)
    _add_model_options(p, "for every point", several=True)
    p.add_argument(
        "--iwae-samples", type=_positive_int, default=100, metavar="K", help="importance samples (default: 100)"
    )
    p.add_argument("--images", type=_positive_int, metavar="N", help="evaluate on the first N test images only")
    p.add_argument(
        "--workers", type=_positive_int, metavar="W", help="training processes at once (default: one per two cores)"
    )
    p.add_argument(
        "--ray", metavar="auto|ADDRESS", help="run each point as a Ray task on a cluster (pip install 'vaelab[ray]')"
    )
    p.add_argument("--out", type=_path, default=Path("sweep"), help="sweep directory (default: sweep)")
    _add_data_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("explore", help="explore the latent space of one or more runs in the browser")
    p.add_argument("runs", type=_path, nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--port", type=_int_in(1, 65535, "a TCP port"), default=8000, help="default: 8000")
    p.add_argument("--host", type=_host, default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    p.add_argument(
        "--export",
        type=_path,
        metavar="DIR",
        help="write the explorer as one static page, DIR/index.html (no server needed), instead of serving it",
    )
    _add_data_options(p, of_run=True)
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("quality", help="rank runs and samplers by sample quality: Fréchet distance, precision, recall")
    p.add_argument("runs", nargs="+", type=_path, metavar="RUN", help="run directories, all of one data set")
    p.add_argument(
        "--sampler",
        nargs="+",
        type=_sampler,
        default=["prior", "gmm"],
        metavar="prior|gmm[:K]",
        help="the samplers to compare on each run (default: prior gmm; gmm's fit is saved in RUN as gmm.npz)",
    )
    p.add_argument(
        "--samples", type=_positive_int, metavar="N", help="samples per run and sampler (default: the test set's size)"
    )
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1, "a seed"), default=0, help="seed of the draws (default: 0)")
    p.add_argument("--out", type=_path, default=Path("quality"), help="where to write the figure (default: quality)")
    _add_data_options(p, of_run=True)
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("export", help="write RUN's encoder and generator as .keras files plain Keras opens")
    p.add_argument("run", type=_path, metavar="RUN", help="run directory")
    p.add_argument("--out", type=_path, help="where to write encoder.keras and generator.keras (default: RUN)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("kl", help="question 2: KL(N(MU1, SIGMA1^2) || N(MU2, SIGMA2^2)) in closed form")
    # argparse takes "-1e3" for an option; let negative numbers in any float notation through as values
    p._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)
    for name in ("mu1", "sigma1", "mu2", "sigma2"):
        p.add_argument(name, type=float, metavar=name.upper())
    p.add_argument("--check", action="store_true", help="also integrate the definition numerically")
    p.set_defaults(func=cmd_kl)
    return parser


def _add_model_options(p: argparse.ArgumentParser, which: str = "", *, several: bool = False) -> None:
    """--model, the member of the VAE family (`several`: one or more, a sweep's axis), --k, the iwae's importance
    samples, --pseudo-inputs, the vamp's, and --codes, the vqvae's codebook size (vaelab.models)."""
    from vaelab.config import DEFAULT_CODES, DEFAULT_K, DEFAULT_PSEUDO_INPUTS, ModelConfig
    from vaelab.family import FAMILIES

    described = [f"{name} ({family.summary})" for name, family in FAMILIES.items()]
    members = f"{', '.join(described[:-1])} or {described[-1]}"
    p.add_argument(
        "--model",
        choices=tuple(FAMILIES),  # the built-in members and any registered since (vaelab.models.register)
        nargs="+" if several else None,
        help=f"the model{'s (several: compared side by side)' if several else ''} {which + ': ' if which else ''}"
        f"{members} (default: {ModelConfig.family})",
    )
    p.add_argument(
        "--k", type=_positive_int, metavar="K", help=f"the iwae's importance samples per image (default: {DEFAULT_K})"
    )
    p.add_argument(
        "--pseudo-inputs",
        type=_positive_int,
        metavar="N",
        help=f"the vamp's learned pseudo-inputs, its prior's mixture components (default: {DEFAULT_PSEUDO_INPUTS})",
    )
    p.add_argument(
        "--codes", type=_positive_int, metavar="K", help=f"the vqvae's codebook size (default: {DEFAULT_CODES})"
    )


def _add_likelihood_options(p: argparse.ArgumentParser, likelihoods: Sequence[str], scales: Sequence[str]) -> None:
    p.add_argument(
        "--likelihood",
        choices=likelihoods,
        help="p(x|z), the pixels' distribution (default: bernoulli for grey images, logistic for colour)",
    )
    p.add_argument(
        "--scale",
        choices=scales,
        help="the gaussian's sigma or the logistic's s: one learned number, or one per pixel (default: global)",
    )


EXIT_BUG = 3  # an error vaelab did not foresee: a bug; the traceback is written to a file


def main(argv: Sequence[str] | None = None) -> int:
    """The `vaelab` command. Errors are one line on stderr and an exit status: 2 for a mistake the user can
    fix, 130 for Ctrl-C, 3 for a bug (its traceback goes to a file that the line names), 4 when another
    process of a multi-process run went away."""
    if argv is None:  # the real command line: Ctrl-C ends it with status 130 from here on, wherever it lands
        _interrupt.leave_on_interrupt()
    try:
        import vaelab  # noqa: F401  (chooses the default Keras backend before anything imports Keras)

        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    _interrupt.leave_at_once_on_second_interrupt(args.command)
    code = distribute.finish(_run(args, argv))
    if argv is None and code == Interrupted.exit_code:  # its line is printed; XLA may still run the step in flight,
        _interrupt.leave(line="")  # and the interpreter's teardown around it has crashed: leave without one
    return code


COMPUTES = ("train", "encode", "generate", "interpolate", "evaluate", "export", "report", "explore", "quality")


def _start(args: argparse.Namespace) -> None:
    """Process-wide settings, made by the command line rather than the library: the processes of a
    multi-process run join, the CPU splits into devices (both before JAX starts), malloc is tuned on a CPU."""
    from vaelab.training._malloc import tune_malloc

    if args.command == "train":
        if distribute.wants_processes(args.coordinator, args.num_processes, args.process_id):
            distribute.initialize(args.coordinator, args.num_processes, args.process_id, peer_timeout=args.peer_timeout)
        if isinstance(args.devices, int):
            distribute.use_cpu_devices(args.devices)
    if args.command in COMPUTES and distribute.on_cpu():
        tune_malloc()


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Runs the command; returns its exit status, having printed any error as one line."""
    try:
        _start(args)
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
    except OSError as err:  # the file system refused something vaelab did not expect to fail: the environment's
        where = f" ({err.filename})" if err.filename else ""
        print(
            f"vaelab {args.command}: error: {err.strerror or err}{where}; check the path and the disk", file=sys.stderr
        )
        return EXIT_USER_ERROR
    except Exception as err:  # the last resort: one line, the traceback in a file
        where = _write_traceback(err)
        what = (str(err).splitlines() or [""])[0][:200]
        print(f"vaelab {args.command}: internal error ({type(err).__name__}: {what}); this is a bug in vaelab, "
              f"the full traceback is in {where}", file=sys.stderr)  # fmt: skip
        return EXIT_BUG
    finally:
        if argv is None:  # the real command line: a late Ctrl-C must not turn into a traceback at exit
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_traceback(err: BaseException) -> str:
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(err))
    try:
        fd, path = tempfile.mkstemp(prefix="vaelab-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
    except OSError:
        return "nowhere (the temporary directory is not writable)"
