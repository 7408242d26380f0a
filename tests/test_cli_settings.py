"""The run settings listed once (vaelab.cli.settings): train's, report's and sweep's flags built from one table, and
their values handed to the library by make_config's keywords."""

from __future__ import annotations

import inspect

import pytest

from vaelab import config
from vaelab.cli import build_parser
from vaelab.cli.settings import add_settings, given, names, settings, several
from vaelab.cli.sweep import axes_and_fixed


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_every_setting_is_a_keyword_make_config_takes():
    assert {s.name for s in settings()} <= {"preset", *config.run_settings()}
    assert len({s.flag for s in settings()}) == len(settings())


def test_train_with_no_flags_is_make_configs_defaults():
    assert config.make_config(**given(parse("train"), "train")) == config.make_config()


def test_train_hands_every_flag_to_make_config():
    args = parse("train", "--preset", "convnet", "--epochs", "3", "--latent-dim", "4", "--filters", "8", "16",
                 "--binarize", "--likelihood", "bernoulli", "--model", "iwae", "--k", "2", "--beta", "1")  # fmt: skip
    run = config.make_config(**given(args, "train"))
    assert (run.preset, run.train.epochs, run.model.latent_dim, run.model.filters) == ("convnet", 3, 4, (8, 16))
    assert (run.train.binarize, run.model.likelihood, run.model.family, run.model.k) == (True, "bernoulli", "iwae", 2)


def test_reports_settings_are_keywords_of_report():
    from vaelab.report.exercise import report

    assert set(names("report")) <= set(inspect.signature(report).parameters)


def test_the_sweeps_several_valued_settings_are_its_axes():
    from vaelab.sweep import AXES

    assert set(several("sweep")) == set(AXES)
    assert set(names("sweep")) - set(AXES) <= set(config.run_settings())  # the rest: fixed settings it accepts


def test_the_sweep_splits_its_flags_into_axes_and_fixed_settings():
    args = parse("sweep", "--model", "vqvae", "--codes", "8", "--latent-dim", "2", "4", "--epochs", "1", "--binarize")
    assert axes_and_fixed(args) == ({"latent_dim": [2, 4]}, {"model": "vqvae", "codes": 8, "epochs": 1,
                                                            "binarize": True})  # fmt: skip
    assert axes_and_fixed(parse("sweep", "--model", "vae", "iwae"))[0] == {"model": ["vae", "iwae"]}


def test_a_commands_help_names_its_own_use_of_a_setting():
    helps = {c: build_parser()._subparsers._group_actions[0].choices[c].format_help() for c in ("train", "sweep")}
    assert "passes over the training set (default: 50)" in helps["train"]
    assert "epochs per point (default: 50)" in helps["sweep"] and "--batch-size" not in helps["sweep"]


def test_choices_come_from_config_so_a_new_likelihood_is_offered_everywhere(monkeypatch):
    monkeypatch.setattr(config, "LIKELIHOODS", (*config.LIKELIHOODS, "new-likelihood"))
    for command in ("train", "report", "sweep"):
        args = parse(command, "--likelihood", "new-likelihood")
        assert given(args, command)["likelihood"] == "new-likelihood"


def test_only_and_skip_pick_the_flags_added():
    import argparse

    p = argparse.ArgumentParser()
    add_settings(p, "report", only=("epochs", "k"))
    add_settings(p, "report", skip=("epochs", "k"))
    flags = [a.option_strings[0] for a in p._actions[1:]]
    reports = [s.flag for s in settings() if s.report is not None]
    assert flags[:2] == ["--epochs", "--k"] and sorted(flags) == sorted(reports)
    with pytest.raises(SystemExit):
        p.parse_args(["--batch-size", "3"])  # not one of report's
