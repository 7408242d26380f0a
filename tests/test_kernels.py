"""The compiled kernels compute exactly what the keras.ops layers compute: values and every gradient.

The keras.ops formulation (vaelab/models/layers.py, with VAELAB_KERNELS=0) is the reference. Tests skip
where no C++ compiler exists, except in CI (CI=true), where the compiled path must run.
"""

from __future__ import annotations

import collections
import os
import re

import keras
import numpy as np
import pytest

from vaelab import kernels
from vaelab.data import scale_pixels
from vaelab.models.layers import ConvMaxPool2D, SameConv2D, UpSamplingConv2D

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the kernels are for the JAX backend")


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """The kernels, built and registered: skipped where there is no C++ compiler (a failure in CI)."""
    from vaelab.kernels import _build

    try:
        _build.find_compiler()
    except _build.BuildError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must exercise the compiled kernels: {err}")
        pytest.skip(str(err))
    switch = os.environ.pop(kernels.SWITCH, None)  # a user's VAELAB_KERNELS=0 must not hide a broken build
    try:
        status = kernels.status()
    finally:
        if switch is not None:
            os.environ[kernels.SWITCH] = switch
    assert status.in_use, str(status)
    return status


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """Every test starts with the kernels switched on; tests that compare with keras.ops switch them off."""
    monkeypatch.setenv(kernels.SWITCH, "1")


# The ConvNet's five kernel layers, with the shape of the input each gets in the network.
LAYERS = {
    "encoder_conv1": (lambda: ConvMaxPool2D(16), (28, 28, 1)),
    "encoder_conv2": (lambda: ConvMaxPool2D(8), (14, 14, 16)),
    "decoder_conv1": (lambda: SameConv2D(8, activation="relu"), (8, 8, 8)),
    "decoder_conv2": (lambda: UpSamplingConv2D(16, "valid", activation="relu"), (8, 8, 8)),
    "decoder_mean": (lambda: UpSamplingConv2D(1, "same", activation="sigmoid"), (14, 14, 16)),
}


def make_layer(factory, shape, seed=0):
    layer = factory()
    layer.build((None, *shape))
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(rng.normal(0, 0.5, v.shape).astype(np.float32))
    return layer


def outputs_and_gradients(layer, x, use_kernels: bool, monkeypatch):
    """(y, d kernel, d bias, d x) of sum(layer(x) * r) for a fixed random r, with or without the kernels."""
    import jax
    import jax.numpy as jnp

    monkeypatch.setenv(kernels.SWITCH, "1" if use_kernels else "0")  # read while tracing, below
    shape = layer.compute_output_shape(x.shape)
    r = jnp.asarray(np.random.default_rng(9).normal(size=shape).astype(np.float32))

    def loss(weights, x):
        y, _ = layer.stateless_call(weights, [], x)
        return jnp.sum(y * r), y

    (_, y), (dweights, dx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        [v.value for v in layer.trainable_variables], jnp.asarray(x)
    )
    return [np.asarray(a) for a in (y, *dweights, dx)]


def assert_close(actual, expected, what):
    """Equal to float32 rounding: sums of up to 256 x 784 terms, in another order."""
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-6 * scale, err_msg=what)


def inputs(name, shape, n, mnist, ties: bool):
    """Random inputs, or MNIST-like ones: real digits for the first layer, blank (zero) areas elsewhere."""
    rng = np.random.default_rng(n)
    if not ties:
        return rng.normal(size=(n, *shape)).astype(np.float32)
    if name == "encoder_conv1":
        return scale_pixels(mnist.x_test[:n])
    x = np.maximum(rng.normal(size=(n, *shape)), 0).astype(np.float32)  # relu outputs
    x[:, : shape[0] // 2] = 0.0  # a blank half, as around a digit
    return x


@pytest.mark.parametrize("n", [1, 7, 100, 256])
@pytest.mark.parametrize("name", list(LAYERS))
def test_kernel_equals_the_keras_ops_layer(name, n, mnist, monkeypatch):
    factory, shape = LAYERS[name]
    layer = make_layer(factory, shape)
    for ties in (False, True):
        x = inputs(name, shape, n, mnist, ties)
        got = outputs_and_gradients(layer, x, True, monkeypatch)
        want = outputs_and_gradients(layer, x, False, monkeypatch)
        for what, a, b in zip(("output", "kernel gradient", "bias gradient"), got, want, strict=False):
            assert_close(a, b, f"{name}, batch {n}, ties {ties}: {what}")
        if not (ties and isinstance(layer, ConvMaxPool2D)):
            assert_close(got[3], want[3], f"{name}, batch {n}, ties {ties}: input gradient")
        # Where a pooling window holds a tie (blank patches), the max is not differentiable: the kernel
        # sends the gradient to the first maximum (as Keras' MaxPooling2D does, checked below), the
        # keras.ops formulation splits it evenly. Both are subgradients; the kernel and bias gradients
        # above agree either way, since a blank patch contributes nothing to them.


@pytest.mark.parametrize("name", ["encoder_conv1", "encoder_conv2"])
def test_conv_pool_kernel_sends_tied_gradients_where_keras_pooling_does(name, mnist, monkeypatch):
    from keras import layers

    factory, shape = LAYERS[name]
    fused = make_layer(factory, shape)
    conv = layers.Conv2D(fused.filters, (3, 3), padding="same", activation="relu")
    conv.build((None, *shape))
    conv.kernel.assign(fused.kernel)
    conv.bias.assign(fused.bias)
    stock = keras.Sequential([keras.Input(shape), conv, layers.MaxPooling2D((2, 2), padding="same")])
    x = inputs(name, shape, 7, mnist, ties=True)
    got = outputs_and_gradients(fused, x, True, monkeypatch)
    want = outputs_and_gradients(stock, x, False, monkeypatch)
    for what, a, b in zip(("output", "kernel gradient", "bias gradient", "input gradient"), got, want, strict=True):
        assert_close(a, b, f"{name}: {what}")


@pytest.mark.parametrize(
    ("factory", "shape"),
    [
        (lambda: ConvMaxPool2D(16, activation=None), (28, 28, 1)),
        (lambda: SameConv2D(8, activation="sigmoid"), (8, 8, 8)),
        (lambda: SameConv2D(8, activation=None), (8, 8, 8)),
        (lambda: UpSamplingConv2D(16, "same", activation=None), (8, 8, 8)),
        (lambda: UpSamplingConv2D(1, "valid", activation="relu"), (14, 14, 16)),
        (lambda: ConvMaxPool2D(8), (4, 6, 16)),  # other image sizes: the channels decide what is compiled
    ],
)
def test_other_activations_paddings_and_sizes(factory, shape, monkeypatch):
    layer = make_layer(factory, shape, seed=1)
    x = np.random.default_rng(2).normal(size=(5, *shape)).astype(np.float32)
    got = outputs_and_gradients(layer, x, True, monkeypatch)
    want = outputs_and_gradients(layer, x, False, monkeypatch)
    for what, a, b in zip(("output", "kernel gradient", "bias gradient", "input gradient"), got, want, strict=True):
        assert_close(a, b, what)


def test_gradients_repeat_exactly(monkeypatch):
    factory, shape = LAYERS["encoder_conv2"]
    layer = make_layer(factory, shape)
    x = np.random.default_rng(3).normal(size=(100, *shape)).astype(np.float32)
    first = outputs_and_gradients(layer, x, True, monkeypatch)
    for _ in range(3):  # the threads' partial sums are added in a fixed order
        for a, b in zip(first, outputs_and_gradients(layer, x, True, monkeypatch), strict=True):
            np.testing.assert_array_equal(a, b)


def test_channels_not_compiled_in_fall_back_to_keras_ops(monkeypatch):
    layer = make_layer(lambda: ConvMaxPool2D(5), (6, 10, 3))
    assert (3, 5) not in kernels.status().supported["conv_pool"]
    x = np.random.default_rng(4).normal(size=(2, 6, 10, 3)).astype(np.float32)
    assert outputs_and_gradients(layer, x, True, monkeypatch)[0].shape == (2, 3, 5, 5)


def test_wrong_shapes_and_dtypes_are_python_errors_before_the_call():
    import jax.numpy as jnp

    from vaelab.kernels import ops

    x = jnp.zeros((2, 28, 28, 1), jnp.float32)
    kernel, bias = jnp.zeros((3, 3, 1, 16), jnp.float32), jnp.zeros((16,), jnp.float32)
    assert ops.conv_max_pool(x, kernel, bias).shape == (2, 14, 14, 16)
    bad_calls = [
        lambda: ops.conv_max_pool(x.astype(jnp.float16), kernel, bias),  # dtype
        lambda: ops.conv_max_pool(x[0], kernel, bias),  # rank
        lambda: ops.conv_max_pool(x, kernel[:2], bias),  # kernel size
        lambda: ops.conv_max_pool(x, kernel, bias[:8]),  # kernel and bias disagree
        lambda: ops.conv_max_pool(x[:, :27], kernel, bias),  # odd height
        lambda: ops.conv_max_pool(x, kernel, bias, "sigmoid"),  # not monotonic
        lambda: ops.conv(jnp.zeros((2, 8, 8, 3), jnp.float32), jnp.zeros((3, 3, 3, 8)), jnp.zeros(8)),  # channels
        lambda: ops.upsampling_conv(jnp.zeros((2, 8, 8, 8)), jnp.zeros((3, 3, 8, 16)), jnp.zeros(16), "full"),
        lambda: ops.upsampling_conv(jnp.zeros((2, 1, 8, 8)), jnp.zeros((3, 3, 8, 16)), jnp.zeros(16), "valid"),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError, match=r"kernel|conv|padding|needs"):
            call()


def test_the_handlers_refuse_inconsistent_buffers_instead_of_crashing():
    """Even past the Python checks, a wrong buffer is an error from the handler, never a crash."""
    import jax
    import jax.numpy as jnp

    call = jax.ffi.ffi_call("vaelab_conv_forward", jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32))  # F is 8
    with pytest.raises(Exception, match="vaelab kernel: conv forward"):
        jax.block_until_ready(
            call(jnp.zeros((2, 8, 8, 8)), jnp.zeros((3, 3, 8, 8)), jnp.zeros(8), activation=np.int32(1))
        )
    call = jax.ffi.ffi_call("vaelab_conv_forward", jax.ShapeDtypeStruct((2, 8, 8, 8), jnp.float32))
    with pytest.raises(Exception, match="vaelab kernel"):
        jax.block_until_ready(
            call(jnp.zeros((2, 8, 8, 8)), jnp.zeros((3, 3, 8, 8)), jnp.zeros(8), activation=np.int32(7))
        )


def test_the_first_layers_input_gradient_is_never_computed():
    """jit drops the FFI call for the gradient of the data: one conv_pool input gradient in the step, not two.

    And every one of the ConvNet's five kernel layers runs forward and backward on its kernel: a layer
    that silently fell back to keras.ops would compute the same numbers, only slower."""
    import jax

    from vaelab.config import PRESETS
    from vaelab.models import build_models, kl_loss, reconstruction_loss

    models = build_models(PRESETS["conv"], seed=0)
    x = np.zeros((4, 28, 28, 1), np.float32)
    ntv = [v.value for v in models.vae.non_trainable_variables]

    def loss(tv):
        y, _ = models.vae.stateless_call(tv, ntv, x, training=True)
        return (reconstruction_loss(x, y["x_decoded_mean"]) + kl_loss(y["z_mean"], y["z_log_var"])).mean()

    hlo = jax.jit(jax.grad(loss)).lower([v.value for v in models.vae.trainable_variables]).compile().as_text()
    calls = collections.Counter(re.findall(r'custom_call_target="(vaelab_\w+)"', hlo))
    assert calls == {
        "vaelab_conv_pool_forward": 2,  # encoder_conv1, encoder_conv2
        "vaelab_conv_pool_weights": 2,
        "vaelab_conv_pool_input": 1,  # not for the images
        "vaelab_conv_forward": 1,  # decoder_conv1
        "vaelab_conv_weights": 1,
        "vaelab_conv_input": 1,
        "vaelab_upconv_forward": 2,  # decoder_conv2, decoder_mean
        "vaelab_upconv_weights": 2,
        "vaelab_upconv_input": 2,
    }


@pytest.mark.parametrize("layer", [ConvMaxPool2D(8, name="a"), SameConv2D(8, name="b"), UpSamplingConv2D(4, "valid")])
def test_layer_configs_round_trip(layer):
    again = type(layer).from_config(layer.get_config())
    assert again.get_config() == layer.get_config()
