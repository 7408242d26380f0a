"""`vaelab explore`: the latent space of one or more runs in the browser, served or exported as one page."""

from __future__ import annotations

import argparse
import sys

from vaelab.cli._args import add_data_options, host, int_in, path


def register(sub) -> None:
    p = sub.add_parser("explore", help="explore the latent space of one or more runs in the browser")
    p.add_argument("runs", type=path, nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--port", type=int_in(1, 65535, "a TCP port"), default=8000, help="default: 8000")
    p.add_argument("--host", type=host, default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    p.add_argument(
        "--export",
        type=path,
        metavar="DIR",
        help="write the explorer as one static page, DIR/index.html (no server needed), instead of serving it",
    )
    add_data_options(p, of_run=True)
    p.set_defaults(func=cmd_explore)


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
