"""`vaelab presets` and `vaelab train`: the networks, and training one into a run directory (or resuming it)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vaelab.cli._args import add_data_options, devices, nonempty, path, positive_int
from vaelab.cli.settings import add_settings, given, model_settings
from vaelab.errors import VaelabError
from vaelab.training import distribute


def register(sub) -> None:
    from vaelab.config import SNAPSHOTS

    p = sub.add_parser("presets", help="list the networks of the exercise")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train", help="train a preset into a run directory")
    add_settings(p, "train")
    p.add_argument(
        "--snapshots",
        action=argparse.BooleanOptionalAction,
        default=SNAPSHOTS,
        help="after every epoch, save fixed test images reconstructed and prior draws decoded (default: "
        f"{'on' if SNAPSHOTS else 'off'})",
    )
    p.add_argument("--out", type=path, help="run directory (default: runs/PRESET, plus any non-default setting)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", type=path, metavar="RUN", help="continue the run in RUN from its last epoch")
    add_data_options(p)
    g = p.add_argument_group(
        "devices and processes", "data-parallel training; the batch size is that of all devices together"
    )
    g.add_argument(
        "--devices", type=devices, default=1, metavar="N|all", help="devices of each process to train on (default: 1)"
    )
    g.add_argument(
        "--coordinator", type=nonempty, metavar="HOST:PORT", help="address of process 0: the processes meet there"
    )
    g.add_argument("--num-processes", type=positive_int, metavar="N", help="how many processes train together")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0..N-1 (0 writes the run)")
    g.add_argument(
        "--peer-timeout",
        type=positive_int,
        default=distribute.PEER_TIMEOUT_S,
        metavar="S",
        help=f"seconds a silent process counts as alive; then all stop (default: {distribute.PEER_TIMEOUT_S})",
    )
    p.set_defaults(func=cmd_train)


def cmd_presets(args: argparse.Namespace) -> int:
    """Lists the presets and what each sets."""
    from vaelab.config import PRESETS, default_likelihood

    for name, model in PRESETS.items():
        filters = f" filters={'x'.join(map(str, model.conv_filters))}" if model.arch == "convnet" else ""
        print(
            f"{name:15} arch={model.arch} variance={model.variance} latent_dim={model.latent_dim} "
            f"intermediate_dim={model.intermediate_dim}{filters}"
        )
    from vaelab import kernels

    print("\nmlp and convnet take images of any size and colour; conv and conv-fixed-var are the exercise's ConvNet")
    grey, colour = default_likelihood((1, 1, 1)), default_likelihood((1, 1, 3))
    print(f"for 28x28 grey images. The likelihood is {grey} for grey images and {colour} for colour (--likelihood).")
    print(f"The conv presets' layers, on this machine: {kernels.status()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Trains a preset into a run directory (or resumes one)."""
    from vaelab.config import make_config
    from vaelab.data import load_dataset
    from vaelab.run import epochs_in_words, run_data, run_dir_name
    from vaelab.training.loop import resume, train

    started = time.perf_counter()
    if args.resume is not None:
        if args.image_size is not None or args.grey:
            raise VaelabError("a resumed run reads its data as it was trained; leave out --image-size and --grey")
        model = model_settings()  # the member of the family and its options: config.json's
        if any(getattr(args, setting.name) is not None for setting in model):
            *flags, last = (setting.flag for setting in model)
            raise VaelabError(
                f"a resumed run keeps the model its config.json names; leave out {', '.join(flags)} and {last}"
            )
        data = run_data(args.resume, args.dataset, args.data_dir)
        run = resume(args.resume, epochs=args.epochs, data=data, snapshots=args.snapshots, devices=args.devices)
    else:
        data = load_dataset(args.dataset or "mnist", args.data_dir, image_size=args.image_size, grey=args.grey)
        config = make_config(
            **given(args, "train"),
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
    losses = run.config.model.member.test_line(run.config.model, test)  # each loss term named (vaelab.family)
    print(
        f"{run.config.preset}: {epochs_in_words(run.epoch)} in {time.perf_counter() - started:.1f} s wall "
        f"(training {run.metrics['train_seconds']:.1f} s); test {losses}; {saved}"
    )
    return 0
