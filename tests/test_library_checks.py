"""The checks the command line calls, in the library where Python users meet them too: a run with no completed
epoch, the KL's sigmas, generate's label and codes; the same one-line errors as `vaelab` prints."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from vaelab.analysis.latent import check_codes
from vaelab.analysis.sample_quality import check_runs
from vaelab.config import ModelConfig, RunConfig
from vaelab.data.dataset import class_range
from vaelab.errors import VaelabError
from vaelab.models.kl import check_normals
from vaelab.run import Run


def a_run(epoch: int = 1, path: str = "runs/x", data: str = "abc", **model) -> Run:
    """A Run as load_run returns it, without networks: the checks read only its path, configuration, data checksum
    and epoch."""
    config = RunConfig(model=ModelConfig(**model))
    return Run(path=Path(path), config=config, info={"data_sha256": data}, models=None, epoch=epoch)


def test_a_run_with_no_completed_epoch_is_refused_saying_how_to_train_it():
    with pytest.raises(VaelabError) as err:
        a_run(epoch=0).require_trained()
    assert str(err.value) == "runs/x has no completed epoch yet; train it with `vaelab train --resume runs/x`"
    run = a_run(epoch=1)
    assert run.require_trained() is run


def test_a_label_is_for_a_conditional_run_and_one_of_its_classes():
    with pytest.raises(
        VaelabError, match=r"^--label picks the class a cvae generates; x \(--model vae\) has no labels"
    ):
        a_run().with_label(3)
    cvae = a_run(family="cvae", classes=10)
    with pytest.raises(VaelabError, match=r"^x is a cvae: say which class to generate with --label C \(0-9\)$"):
        cvae.with_label(None, tuple("0123456789"))
    with pytest.raises(VaelabError, match=r"with --label C$"):
        cvae.with_label(None)
    for label in (-1, 10, True):
        with pytest.raises(VaelabError, match=r"^--label must be a class from 0 to 9, got"):
            cvae.with_label(label)
    labelled = cvae.with_label(np.int64(7))
    assert labelled.label == 7 and type(labelled.label) is int and cvae.label is None


def test_class_range_names_numbered_classes_by_their_ends():
    assert class_range(tuple("0123456789")) == "0-9"
    assert class_range(("cat", "dog")) == "in the order above"


def test_codes_are_codebook_indices_of_the_runs_length():
    codes = check_codes([[0, 3.0, 7], [1, 1, 1]], latent_dim=3, k=8)
    assert codes.dtype == np.int32 and codes.tolist() == [[0, 3, 7], [1, 1, 1]]
    assert check_codes(np.zeros((2, 3)), latent_dim=3, k=8).shape == (2, 3)
    for bad in ([[0, 1]], [[0, 1, 2], [0, 1]], [[0, 1, 8]], [[0, 1, -1]], [[0, 1.5, 2]], [[0, 1, float("nan")]]):
        with pytest.raises(VaelabError, match=r"^a vqvae's --z is 3 codebook indices, integers from 0 to 7$"):
            check_codes(bad, latent_dim=3, k=8)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((0, 1, float("nan"), 1), "MU1 SIGMA1 MU2 SIGMA2 must be finite numbers"),
        ((0, float("inf"), 0, 1), "MU1 SIGMA1 MU2 SIGMA2 must be finite numbers"),
        ((0, 0, 0, 1), "SIGMA1 and SIGMA2 are standard deviations and must be > 0"),
        ((0, 1, 0, -2), "SIGMA1 and SIGMA2 are standard deviations and must be > 0"),
        (
            (0, 1, 0, 1e-310),
            f"SIGMA1 and SIGMA2 must be at least {sys.float_info.min:.3g}, the smallest normal float64",
        ),
    ],
)
def test_the_kl_takes_two_normal_distributions_float64_computes_with(values, message):
    with pytest.raises(VaelabError) as err:
        check_normals(*values)
    assert str(err.value) == message


def test_the_kl_takes_finite_means_and_positive_sigmas():
    check_normals(-1e300, sys.float_info.min, 1e300, 1.0)


def test_quality_compares_trained_runs_with_gaussian_codes_on_one_data_set():
    check_runs([a_run(), a_run(path="runs/y")])
    with pytest.raises(VaelabError, match=r"^vaelab quality draws Gaussian codes .* runs/y is a vqvae, whose codes"):
        check_runs([a_run(), a_run(path="runs/y", family="vqvae")])
    with pytest.raises(VaelabError, match=r"^runs/y has no completed epoch yet"):
        check_runs([a_run(), a_run(path="runs/y", epoch=0)])
    with pytest.raises(VaelabError, match=r"^runs/y was trained on other data than runs/x; compare runs of one data"):
        check_runs([a_run(), a_run(path="runs/y", data="def")])


def test_a_sweep_fixes_any_run_setting_and_a_setting_is_swept_or_fixed(tmp_path):
    from vaelab.config import run_settings
    from vaelab.sweep import grid, sweep

    assert {"codes", "k", "pseudo_inputs", "filters", "lr_decay_epochs"} <= set(run_settings())
    (point,) = grid({"seed": [0]}, {"model": "vqvae", "codes": 8, "epochs": 1}, "mnist")
    assert point.error is None and point.config.model.codes == 8
    with pytest.raises(VaelabError, match=r"^beta: swept or fixed, not both: give each once$"):
        sweep({"beta": [1.0, 4.0]}, tmp_path, fixed={"beta": 2.0})
    with pytest.raises(VaelabError, match=r"^unknown fixed settings for a sweep: dataset, widths$"):
        sweep({"seed": [0]}, tmp_path, fixed={"widths": 2, "dataset": "mnist"})
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
