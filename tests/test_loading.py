"""Loading a run skips computing initial weights its checkpoint replaces (`build_models(initialize=False)`): the
loaded networks equal those built the old way, with Keras' random initializers, then loaded; a network built to
train still starts from the seeded random weights. A finished run published without its optimizer's state
(`drop_optimizer_state`) loads and evaluates as before."""

from __future__ import annotations

import dataclasses
import shutil

import keras
import numpy as np
import pytest

from vaelab._lock import DirectoryLock
from vaelab.analysis.evaluate import evaluate
from vaelab.config import ModelConfig
from vaelab.errors import VaelabError
from vaelab.models import build_models
from vaelab.models.networks import Unset, unset_weights
from vaelab.run import CHECKPOINT, METRICS, drop_optimizer_state, load_checkpoint, load_run, save_checkpoint

FAMILIES = {
    "mlp": ModelConfig(arch="mlp", latent_dim=3, intermediate_dim=16, image_shape=(28, 28, 1)),
    "convnet": ModelConfig(arch="convnet", latent_dim=3, intermediate_dim=16, image_shape=(16, 16, 3), filters=(4, 8)),
    "vamp": ModelConfig(arch="mlp", latent_dim=3, intermediate_dim=16, image_shape=(28, 28, 1), family="vamp"),
    "vqvae": ModelConfig(arch="mlp", latent_dim=4, intermediate_dim=16, image_shape=(28, 28, 1), family="vqvae"),
}


def _same_networks(loaded, reference) -> None:
    """Every variable of the two models equal bit for bit, under the same paths."""
    assert [v.path for v in loaded.vae.variables] == [v.path for v in reference.vae.variables]
    for ours, theirs in zip(loaded.vae.variables, reference.vae.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=ours.path)


def test_a_loaded_run_equals_one_built_with_random_weights_then_loaded(small_run):
    old = build_models(small_run.config.model, seed=small_run.config.train.seed, initialize=True)
    load_checkpoint(small_run.path, old.vae)
    new = load_run(small_run.path)
    _same_networks(new.models, old)
    x = (np.random.default_rng(0).uniform(size=(7, *small_run.config.model.input_shape)) < 0.3).astype(np.float32)
    for ours, theirs in zip(new.encoder.predict(x, verbose=0), old.encoder.predict(x, verbose=0), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    z = np.random.default_rng(1).normal(size=(5, small_run.config.model.latent_dim)).astype(np.float32)
    np.testing.assert_array_equal(new.generator.predict(z, verbose=0), old.generator.predict(z, verbose=0))


@pytest.mark.parametrize(
    "family", [pytest.param(f, marks=pytest.mark.slow) if f == "convnet" else f for f in FAMILIES]
)  # the convnet's random initial weights take 20 s to compile: what loading now skips
def test_a_checkpoint_loads_the_same_into_an_unset_network(family, tmp_path):
    config = FAMILIES[family]
    trained = build_models(config, seed=5)
    for k, variable in enumerate(trained.vae.variables):  # weights no initializer gives: a checkpoint's
        if "float" in str(variable.dtype):
            variable.assign(np.asarray(variable) + 0.01 * (k + 1))
    save_checkpoint(tmp_path, trained.vae, None, epoch=1)
    old, new = build_models(config, seed=5), build_models(config, seed=5, initialize=False)
    for models in (old, new):
        assert load_checkpoint(tmp_path, models.vae) == 1
    _same_networks(new, old)
    _same_networks(new, trained)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_network_built_to_train_starts_from_its_seeded_random_weights(family):
    config = FAMILIES[family]
    with unset_weights():
        unset = build_models(config, seed=3)
    first, again = build_models(config, seed=3), build_models(config, seed=3)
    _same_networks(first, again)  # the context is left: random weights again, the same for the same seed
    for variable, zero in zip(first.vae.variables, unset.vae.variables, strict=True):
        if variable.path.endswith("/kernel") or variable.path.split("/")[-1] in ("logits", "codebook"):
            assert np.all(np.asarray(zero) == 0), variable.path
            assert np.std(np.asarray(variable)) > 0, variable.path
    other = build_models(config, seed=4)
    kernels = [
        (v, w) for v, w in zip(first.vae.variables, other.vae.variables, strict=True) if v.path.endswith("kernel")
    ]
    assert kernels and not any(np.array_equal(np.asarray(v), np.asarray(w)) for v, w in kernels)


def test_each_kernel_is_glorot_uniform_with_the_layers_own_seed():
    config = dataclasses.replace(FAMILIES["mlp"], hidden=(16, 8))
    models = build_models(config, seed=7)
    layers = ["encoder_h", "encoder_h2", "z_mean", "z_log_var", "decoder_h", "decoder_h2", "decoder_mean"]
    for k, name in enumerate(layers):  # the order the layers are built in, each with seed 1000 * seed + k
        kernel = models.vae.get_layer(name).kernel
        expected = keras.initializers.GlorotUniform(seed=7000 + k)(kernel.shape)
        np.testing.assert_array_equal(np.asarray(kernel), np.asarray(expected), err_msg=name)


def test_unset_gives_numpy_zeros_and_keeps_the_config_of_what_it_stands_for():
    real = keras.initializers.GlorotUniform(seed=11)
    unset = Unset(real)
    value = unset((3, 4), dtype="float32")
    assert isinstance(value, np.ndarray) and value.dtype == np.float32 and not value.any()
    assert unset.get_config() == real.get_config()


def test_encode_and_decode_pad_to_one_batch_length_whatever_the_call_asks(small_run, monkeypatch):
    from vaelab import run as run_module

    lengths = []
    predict_on_batch = type(small_run.encoder).predict_on_batch
    monkeypatch.setattr(
        type(small_run.encoder),
        "predict_on_batch",
        lambda model, x: lengths.append(len(x[0] if isinstance(x, list) else x)) or predict_on_batch(model, x),
    )
    x = (np.random.default_rng(2).uniform(size=(300, *small_run.config.model.input_shape)) < 0.3).astype(np.float32)
    z_mean, z_log_var = small_run.encode(x)
    assert set(lengths) == {run_module.PREDICT_ROWS}  # 300 rows: 256, and 44 padded to 256
    for i in (0, 257, 299):  # a row's code does not depend on the rows beside it
        alone = small_run.encode(x[i : i + 1])
        np.testing.assert_array_equal(alone[0][0], z_mean[i])
        np.testing.assert_array_equal(alone[1][0], z_log_var[i])
    expected = small_run.encoder.predict(x, verbose=0)  # Keras' own, a batch length of its own: float32 rounding
    np.testing.assert_allclose(z_mean, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z_log_var, expected[1], rtol=1e-5, atol=1e-6)
    images = small_run.decode(z_mean[:3])
    assert images.shape[0] == 3 and lengths[-1] == run_module.PREDICT_ROWS
    np.testing.assert_array_equal(images[1], small_run.decode(z_mean[1:2])[0])


def test_a_finished_run_without_its_optimizer_state_loads_and_evaluates_the_same(small_run, mnist, tmp_path, vaelab):
    published = tmp_path / "published"
    shutil.copytree(small_run.path, published)
    with np.load(small_run.path / CHECKPOINT) as saved:
        adam = [name for name in saved.files if name.startswith("optimizer/")]
        weights = {name: saved[name] for name in saved.files if not name.startswith("optimizer/")}
    assert adam

    assert drop_optimizer_state(published) == len(adam)
    with np.load(published / CHECKPOINT) as saved:
        assert sorted(saved.files) == sorted(weights)
        for name, value in weights.items():
            np.testing.assert_array_equal(saved[name], value, err_msg=name)
    assert sorted(p.name for p in published.iterdir()) == sorted(p.name for p in small_run.path.iterdir())
    written = (published / CHECKPOINT).stat().st_mtime_ns
    assert drop_optimizer_state(published) == 0  # nothing left to drop; the file is not rewritten
    assert (published / CHECKPOINT).stat().st_mtime_ns == written

    loaded = load_run(published)
    _same_networks(loaded.models, load_run(small_run.path).models)
    before, after = (evaluate(run, mnist, samples=3, images=20) for run in (small_run, loaded))
    assert dataclasses.replace(after, seconds=0) == dataclasses.replace(before, seconds=0)
    # What it no longer does is train on: resuming for more epochs says so in one line; with none to train, the
    # run is reused as it is.
    resumed = vaelab("train", "--resume", str(published), "--epochs", str(small_run.epoch + 1))
    assert resumed.returncode == 2 and "published without its optimizer's state" in resumed.stderr
    assert len(resumed.stderr.strip().splitlines()) == 1
    reused = vaelab("train", "--resume", str(published))
    assert reused.returncode == 0, reused.stderr
    assert (published / CHECKPOINT).stat().st_mtime_ns == written


def test_the_optimizer_state_is_not_dropped_while_another_process_holds_the_run(small_run, tmp_path):
    busy = shutil.copytree(small_run.path, tmp_path / "busy")
    with DirectoryLock(busy, "training"), pytest.raises(VaelabError, match="is in use by"):
        drop_optimizer_state(busy)
    assert (busy / CHECKPOINT).read_bytes() == (small_run.path / CHECKPOINT).read_bytes()


def test_an_unfinished_run_keeps_its_optimizer_state(small_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(small_run.path, unfinished)
    (unfinished / METRICS).unlink()  # written when the last epoch ends
    with pytest.raises(VaelabError, match="has not finished its epochs"):
        drop_optimizer_state(unfinished)
    assert (unfinished / CHECKPOINT).read_bytes() == (small_run.path / CHECKPOINT).read_bytes()
