"""`vaelab quality` and `vaelab export`: runs compared by their samples; a run's networks as plain Keras files."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaelab.cli._args import SEED, add_data_options, log, path, positive_int, sampler_spec, wrote


def register(sub) -> None:
    p = sub.add_parser("quality", help="rank runs and samplers by sample quality: Fréchet distance, precision, recall")
    p.add_argument("runs", nargs="+", type=path, metavar="RUN", help="run directories, all of one data set")
    p.add_argument(
        "--sampler",
        nargs="+",
        type=sampler_spec,
        default=["prior", "gmm"],
        metavar="prior|gmm[:K]",
        help="the samplers to compare on each run (default: prior gmm; gmm's fit is saved in RUN as gmm.npz)",
    )
    p.add_argument(
        "--samples", type=positive_int, metavar="N", help="samples per run and sampler (default: the test set's size)"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the draws (default: 0)")
    p.add_argument("--out", type=path, default=Path("quality"), help="where to write the figure (default: quality)")
    add_data_options(p, of_run=True)
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("export", help="write RUN's encoder and generator as .keras files plain Keras opens")
    p.add_argument("run", type=path, metavar="RUN", help="run directory")
    p.add_argument("--out", type=path, help="where to write encoder.keras and generator.keras (default: RUN)")
    p.set_defaults(func=cmd_export)


def cmd_quality(args: argparse.Namespace) -> int:
    """Ranks runs and samplers by the quality of their samples: Fréchet distance, precision and recall against the
    test set in the features of the data set's classifier (vaelab.analysis.sample_quality)."""
    from vaelab._files import write_json, write_text
    from vaelab.analysis import plots
    from vaelab.analysis.sample_quality import check_runs, measure_runs, plot_sample_quality, table_markdown
    from vaelab.run import load_run

    runs = [load_run(path) for path in args.runs]
    check_runs(runs)  # before their data is read and verified
    data = runs[0].load_data(args.dataset, args.data_dir)
    samplers = [str(s) for s in dict.fromkeys(args.sampler)]
    rows, record = measure_runs(
        runs, data, samplers, samples=args.samples, seed=args.seed, data_dir=args.data_dir, log=log
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
    wrote(*(out / f"sample_quality.{ext}" for ext in ("png", "md", "json")))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Writes the run's encoder.keras and generator.keras (stock Keras layers, open without vaelab)."""
    from vaelab.run import load_run
    from vaelab.training.export import export_run

    run = load_run(args.run).require_trained()
    for file in export_run(run, args.out):
        print(file)
    return 0
