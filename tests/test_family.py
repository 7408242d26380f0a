"""The family's extension point: what the package asks about a member is its `Family`; a new member, registered with
its Keras class, trains, evaluates and reports like a built-in one (docs/adding-a-model.md)."""

from __future__ import annotations

import csv
import re

import keras
import numpy as np
import pytest
from keras import ops

from vaelab.config import ModelConfig, make_config
from vaelab.errors import VaelabError
from vaelab.family import FAMILIES, Family
from vaelab.models import MODELS, VAE, reconstruction_loss, register
from vaelab.models.kl import gaussian_kl

FREE_BITS = 0.25  # λ, the nats each latent dimension's KL is held above in the objective


class FreeBitsFamily(Family):
    """The VAE with free bits (Kingma et al., 2016): each dimension's KL counts as at least λ nats in the objective,
    so the optimiser gains nothing by closing a dimension below it. Its ELBO is the VAE's."""

    name = "freebits"
    summary = "the ELBO with each dimension's KL held above λ nats"
    terms = ("free_bits_kl",)  # logged, so a column of history.csv and a figure of metrics.json's "test"

    def test_line(self, config, test) -> str:
        recon, kl = test["reconstruction_loss"], test["kl_loss"]
        return (
            f"objective {test['loss']:.2f} nats = reconstruction {recon:.2f} + free-bits KL "
            f"{test['free_bits_kl']:.2f}; -ELBO {recon + kl:.2f}"
        )


@keras.saving.register_keras_serializable(package="vaelab_tests")
class FreeBits(VAE):
    """The trainable free-bits VAE: the VAE's outputs, its loss reconstruction + sum_j max(λ, KL_j)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.free_bits_kl = keras.metrics.Mean(name="free_bits_kl")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        reconstruction = reconstruction_loss(
            y_pred.get("x", x), y_pred["x_decoded_mean"], self.likelihood, y_pred.get("x_log_scale")
        )
        kl_dims = gaussian_kl(y_pred["z_mean"], y_pred["z_log_var"])
        held = ops.sum(ops.maximum(kl_dims, FREE_BITS), axis=-1)
        self.free_bits_kl.update_state(held)
        self.track(reconstruction, ops.sum(kl_dims, axis=-1))
        return ops.mean(reconstruction + held)


@pytest.fixture
def free_bits():
    """The free-bits member, registered for one test and taken out after it."""
    register(FreeBitsFamily(), FreeBits)
    yield FAMILIES["freebits"]
    del FAMILIES["freebits"], MODELS["freebits"]


def test_every_member_has_both_halves():
    assert list(MODELS) == list(FAMILIES) == ["vae", "iwae", "cvae", "vamp", "betatc", "vqvae"]
    assert all(issubclass(model, VAE) for model in MODELS.values())


def test_each_member_answers_for_itself():
    answers = {
        name: (f.conditional, f.gaussian_latent, f.bound_of(ModelConfig(family=name)), f.terms)
        for name, f in FAMILIES.items()
    }
    assert answers == {
        "vae": (False, True, "log p(x)", ()),
        "iwae": (False, True, "log p(x)", ()),
        "cvae": (True, True, "log p(x|y)", ()),
        "vamp": (False, True, "log p(x)", ()),
        "betatc": (False, True, "log p(x)", ("mutual_information", "total_correlation", "dimension_kl")),
        "vqvae": (False, False, "log p(x), uniform prior over codes", ("codebook_loss", "commitment_loss",
                                                                     "perplexity")),
    }  # fmt: skip
    members = [("vae", {}), ("vae", {"k": 3}), ("iwae", {}), ("iwae", {"k": 7})]
    assert [ModelConfig(family=n, **o).samples for n, o in members] == [1, 3, 5, 7]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"family": "betatc", "k": 3},
         "--k is the number of codes per image of the vae and the iwae; leave it out with --model betatc"),
        ({"family": "vae", "k": 0}, "k must be an integer >= 1, got 0"),
        ({"family": "iwae", "codes": 8}, "--codes is the vqvae's codebook size; leave it out with --model iwae"),
        ({"family": "vqvae", "codes": 1}, "--codes, the vqvae's codebook size, must be an integer >= 2, got 1"),
        ({"family": "vamp", "pseudo_inputs": 0}, "pseudo_inputs must be an integer >= 1, got 0"),
        ({"family": "cvae", "dataset_size": 9},
         "dataset_size is the betatc's number of training images, not --model cvae's"),
        ({"family": "vqvae", "variance": "fixed"}, "the vqvae's codes are nearest codebook vectors"),
        ({"family": "betatc", "epsilon_std": 0.5}, "the betatc weighs codes drawn from q(z|x) itself"),
    ],
)  # fmt: skip
def test_a_member_checks_its_own_options(settings, message):
    with pytest.raises(VaelabError, match="^" + re.escape(message)):
        ModelConfig(**settings).validate()


def test_the_vae_and_the_iwae_own_k_each_with_its_default_and_words():
    from vaelab.cli.settings import model_settings
    from vaelab.explore.pagedata import _family_note
    from vaelab.limits import check_training

    vae, vae5, iwae = ModelConfig(), ModelConfig(k=5), ModelConfig(family="iwae")
    assert [m.samples for m in (vae, vae5, iwae)] == [1, 5, 5]
    notes = [m.member.loss_note(m) for m in (vae, vae5, iwae)]
    assert notes == [
        "the negative ELBO, reconstruction plus KL, with one z sampled per image",
        "the negative ELBO, reconstruction (averaged over K = 5 z drawn per image) plus KL",
        "the negative importance-weighted bound with K = 5 z sampled per image",
    ]
    assert [_family_note(m) for m in (vae, vae5, iwae)] == ["", " (k = 5)", " (iwae)"]
    k = next(s for s in model_settings() if s.name == "k")
    assert k.options["help"] == (
        "the vae's codes per image, its ELBO averaged over them (default: 1); "
        "the iwae's importance samples per image (default: 5)"
    )
    with pytest.raises(VaelabError, match="k must be an integer >= 1, got 0"):  # the vae's own option checks it
        ModelConfig(k=0).validate()
    with pytest.raises(VaelabError, match=r"of this vae would need .* lower --k or the network's widths or --batch"):
        check_training(make_config("mlp", k=10**7), 600)


def test_an_unregistered_member_is_refused_and_a_registered_one_taken(free_bits):
    assert ModelConfig(family="freebits").member is free_bits
    with pytest.raises(VaelabError, match="unknown model 'nobits'; choose one of: vae, iwae, cvae, vamp, betatc"):
        ModelConfig(family="nobits").validate()
    with pytest.raises(VaelabError, match="--k is the number of codes per image of the vae and the iwae"):
        ModelConfig(family="freebits", k=2).validate()


@pytest.mark.slow
def test_a_registered_member_trains_evaluates_and_reports(free_bits, tmp_path, mnist):
    from vaelab.analysis.evaluate import evaluate_and_save
    from vaelab.report.exercise import build_report
    from vaelab.run import load_run, run_dir_name
    from vaelab.training.loop import train

    config = make_config("mlp", model="freebits", epochs=1, train_subset=1000, test_subset=200)
    assert run_dir_name(config) == "mlp-freebits-epochs1-train-subset1000-test-subset200"
    run = train(config, tmp_path / run_dir_name(config), verbose=0)

    with open(run.path / "history.csv") as f:
        header = next(csv.reader(f))
    assert {"free_bits_kl", "val_free_bits_kl"} <= set(header)  # its term, a column beside the VAE's
    test = run.metrics["test"]
    assert test["bound"] == "log p(x)"
    latent_dim = config.model.latent_dim
    assert test["kl_loss"] <= test["free_bits_kl"] and test["free_bits_kl"] >= latent_dim * FREE_BITS
    assert np.isclose(test["loss"], test["reconstruction_loss"] + test["free_bits_kl"], atol=1e-3)
    assert "free-bits KL" in config.model.member.test_line(config.model, test)

    evaluation = evaluate_and_save(load_run(run.path), mnist, samples=2, images=200)
    assert evaluation.bound == "log p(x)" and evaluation.iwae >= evaluation.elbo - 1e-3

    rebuilt = load_run(run.path)
    assert rebuilt.config == run.config and rebuilt.metrics["evaluation"]["images"] == 200
    index = build_report([rebuilt], mnist, tmp_path / "report")
    report = (index.parent / "report.md").read_text()
    assert "--model freebits" in report  # the command that rebuilds it
    assert rebuilt.name in report and f"{evaluation.iwae:.2f}" in report  # its section, and its bound in the table
