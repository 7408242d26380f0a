"""Configuration: presets, validation, the JSON round trip."""

from __future__ import annotations

import pytest

from vaelab.config import PRESETS, RunConfig, make_config
from vaelab.errors import VaelabError


def test_presets_are_the_exercises_networks():
    assert PRESETS["mlp"].intermediate_dim == 256 and PRESETS["mlp"].variance == "learned"
    assert PRESETS["mlp-fixed-var"].variance == "fixed"
    assert PRESETS["conv"].arch == "conv" and PRESETS["conv"].intermediate_dim == 16
    assert PRESETS["conv-fixed-var"].arch == "conv" and PRESETS["conv-fixed-var"].variance == "fixed"


def test_defaults_follow_the_course_script():
    train = make_config("mlp").train
    assert (train.epochs, train.batch_size, train.optimizer, train.learning_rate) == (50, 100, "rmsprop", 1e-3)


def test_config_survives_a_json_round_trip():
    import json

    config = make_config("conv", latent_dim=3, epochs=7, seed=5, optimizer="adam")
    assert RunConfig.from_dict(config.to_dict()) == config
    config = make_config("mlp", hidden=[200, 200], activation="tanh", beta=4, kl_warmup=10, lr_decay_epochs=100)
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.model.hidden == (200, 200) and again.train.beta == 4.0


def test_a_config_of_older_vaelab_loads_with_the_defaults_of_the_new_settings():
    old = make_config("mlp").to_dict()
    for name in ("hidden", "activation"):
        del old["model"][name]
    for name in ("beta", "kl_warmup", "lr_decay_epochs"):
        del old["train"][name]
    config = RunConfig.from_dict(old)
    assert config == make_config("mlp")
    assert (config.train.beta, config.train.kl_warmup, config.model.hidden_widths) == (1.0, 0, (256,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "resnet"}, "unknown preset 'resnet'; choose one of: mlp, mlp-fixed-var, conv"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"latent_dim": 0}, "latent_dim must be an integer >= 1"),
        ({"batch_size": -5}, "batch_size must be an integer >= 1"),
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd'"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number > 0, got inf"),
        ({"color": "red"}, "unknown training settings: color"),
        ({"hidden": [200, 0]}, "a hidden layer's width must be an integer >= 1, got 0"),
        ({"hidden": []}, "hidden must list one or more layer widths"),
        ({"activation": "sigmoid"}, "unknown activation 'sigmoid'; choose one of: relu, tanh"),
        ({"preset": "conv", "hidden": [200]}, "--hidden and --activation shape the dense network"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(VaelabError, match=message.replace("(", r"\(")):
        make_config(**kwargs)


def test_a_config_file_of_another_shape_is_refused():
    with pytest.raises(VaelabError, match="not a vaelab run configuration"):
        RunConfig.from_dict({"preset": "mlp"})
