"""`vaelab encode`, `vaelab generate` and `vaelab interpolate`: parts (c), (d) and (e) of the exercise, the latent
space of one run."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.cli._args import MAX_FIGURE_IMAGES, SEED, add_run_parser, gaussian, int_in, load, log, sampler_spec, wrote
from vaelab.errors import VaelabError

LABEL_SAMPLES = 20  # draws `vaelab generate RUN --label C` (or --sampler S) decodes when asked for nothing else


def register(sub) -> None:
    p = add_run_parser(
        sub, "encode", "(c) latent map of the test set and one image per class with its code", cmd_encode
    )
    p.add_argument(
        "--pick",
        type=int,
        nargs="+",
        metavar="INDEX",
        help="test-set indices to use in the class table instead of each class's first image",
    )

    p = add_run_parser(sub, "generate", "(d) decode latent points into images", cmd_generate)
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
        type=int_in(1, MAX_FIGURE_IMAGES, "a number of samples"),
        metavar="N",
        help="also decode N draws from the prior (N(0, I); a vamp's VampPrior), or from --sampler",
    )
    p.add_argument(
        "--manifold",
        type=int_in(2, 30, "a grid size"),
        nargs="?",
        const=15,
        metavar="N",
        help="also decode an N x N grid over Gaussian quantiles (default N: 15)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed for --samples (default: 0)")
    p.add_argument(
        "--label",
        type=int,
        metavar="C",
        help=f"a cvae's class to generate (alone: {LABEL_SAMPLES} prior draws of it); only a cvae takes it",
    )
    p.add_argument(
        "--sampler",
        type=sampler_spec,
        metavar="prior|gmm[:K]",
        help="where --samples come from: the model's prior (default), or a K-component Gaussian mixture fitted to "
        f"the training set's codes and saved in RUN as gmm.npz (default K: 10; alone: {LABEL_SAMPLES} draws)",
    )

    p = add_run_parser(
        sub, "interpolate", "(e) decode points on the segment between two images' codes", cmd_interpolate
    )
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


def cmd_encode(args: argparse.Namespace) -> int:
    """(c) Encodes the test set: the latent map and the one-image-per-class table."""
    from vaelab.analysis import latent as analysis
    from vaelab.analysis.figures import draw_run_figures

    run, data, out = load(args)
    gaussian(run, "encode")
    figures = draw_run_figures(run, data, out, parts=["encode"], picks=args.pick)
    if figures.table:
        print(analysis.table_markdown(figures.table, data.class_word))
    else:
        print(f"{data.title} has no labels: no table of one image per class, only the latent map")
    wrote(*figures.files.values())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """(d) Decodes latent points, prior samples or the manifold grid into images."""
    from vaelab.analysis import latent as analysis
    from vaelab.analysis.figures import draw_run_figures, exercise_point
    from vaelab.analysis.samplers import gaussian_latent, sampler

    run, data, out = load(args)
    model = run.config.model
    if not model.member.gaussian_latent:
        if args.sampler is not None and args.sampler.kind != "prior":
            gaussian_latent(run, str(args.sampler))
        return _generate_codes(run, data, args, out)
    samples = args.samples or 0
    if args.label is not None or model.conditional:
        run = run.with_label(args.label, data.class_names)
    if (args.label is not None or model.conditional or args.sampler) and not (args.z or args.samples or args.manifold):
        samples = LABEL_SAMPLES  # a class's, or a sampler's, draws by default
    asked = args.z or samples or args.manifold
    z = args.z if args.z else (None if asked else exercise_point(model.latent_dim))
    drawn = sampler(run, args.sampler, data, log=log) if args.sampler and samples else None
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
    wrote(*figures.files.values())
    return 0


def _generate_codes(run, data, args: argparse.Namespace, out: Path) -> int:
    """A vqvae's generate: each --z is L codebook indices, decoded; --samples N (alone: LABEL_SAMPLES) draws codes
    from the run's learned prior (`vaelab train-prior`), or from the uniform prior where it has none."""
    from vaelab.analysis.figures import draw_code_figures

    model = run.config.model
    if args.manifold or args.label is not None:
        raise VaelabError(
            f"{run.name} is a vqvae: its codes are {model.latent_dim} indices into {model.codebook_size} codebook "
            "vectors, with no Gaussian grid and no labels; give --samples N or --z with the indices"
        )
    samples = args.samples or (0 if args.z else LABEL_SAMPLES)
    figures = draw_code_figures(run, data, out, parts=["generate"], codes=args.z, samples=samples, seed=args.seed)
    for drawn in (figures.z, figures.sample_codes):
        for row in drawn if drawn is not None else []:
            print("codes = " + " ".join(str(c) for c in row))
    wrote(*figures.files.values())
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    """(e) Interpolates between two test images of different classes through the latent space."""
    from vaelab.analysis import latent as analysis
    from vaelab.analysis.figures import draw_run_figures

    run, data, out = load(args)
    gaussian(run, "interpolate")
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
    wrote(*figures.files.values())
    return 0
