"""`vaelab data` and `vaelab data convert`: fetch and verify a dataset; write one as shards."""

from __future__ import annotations

import argparse
import sys

from vaelab.cli._args import Parser, add_data_options, add_image_options, image_keywords, path, positive_int
from vaelab.errors import VaelabError


def register(sub) -> None:
    from vaelab.data.shards import SHARD_BYTES, SHARD_ROWS

    p = sub.add_parser("data", help="fetch and verify a dataset (default MNIST); say where it came from")
    add_data_options(p)
    p.set_defaults(func=cmd_data)
    data_sub = p.add_subparsers(dest="data_command", metavar="convert", parser_class=Parser)
    c = data_sub.add_parser("convert", help="write a dataset as shards that training streams from disk")
    c.add_argument(
        "paths",
        nargs="+",
        type=path,
        metavar="SRC [SRC ...] DIR",
        help="a dataset (mnist, fashion-mnist, a folder of images, an .npz) or several .npz files; then the "
        "directory to write",
    )
    c.add_argument(
        "--shard-size",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"images per shard (default: as many as fit in {SHARD_BYTES / 1e6:.0f} MB, {SHARD_ROWS} 28x28 grey ones)",
    )
    c.add_argument("--overwrite", action="store_true", help="replace shards already in DIR")
    c.add_argument("--data-dir", type=path, default=None, help="where the built-in datasets are cached")
    add_image_options(c)
    c.set_defaults(func=cmd_data_convert)


def cmd_data(args: argparse.Namespace) -> int:
    """Fetches (if needed) and verifies a dataset, and says where it came from."""
    import numpy as np

    from vaelab.data import load_dataset
    from vaelab.data.dataset import class_range
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
            line += f"; per {data.class_word} {class_range(data.class_names)}: {counts}"
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
        **image_keywords(args),
        shard_rows=args.shard_size,
        overwrite=args.overwrite,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    for key, entry in manifest["arrays"].items():
        print(f"{key + ':':8} {entry['shape'][0]} rows in {len(entry['shards'])} shards")
    print(f"sha256:  {manifest['sha256']} (of the four arrays)")
    print(f"wrote {out}; train on it with `vaelab train --dataset {out}`")
    return 0
