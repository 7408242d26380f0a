"""The dense layers' and optimizers' kernels compute what Keras computes: values, gradients, updates, whole epochs.

Keras' own Dense and update steps (the kernels switched off) are the reference, differentiated by `jax.grad`.
The kernels are opt-in (`VAELAB_DENSE_KERNELS=1`); every test here switches them on, or off to compare.
"""

from __future__ import annotations

import collections
import os
import re

import keras
import numpy as np
import pytest

from tests.test_kernels import assert_close, compiled  # noqa: F401  (the build fixture, shared)
from vaelab import kernels
from vaelab.config import make_config
from vaelab.models.layers import Dense

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the kernels are for the JAX backend")

# Burda et al.'s network (784-200-200-50, tanh, Adam, dynamically binarised) at batch 20, and the family members
# whose steps differ: the iwae's K decoder passes, the vamp's pseudo-inputs through the encoder.
BURDA = {"hidden": (200, 200), "latent_dim": 50, "activation": "tanh", "optimizer": "adam", "binarize": True}


@pytest.fixture(autouse=True)
def dense_on(monkeypatch):
    monkeypatch.setenv(kernels.SWITCH, "1")
    monkeypatch.setenv(kernels.DENSE_SWITCH, "1")


def switch(monkeypatch, on: bool) -> None:
    """The dense kernels on or off for what is traced next (the switch is read while tracing)."""
    monkeypatch.setenv(kernels.DENSE_SWITCH, "1" if on else "0")


def outputs_and_gradients(layer, x, on: bool, monkeypatch):
    """(y, d kernel, d bias, d x) of sum(layer(x) * r), r fixed: the kernel's, or jax.grad of Keras' Dense."""
    import jax
    import jax.numpy as jnp

    switch(monkeypatch, on)
    r = jnp.asarray(np.random.default_rng(9).normal(size=(x.shape[0], layer.units)).astype(np.float32))

    def loss(weights, x):
        y, _ = layer.stateless_call(weights, [], x)
        return jnp.sum(y * r), y

    (_, y), (dweights, dx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        [v.value for v in layer.trainable_variables], jnp.asarray(x)
    )
    return [np.asarray(a) for a in (y, *dweights, dx)]


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", None])
@pytest.mark.parametrize(
    ("m", "k", "n"),
    [(20, 784, 200), (20, 200, 50), (100, 256, 2), (100, 2, 256), (7, 50, 31), (1, 3, 1), (33, 200, 784)],
)
def test_dense_kernel_equals_keras_dense(m, k, n, activation, monkeypatch):
    layer = Dense(n, activation=activation)
    layer.build((None, k))
    rng = np.random.default_rng(m + k + n)
    for v in layer.trainable_variables:
        v.assign(rng.normal(0, 1 / np.sqrt(k), v.shape).astype(np.float32))
    x = rng.normal(size=(m, k)).astype(np.float32)
    got = outputs_and_gradients(layer, x, True, monkeypatch)
    want = outputs_and_gradients(layer, x, False, monkeypatch)
    for what, a, b in zip(("output", "kernel gradient", "bias gradient", "input gradient"), got, want, strict=True):
        assert_close(a, b, f"{m}x{k} -> {n}, {activation}: {what}")


def test_tanh_to_float32_rounding_over_its_range():
    import jax.numpy as jnp

    from vaelab.kernels import ops

    v = np.concatenate([np.linspace(-12, 12, 4001), [-3e-4, -1e-6, 0.0, 1e-6, 3e-4, 5e-4]]).astype(np.float32)
    y = ops.dense(jnp.asarray(v[:, None]), jnp.ones((1, 1), jnp.float32), jnp.zeros(1, jnp.float32), "tanh")
    np.testing.assert_allclose(np.asarray(y)[:, 0], np.tanh(v.astype(np.float64)), rtol=2e-6, atol=2e-7)


def optimizer_after_steps(kind: str, on: bool, monkeypatch, steps: int = 4):
    """The variables and optimizer slots after `steps` jitted updates with fixed gradients."""
    import jax

    from vaelab.training import optimizers

    switch(monkeypatch, on)
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=s).astype(np.float32)) for s in ((784, 200), (200,), (5, 3, 7), (1,))]
    optimizer = {"adam": optimizers.Adam, "rmsprop": optimizers.RMSprop}[kind](learning_rate=1e-3)
    optimizer.build(variables)
    step = jax.jit(optimizer.stateless_apply)
    state, values = [v.value for v in optimizer.variables], [v.value for v in variables]
    for s in range(steps):
        grads = [np.random.default_rng(s).normal(size=v.shape).astype(np.float32) for v in variables]
        values, state = step(state, grads, values)
    hlo = step.lower(state, grads, values).as_text()
    return [np.asarray(a) for a in (*values, *state)], hlo


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_optimizer_updates_equal_keras(kind, monkeypatch):
    got, hlo = optimizer_after_steps(kind, True, monkeypatch)
    want, reference = optimizer_after_steps(kind, False, monkeypatch)
    assert hlo.count(f"vaelab_{kind}_update") == 4 and "vaelab_" not in reference
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def train_step_calls(config) -> collections.Counter:
    """The vaelab kernels called by one compiled training step of `config`, counted."""
    import jax

    from vaelab.models import build_models
    from vaelab.training.loop import make_optimizer

    vae = build_models(config.model, seed=0, binarize=config.train.binarize).vae
    vae.compile(optimizer=make_optimizer(config, 10))
    vae.optimizer.build(vae.trainable_variables)
    state = tuple(
        [v.value for v in group]
        for group in (
            vae.trainable_variables,
            vae.non_trainable_variables,
            vae.optimizer.variables,
            vae.metrics_variables,
        )
    )
    x = np.full((config.train.batch_size, 28, 28, 1), 0.5, np.float32)
    hlo = jax.jit(vae.train_step).lower(state, (x,)).compile().as_text()
    return collections.Counter(re.findall(r'custom_call_target="(vaelab_\w+)"', hlo))


def test_every_dense_layer_and_update_of_the_step_runs_on_the_kernels():
    """Burda's network: 7 Dense layers forward and backward, no input gradient for the images, 14 variables updated.
    A layer that silently fell back to Keras would compute the same numbers, only elsewhere."""
    calls = train_step_calls(make_config("mlp", batch_size=20, **BURDA))
    assert calls == {
        "vaelab_dense_forward": 7,
        "vaelab_dense_weights": 7,
        "vaelab_dense_input": 6,
        "vaelab_adam_update": 14,
    }


def test_fallbacks_compute_with_keras(monkeypatch):
    config = make_config("mlp", batch_size=20, **BURDA)
    switch(monkeypatch, False)
    assert train_step_calls(config) == {}  # VAELAB_DENSE_KERNELS unset: Keras' layers and updates
    switch(monkeypatch, True)
    monkeypatch.setenv(kernels.SWITCH, "0")  # all kernels off
    assert train_step_calls(config) == {}
    monkeypatch.setenv(kernels.SWITCH, "1")
    stock = train_step_calls(make_config("mlp", batch_size=20, implementation="keras", **BURDA))
    assert set(stock) == {"vaelab_adam_update"}  # the stock layers, vaelab's optimizer
    layer = Dense(4, activation="tanh")  # a 3-D input: Keras' Dense
    x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(layer(x)), np.tanh(x @ np.asarray(layer.kernel)), rtol=1e-5, atol=1e-6)


def test_wrong_shapes_and_buffers_are_errors_not_crashes():
    import jax
    import jax.numpy as jnp

    from vaelab.kernels import ops

    x, w, b = jnp.zeros((4, 5), jnp.float32), jnp.zeros((5, 3), jnp.float32), jnp.zeros(3, jnp.float32)
    assert ops.dense(x, w, b, "relu").shape == (4, 3)
    for call in (
        lambda: ops.dense(x.astype(jnp.float16), w, b),
        lambda: ops.dense(x[0], w, b),
        lambda: ops.dense(x, w[:4], b),
        lambda: ops.dense(x, w, b[:2]),
        lambda: ops.dense(x, w, b, "gelu"),
        lambda: ops.adam_update(w, w, w, w, jnp.zeros(3, jnp.float32)),
        lambda: ops.rmsprop_update(w, w, b, jnp.zeros(4, jnp.float32)),
    ):
        with pytest.raises(ValueError, match="kernel"):
            call()
    bad = jax.ffi.ffi_call("vaelab_dense_forward", jax.ShapeDtypeStruct((4, 2), jnp.float32))  # N is 3
    with pytest.raises(Exception, match="vaelab kernel: dense forward"):
        jax.block_until_ready(bad(x, w, b, activation=np.int32(3)))


def test_dense_config_is_keras_dense_config():
    from keras import layers

    layer = Dense(7, activation="tanh", name="h")
    assert layer.get_config() == layers.Dense(7, activation="tanh", name="h").get_config()
    assert type(layer).__name__ == "Dense"  # what the exported page's network reader matches (vaelab.explore.webmodel)


def one_epoch(config, on: bool, monkeypatch, tmp_path, mnist):
    from vaelab.training.loop import train

    switch(monkeypatch, on)
    run = train(config, tmp_path / ("on" if on else "off"), data=mnist, verbose=0, snapshots=False, log=lambda m: None)
    weights = [np.asarray(v) for v in run.models.vae.trainable_variables]
    return run.history[0], weights


def assert_same_epoch(config, monkeypatch, tmp_path, mnist):
    """An epoch from the same seed, the kernels on and off: the same losses to float32 rounding, and the same weights
    to within half of one Adam step (Adam moves a weight whose gradient is near zero by about the learning rate,
    whatever the gradient's size, so a last-bit difference there moves it by a fraction of a step)."""
    got, got_weights = one_epoch(config, True, monkeypatch, tmp_path, mnist)
    want, want_weights = one_epoch(config, False, monkeypatch, tmp_path, mnist)
    for key in ("loss", "reconstruction_loss", "kl_loss", "val_loss"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, err_msg=key)
    for a, b in zip(got_weights, want_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=0.5 * config.train.learning_rate)


@pytest.mark.slow
def test_an_epoch_of_burdas_network_is_the_keras_epoch(monkeypatch, tmp_path, mnist):
    config = make_config("mlp", batch_size=20, epochs=1, train_subset=400, test_subset=100, **BURDA)
    assert_same_epoch(config, monkeypatch, tmp_path, mnist)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"model": "iwae", "k": 5, "batch_size": 20, **BURDA},
        {"model": "vamp", "pseudo_inputs": 50, "batch_size": 20, **BURDA},
        {"batch_size": 100},  # the exercise's mlp: relu, latent 2, RMSprop
    ],
    ids=["iwae", "vamp", "mlp"],
)
def test_an_epoch_of_the_family_is_the_keras_epoch(options, monkeypatch, tmp_path, mnist):
    config = make_config("mlp", epochs=1, train_subset=400, test_subset=100, **options)
    assert_same_epoch(config, monkeypatch, tmp_path, mnist)


def test_the_switch_defaults_to_off(monkeypatch):
    monkeypatch.delenv(kernels.DENSE_SWITCH)
    assert not kernels.dense_runs()
    assert os.environ.get(kernels.SWITCH) == "1" and kernels.status().in_use  # the conv kernels stay on
