"""The fused training step (vaelab.training.fused_step, vae_step.h) computes what Keras' step computes: gradients,
updates,
metrics, whole epochs; and it steps aside wherever it does not apply.

Keras' own JAX `train_step` (jax.grad of the model's `compute_loss`, then the optimizer) is the reference.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.test_kernels import compiled  # noqa: F401  (the build fixture, shared)
from vaelab import kernels
from vaelab.config import make_config
from vaelab.training import fused_step

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the kernels are for the JAX backend")

BURDA = {"hidden": (200, 200), "latent_dim": 50, "activation": "tanh", "optimizer": "adam", "binarize": True}
SMALL = {"hidden": (32, 16), "latent_dim": 4, "batch_size": 20}  # a small network of every layer kind, for speed
NETWORKS = {
    "vae-tanh-binarised": {**SMALL, "activation": "tanh", "binarize": True},
    "iwae-k3-tanh-binarised": {**SMALL, "activation": "tanh", "binarize": True, "model": "iwae", "k": 3},
    "iwae-k2-relu-grey-one-layer": {"latent_dim": 2, "batch_size": 7, "activation": "relu", "model": "iwae", "k": 2},
}


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch, compiled):  # noqa: F811
    monkeypatch.setenv(kernels.SWITCH, "1")
    monkeypatch.delenv(kernels.DENSE_SWITCH, raising=False)  # the reference: XLA's layers and updates


def built(config, optimizer, fused: bool):
    """(jitted train_step, state) of a freshly built model (seed 0) with `optimizer`, Keras' step or the fused one."""
    import jax

    from vaelab.models import build_models

    vae = build_models(config.model, seed=0, binarize=config.train.binarize).vae
    vae.compile(optimizer=optimizer)
    vae.optimizer.build(vae.trainable_variables)
    if fused:
        assert fused_step.reason(vae, config.model) is None
        vae.train_step = fused_step.FusedStep(vae, config.model)
    return vae, jax.jit(vae.train_step)


def state_of(vae):
    groups = (vae.trainable_variables, vae.non_trainable_variables, vae.optimizer.variables, vae.metrics_variables)
    return tuple([v.value for v in group] for group in groups)


def images(mnist, n: int):
    from vaelab.data import scale_pixels

    return scale_pixels(mnist.x_train[:n])


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_gradients_are_jax_grads(name, mnist):
    """RMSprop with learning rate 1, rho 1, epsilon 0 and velocities of one moves every parameter by exactly its
    gradient: p - g. Both steps start from the same state and draw the same random numbers."""
    from vaelab.training.optimizers import RMSprop

    config = make_config("mlp", **NETWORKS[name])
    x = images(mnist, config.train.batch_size)
    moved = {}
    for fused in (False, True):
        vae, step = built(config, RMSprop(learning_rate=1.0, rho=1.0, epsilon=0.0), fused)
        for velocity in vae.optimizer.variables[2:]:
            velocity.assign(np.ones(velocity.shape, np.float32))
        before = [np.asarray(v) for v in vae.trainable_variables]
        logs, state = step(state_of(vae), (x,))
        moved[fused] = [b - np.asarray(a) for b, a in zip(before, state[0], strict=True)]
        moved[fused, "logs"] = {k: float(v) for k, v in logs.items()}
    for (k, want), got in zip(enumerate(moved[False]), moved[True], strict=True):
        scale = float(np.abs(want).max()) or 1.0
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4 * scale, err_msg=f"gradient {k} of {name}")
    for key, want in moved[False, "logs"].items():
        np.testing.assert_allclose(moved[True, "logs"][key], want, rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("optimizer", ["adam", pytest.param("rmsprop", marks=pytest.mark.slow)])
def test_three_steps_update_weights_slots_and_metrics_as_keras(optimizer, mnist):
    from vaelab.training.loop import make_optimizer

    config = make_config("mlp", **{**NETWORKS["vae-tanh-binarised"], "optimizer": optimizer})
    x = images(mnist, config.train.batch_size)
    results = {}
    for fused in (False, True):
        vae, step = built(config, make_optimizer(config, 10), fused)
        state = state_of(vae)
        for _ in range(3):
            logs, state = step(state, (x,))
        results[fused] = logs, state
    (want_logs, want), (got_logs, got) = results[False], results[True]
    for key in want_logs:
        np.testing.assert_allclose(float(got_logs[key]), float(want_logs[key]), rtol=1e-5, err_msg=key)
    for group, (a_group, b_group) in enumerate(zip(got, want, strict=True)):
        for a, b in zip(a_group, b_group, strict=True):  # weights to a fraction of a step (the learning rate)
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=3e-4, err_msg=f"group {group}")


def one_epoch(config, fused: bool, monkeypatch, tmp_path, mnist):
    from vaelab.training.loop import train

    monkeypatch.setenv(fused_step.SWITCH, "1" if fused else "0")
    lines = []
    run = train(config, tmp_path / str(fused), data=mnist, verbose=0, snapshots=False, log=lines.append)
    assert any(("fused step" in line) == fused for line in lines if "training step" in line) or not fused
    return run.history[0], [np.asarray(v) for v in run.models.vae.trainable_variables]


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 20, **BURDA},
        {"model": "iwae", "k": 5, "batch_size": 20, **BURDA},
        {"batch_size": 100},  # the exercise's mlp: relu, latent 2, RMSprop
    ],
    ids=["burda", "iwae", "mlp"],
)
def test_an_epoch_from_the_same_seed_is_keras_epoch(options, monkeypatch, tmp_path, mnist):
    """The same losses to float32 rounding, the same weights to half an Adam step but for a few in 10,000 (a weight
    whose gradient is near zero moves by about the learning rate, whatever the gradient's size, so over 20 steps a
    last-bit difference in such a gradient, the iwae's weights of pixels that are nearly always 0, can add up to a
    step or two)."""
    config = make_config("mlp", epochs=1, train_subset=400, test_subset=100, **options)
    got, got_weights = one_epoch(config, True, monkeypatch, tmp_path, mnist)
    want, want_weights = one_epoch(config, False, monkeypatch, tmp_path, mnist)
    for key in ("loss", "reconstruction_loss", "kl_loss", "elbo_loss", "val_loss"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, err_msg=key)
    lr = config.train.learning_rate
    for a, b in zip(got_weights, want_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=3 * lr)
        assert np.mean(np.abs(a - b) > 1e-3 * np.abs(b) + 0.5 * lr) < 1e-4  # (2 of 156,800 for the iwae, once)


@pytest.mark.parametrize(
    ("preset", "options", "why"),
    [
        ("mlp", {"model": "vamp"}, "vamp"),
        ("mlp", {"model": "vae", "k": 2}, "the ELBO averaged over K > 1 codes"),
        ("conv", {}, "arch"),
        ("mlp", {"implementation": "keras"}, "implementation keras"),
        ("mlp-fixed-var", {}, "fixed variance"),
        ("mlp", {"likelihood": "gaussian"}, "Bernoulli"),
    ],
)
def test_where_it_does_not_apply_keras_step_stays(preset, options, why, monkeypatch, mlp_vae):
    """(The configuration is checked before the model: the mlp model stands in for each, to save building.)"""
    monkeypatch.setenv(fused_step.SWITCH, "1")
    config = make_config(preset, **options)
    assert why in fused_step.reason(mlp_vae, config.model)
    assert not fused_step.install(mlp_vae, config.model)
    assert "does not apply" in fused_step.describe(mlp_vae, config.model)
    assert not isinstance(mlp_vae.train_step, fused_step.FusedStep)


@pytest.fixture(scope="module")
def mlp_vae():
    from vaelab.models import build_models
    from vaelab.training.optimizers import RMSprop

    vae = build_models(make_config("mlp").model, seed=0).vae
    vae.compile(optimizer=RMSprop())
    return vae


def test_the_switch_and_the_optimizer_options(monkeypatch):
    from vaelab.models import build_models
    from vaelab.training.optimizers import Adam, RMSprop

    config = make_config("mlp")
    vae = build_models(config.model, seed=0).vae  # (its own: the fused step is installed on it at the end)
    for optimizer, applies in [
        (Adam(), True),
        (RMSprop(), True),
        (Adam(amsgrad=True), False),
        (RMSprop(momentum=0.9), False),
        (RMSprop(centered=True), False),
        (Adam(clipnorm=1.0), False),
        (Adam(weight_decay=0.1), False),
        (keras.optimizers.SGD(), False),
    ]:
        vae.compile(optimizer=optimizer)
        assert (fused_step.reason(vae, config.model) is None) == applies, optimizer.get_config()
    vae.compile(optimizer=Adam())
    monkeypatch.setenv(fused_step.SWITCH, "0")
    assert not fused_step.install(vae, config.model) and "=1 fuses it" in fused_step.describe(vae, config.model)
    monkeypatch.setenv(kernels.SWITCH, "0")
    monkeypatch.setenv(fused_step.SWITCH, "1")
    assert "compiled kernels not in use" in fused_step.reason(vae, config.model)
    monkeypatch.setenv(kernels.SWITCH, "1")
    assert fused_step.install(vae, config.model) and "fused step" in fused_step.describe(vae, config.model)


def test_bad_buffers_are_errors_not_crashes():
    import jax
    import jax.numpy as jnp

    from vaelab.kernels import ops

    widths = [(6, 4), (4, 2), (4, 2), (2, 4), (4, 6)]
    params = [jnp.ones(s, jnp.float32) for w in widths for s in (w, (w[1],))]
    slots = params + params
    x, eps, scalars = jnp.ones((3, 6), jnp.float32), jnp.ones((3, 2), jnp.float32), jnp.ones(5, jnp.float32)
    options = {"activation": "tanh", "samples": 1, "objective": "elbo", "optimizer": "adam"}
    for call in (
        lambda: ops.vae_step(x, eps, scalars[:4], params, slots, **options),
        lambda: ops.vae_step(x, eps, scalars, params[:-1], slots, **options),
        lambda: ops.vae_step(x, eps, scalars, params, slots[:-1], **options),
        lambda: ops.vae_step(x.astype(jnp.float16), eps, scalars, params, slots, **options),
        lambda: ops.vae_step(x, eps, scalars, params, slots, **{**options, "activation": "elu"}),
    ):
        with pytest.raises(ValueError, match="vae step kernel"):
            call()
    ok = ops.vae_step(x, eps, scalars, params, slots, **options)
    assert np.all(np.isfinite(np.asarray(ok[2])))
    # past the Python checks: widths that do not chain (the decoder's first layer reads 3 codes, not 2)
    wrong = [jnp.ones(s, jnp.float32) for w in [*widths[:3], (3, 4), (4, 6)] for s in (w, (w[1],))]
    shapes = [jax.ShapeDtypeStruct((3,), jnp.float32)] * 3 + [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in wrong * 3]
    call = jax.ffi.ffi_call("vaelab_vae_step", shapes)
    attributes = {k: np.int32(v) for k, v in {"activation": 3, "hidden": 1, "samples": 1, "objective": 0}.items()}
    with pytest.raises(Exception, match="vaelab kernel: vae step"):
        jax.block_until_ready(call(x, eps, scalars, *wrong, *wrong, *wrong, **attributes, optimizer=np.int32(0)))
