"""The run settings, listed once: each setting a run is configured with on the command line, as `make_config`'s
keyword, its flag, its type and its help. `vaelab train`, `vaelab report` and `vaelab sweep` build their flags from
this one table (`add_settings`) and hand the values back to the library as `make_config`'s keywords (`given`).

A setting's `options` are `vaelab train`'s `add_argument` keywords; `report` and `sweep` say whether those commands
take it (None: not) and what they spell differently (`{}`: nothing): report's help speaks of "every network", a
sweep's axis (vaelab.sweep.AXES) takes several values. The defaults in the help are read from vaelab.config and
from the family's options (vaelab.family), never restated.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from vaelab.cli._args import int_in, positive_int


@dataclass(frozen=True)
class Setting:
    """One run setting on the command line: `name` is make_config's keyword and the parsed argument's name."""

    name: str
    flag: str
    options: Mapping[str, Any]  # add_argument's keywords (help, type, choices, ...), as `vaelab train` takes it
    report: Mapping[str, Any] | None = None  # `vaelab report`'s differences from `options`; None: report has no flag
    sweep: Mapping[str, Any] | None = None  # `vaelab sweep`'s; None: the sweep has no flag

    def variant(self, command: str) -> Mapping[str, Any] | None:
        """`add_argument`'s keywords in `command`, or None where the command does not take the setting."""
        if command == "train":
            return self.options
        differences = getattr(self, command)
        return None if differences is None else {**self.options, **differences}

    def several(self, command: str) -> bool:
        """Whether `command` takes several values of it (a sweep's axis)."""
        return (self.variant(command) or {}).get("nargs") == "+"


def settings() -> tuple[Setting, ...]:
    """The table, in `vaelab train`'s order; built when a parser is, so that --model lists the members registered
    by then (vaelab.models.register)."""
    from vaelab.config import (
        ACTIVATIONS,
        DEFAULT_FILTERS,
        IMPLEMENTATIONS,
        LIKELIHOODS,
        MAX_SEED,
        OPTIMIZERS,
        PRESETS,
        SCALES,
        ModelConfig,
        TrainConfig,
        default_likelihood,
    )

    epochs = TrainConfig.epochs
    grey, colour = default_likelihood((1, 1, 1)), default_likelihood((1, 1, 3))
    likelihood_default = f"(default: {grey} for grey images, {colour} for colour)"
    return (
        Setting("preset", "--preset", {"default": "mlp", "choices": list(PRESETS), "help": "network (default: mlp)"},
                sweep={"default": None, "nargs": "+", "help": "networks (default: mlp)"}),
        Setting("epochs", "--epochs",
                {"type": positive_int, "help": f"passes over the training set (default: {epochs})"},
                report={"help": f"epochs per network (default: {epochs})"},
                sweep={"help": f"epochs per point (default: {epochs})"}),
        Setting("batch_size", "--batch-size",
                {"type": positive_int, "help": f"images per gradient step (default: {TrainConfig.batch_size})"}),
        Setting("latent_dim", "--latent-dim",
                {"type": positive_int, "help": f"size of z (default: {ModelConfig.latent_dim})"},
                sweep={"nargs": "+", "metavar": "D", "help": "sizes of z (default: the preset's)"}),
        Setting("seed", "--seed", {"type": int_in(0, MAX_SEED, "a seed"), "help": "random seed (default: 0)"},
                sweep={"nargs": "+", "metavar": "S", "help": "seeds (default: 0)"}),
        Setting("optimizer", "--optimizer", {"choices": OPTIMIZERS, "help": f"default: {TrainConfig.optimizer}"}),
        Setting("learning_rate", "--learning-rate", {"type": float, "help": f"default: {TrainConfig.learning_rate}"}),
        Setting("train_subset", "--train-subset",
                {"type": positive_int, "help": "train on the first N training images only"},
                report={"help": "train on the first N images only (quick tries)"},
                sweep={"help": "train on the first N images only (quick tries)"}),
        Setting("test_subset", "--test-subset",
                {"type": positive_int, "help": "validate on the first N test images only"},
                report={"metavar": "N", "help": "validate, evaluate and draw on the first N test images only (quick "
                        "tries; default: all)"},
                sweep={"help": "validate on the first N test images during training"}),
        Setting("binarize", "--binarize",
                {"action": "store_true",
                 "help": "dynamic binarisation: binary pixels drawn afresh each epoch; tested on a fixed binarised "
                 "set"},
                sweep={"help": "dynamic binarisation for every point"}),
        Setting("implementation", "--implementation",
                {"choices": IMPLEMENTATIONS,
                 "help": "conv layer pairs fused (default, faster) or the exercise's Keras layers one by one"}),
        Setting("hidden", "--hidden",
                {"type": positive_int, "nargs": "+", "metavar": "WIDTH",
                 "help": "widths of the dense network's hidden layers, e.g. 200 200 "
                 f"(default: one of {ModelConfig.intermediate_dim})"}),
        Setting("activation", "--activation",
                {"choices": ACTIVATIONS,
                 "help": f"of the dense network's hidden layers (default: {ModelConfig.activation})"}),
        Setting("filters", "--filters",
                {"type": positive_int, "nargs": "+", "metavar": "WIDTH",
                 "help": "the convnet preset's stride-2 blocks, each halving the image "
                 f"(default: {' '.join(map(str, DEFAULT_FILTERS))})"}),
        Setting("likelihood", "--likelihood",
                {"choices": LIKELIHOODS, "help": f"p(x|z), the pixels' distribution {likelihood_default}"},
                report={"help": f"p(x|z) of every network {likelihood_default}"}, sweep={}),
        Setting("scale", "--scale",
                {"choices": SCALES, "help": "the gaussian's sigma or the logistic's s: one learned number, or one per "
                 "pixel (default: global)"}, sweep={}),
        *model_settings(),
        Setting("beta", "--beta",
                {"type": float,
                 "help": f"weight of the KL term in the objective (default: {TrainConfig.beta:g}, the ELBO)"},
                sweep={"nargs": "+", "metavar": "B", "help": "KL weights (default: 1)"}),
        Setting("kl_warmup", "--kl-warmup",
                {"type": int, "metavar": "N", "help": "raise the KL weight linearly to beta over the first N epochs "
                 f"(default: {TrainConfig.kl_warmup}, none)"},
                sweep={"help": "KL warm-up epochs for every point (default: 0)"}),
        Setting("lr_decay_epochs", "--lr-decay-epochs",
                {"type": positive_int, "metavar": "N", "help": "decay the learning rate as Burda et al. (2015), 8 "
                 "stages compressed into N epochs (default: constant)"}),
    )  # fmt: skip


def model_settings() -> tuple[Setting, ...]:
    """--model, the member of the VAE family, and the options members own (the vae's and the iwae's --k, the vamp's
    --pseudo-inputs, the vqvae's --codes: each `Option` with a flag in vaelab.family), with their defaults."""
    from vaelab.config import ModelConfig
    from vaelab.family import FAMILIES

    described = [f"{name} ({family.summary})" for name, family in FAMILIES.items()]
    members = f"{', '.join(described[:-1])} or {described[-1]}"

    def model_help(which: str = "", several: bool = False) -> str:
        return (
            f"the model{'s (several: compared side by side)' if several else ''} {which + ': ' if which else ''}"
            f"{members} (default: {ModelConfig.family})"
        )

    owners: dict[str, list] = {}  # a field and the members that own it, each with its Option
    for family in FAMILIES.values():
        for option in family.options:
            owners.setdefault(option.field, []).append((family.name, option))
    metavars = {"k": "K", "pseudo_inputs": "N", "codes": "K"}
    options = []
    for field, metavar in metavars.items():
        owned = owners[field]
        text = "; ".join(f"the {name}'s {option.meaning or field} (default: {option.default})"
                         for name, option in owned)  # fmt: skip
        options.append(Setting(field, owned[0][1].flag, {"type": positive_int, "metavar": metavar, "help": text},
                               report={}, sweep={}))  # fmt: skip
    # the built-in members and any registered since (vaelab.models.register)
    model = Setting("model", "--model", {"choices": tuple(FAMILIES), "help": model_help()},
                    report={"help": model_help("of every network")},
                    sweep={"nargs": "+", "help": model_help("for every point", several=True)})  # fmt: skip
    return (model, *options)


def names(command: str) -> tuple[str, ...]:
    """The settings `command` takes, in the table's order."""
    return tuple(s.name for s in settings() if s.variant(command) is not None)


def several(command: str) -> tuple[str, ...]:
    """The settings `command` takes several values of (a sweep's axes)."""
    return tuple(s.name for s in settings() if s.several(command))


def add_settings(
    parser: argparse.ArgumentParser, command: str, only: Collection[str] | None = None, skip: Collection[str] = ()
) -> None:
    """Adds `command`'s flags for the run settings (`only` those named, where given; not those in `skip`), in the
    table's order."""
    for setting in settings():
        variant = setting.variant(command)
        if variant is not None and (only is None or setting.name in only) and setting.name not in skip:
            parser.add_argument(setting.flag, **variant)


def given(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The run settings `command` took, by make_config's keywords; None where not given (a switch left off too)."""
    values = {}
    for name in names(command):
        value = getattr(args, name)
        values[name] = None if value is False else value  # a switch left off: make_config's default
    return values
