"""The fused ConvNet layers compute exactly what the stock Keras layer pairs compute: values and gradients."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from keras import layers

from vaelab import kernels
from vaelab.config import PRESETS
from vaelab.data import scale_pixels
from vaelab.models import build_models, kl_loss, reconstruction_loss
from vaelab.models.layers import (
    ConvMaxPool2D,
    DoublingConv2DTranspose,
    HalvingConv2D,
    SameConv2D,
    UpSamplingConv2D,
    _kernel_activation,
)


def value_and_grads(stack, x):
    """Output of `stack` on x, and the gradients of sum(output * r) for a fixed random r."""
    import jax
    import jax.numpy as jnp

    y0 = x
    for layer in stack:
        y0 = layer(y0)
    r = np.random.default_rng(9).normal(size=y0.shape).astype(np.float32)
    variables = [v for layer in stack for v in layer.trainable_variables]

    def f(values, x):
        out = x
        k = 0
        for layer in stack:
            n = len(layer.trainable_variables)
            out, _ = layer.stateless_call(values[k : k + n], [], out)
            k += n
        return jnp.sum(out * r)

    # Compiled once as a whole: taken op by op, each of its small operations would be compiled on its own.
    grads = jax.jit(jax.grad(f, argnums=(0, 1)))([v.value for v in variables], jnp.asarray(x))
    return np.asarray(y0), [np.asarray(g) for g in grads[0]], np.asarray(grads[1])


def random_weights(layer, rng):
    for v in layer.trainable_variables:
        v.assign(rng.normal(0, 0.5, v.shape).astype(np.float32))


pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="gradients are taken with jax.grad")


@pytest.mark.parametrize(("shape", "filters"), [((28, 28, 1), 16), ((14, 14, 16), 8), ((6, 10, 3), 5)])
@pytest.mark.parametrize("zeros", [False, True])
def test_conv_max_pool_equals_conv_then_pool(shape, filters, zeros):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, *shape)).astype(np.float32)
    if zeros:  # MNIST-like: large blank areas, so pooling windows hold ties
        x[:, : shape[0] // 2] = 0.0
    conv = layers.Conv2D(filters, (3, 3), padding="same", activation="relu")
    pool = layers.MaxPooling2D((2, 2), padding="same")
    conv.build((None, *shape))
    random_weights(conv, rng)
    fused = ConvMaxPool2D(filters)
    fused.build((None, *shape))
    fused.kernel.assign(conv.kernel)
    fused.bias.assign(conv.bias)
    y_ref, g_ref, gx_ref = value_and_grads([conv, pool], x)
    y, g, gx = value_and_grads([fused], x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref, strict=True):  # the kernel and bias gradients, which training uses
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    if not zeros:
        np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5)
    # Where a pooling window holds a tie (blank patches), the max is not differentiable: Keras' pooling
    # sends the gradient to the first maximum, this layer splits it evenly. Both are subgradients; the
    # kernel and bias gradients above agree either way, since a blank patch contributes nothing to them.


@pytest.mark.parametrize(
    ("shape", "filters", "padding", "activation"),
    [((14, 14, 16), 1, "same", "sigmoid"), ((8, 8, 8), 16, "valid", "relu"), ((5, 7, 3), 4, "same", "relu")],
)
def test_upsampling_conv_equals_upsample_then_conv(shape, filters, padding, activation):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, *shape)).astype(np.float32)
    up = layers.UpSampling2D((2, 2))
    conv = layers.Conv2D(filters, (3, 3), padding=padding, activation=activation)
    conv.build((None, 2 * shape[0], 2 * shape[1], shape[2]))
    random_weights(conv, rng)
    fused = UpSamplingConv2D(filters, padding, activation=activation)
    fused.build((None, *shape))
    fused.kernel.assign(conv.kernel)
    fused.bias.assign(conv.bias)
    assert fused.compute_output_shape((None, *shape)) == conv.compute_output_shape(
        up.compute_output_shape((None, *shape))
    )
    y_ref, g_ref, gx_ref = value_and_grads([up, conv], x)
    y, g, gx = value_and_grads([fused], x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5)


def test_fused_and_stock_conv_networks_agree_on_real_digits(mnist):
    import jax
    import jax.numpy as jnp

    fused = build_models(PRESETS["conv"], seed=3)
    stock = build_models(dataclasses.replace(PRESETS["conv"], implementation="keras"), seed=3)
    rng = np.random.default_rng(0)
    for a, b in zip(fused.vae.trainable_variables, stock.vae.trainable_variables, strict=True):
        w = rng.normal(0, 0.3, a.shape).astype(np.float32)
        a.assign(w)
        b.assign(w)
    x = scale_pixels(mnist.x_test[:100])
    for p, q in zip(fused.encoder.predict(x, verbose=0), stock.encoder.predict(x, verbose=0), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-5)
    z = rng.normal(size=(100, 2)).astype(np.float32)
    np.testing.assert_allclose(fused.generator.predict(z, verbose=0), stock.generator.predict(z, verbose=0), atol=1e-5)

    def grads(models):
        ntv = [v.value for v in models.vae.non_trainable_variables]

        def loss(tv):
            y, _ = models.vae.stateless_call(tv, ntv, jnp.asarray(x), training=True)
            return jnp.mean(reconstruction_loss(x, y["x_decoded_mean"]) + kl_loss(y["z_mean"], y["z_log_var"]))

        return jax.jit(jax.grad(loss))([v.value for v in models.vae.trainable_variables])

    for p, q in zip(grads(fused), grads(stock), strict=True):
        np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-4, atol=1e-5 * float(jnp.abs(q).max()))


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_conv_max_pool_output_shape_and_config(activation):
    layer = ConvMaxPool2D(6, activation=activation, name="pool")
    shape = layer.compute_output_shape((None, 10, 14, 3))
    assert shape == (None, 5, 7, 6) and all(type(d) is int for d in shape[1:])
    assert layer.compute_output_shape((2, None, None, 3)) == (2, None, None, 6)
    config = layer.get_config()
    assert "kernel_size" not in config and "padding" not in config  # fixed by the layer
    x = np.random.default_rng(2).normal(size=(2, 6, 8, 3)).astype(np.float32)
    y = np.asarray(layer(x))
    copy = ConvMaxPool2D.from_config(config)
    copy.build((None, 6, 8, 3))
    copy.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(copy(x)), y)
    # The stock pair, with the same activation: the max commutes with any monotonic activation.
    conv = layers.Conv2D(6, (3, 3), padding="same", activation=activation)
    conv.build((None, 6, 8, 3))
    conv.set_weights([layer.kernel.numpy(), np.random.default_rng(3).normal(size=6).astype(np.float32)])
    layer.bias.assign(conv.bias)
    expected = layers.MaxPooling2D((2, 2), padding="same")(conv(x))
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_conv_max_pool_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match=r"^ConvMaxPool2D needs a monotonic activation \(relu or linear\)$"):
        ConvMaxPool2D(4, activation="sigmoid")
    layer = ConvMaxPool2D(4)
    for h, w in ((7, 8), (8, 7), (7, 7)):
        with pytest.raises(ValueError, match=rf"ConvMaxPool2D needs an even height and width, got {h}x{w}\b"):
            layer(np.zeros((2, h, w, 1), np.float32))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_upsampling_conv_output_shape_and_config(padding):
    layer = UpSamplingConv2D(5, padding, activation="relu", name="up")
    grow = 0 if padding == "same" else -2
    assert layer.compute_output_shape((None, 6, 9, 2)) == (None, 12 + grow, 18 + grow, 5)
    assert layer.compute_output_shape((3, None, None, 2)) == (3, None, None, 5)
    symbolic = keras.Input((None, None, 2))
    assert tuple(layer(symbolic).shape) == (None, None, None, 5)  # built on unknown sizes
    config = layer.get_config()
    assert "kernel_size" not in config and config["padding"] == padding
    x = np.random.default_rng(4).normal(size=(2, 4, 5, 2)).astype(np.float32)
    layer.bias.assign(np.random.default_rng(5).normal(size=5).astype(np.float32))
    copy = UpSamplingConv2D.from_config(config)
    copy.build((None, 4, 5, 2))
    copy.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(copy(x)), np.asarray(layer(x)))
    conv = layers.Conv2D(5, (3, 3), padding=padding, activation="relu")
    conv.build((None, 8, 10, 2))
    conv.set_weights(layer.get_weights())
    expected = conv(layers.UpSampling2D((2, 2))(x))
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", [None, "same", "SAME", "Valid"])
def test_upsampling_conv_reads_its_padding_as_keras_does(padding):
    """The default is "same", and Keras accepts the padding in any case: so does the phase arithmetic."""
    fused = UpSamplingConv2D(3) if padding is None else UpSamplingConv2D(3, padding)
    fused.build((None, 5, 4, 2))
    conv = layers.Conv2D(3, (3, 3), padding=padding or "same")
    conv.build((None, 10, 8, 2))
    conv.set_weights([fused.kernel.numpy(), np.random.default_rng(6).normal(size=3).astype(np.float32)])
    fused.bias.assign(conv.bias)
    x = np.random.default_rng(7).normal(size=(2, 5, 4, 2)).astype(np.float32)
    expected = np.asarray(conv(layers.UpSampling2D((2, 2))(x)))
    assert fused.compute_output_shape(x.shape) == expected.shape
    np.testing.assert_allclose(np.asarray(fused(x)), expected, rtol=1e-5, atol=1e-5)


def test_same_conv_is_the_stock_3x3_convolution_with_same_padding():
    """SameConv2D's own code only fixes the kernel size and padding (the compiled kernel is tested in
    tests/test_kernels.py): its keras.ops path is Conv2D(F, (3, 3), padding="same")."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
    layer = SameConv2D(5, activation="relu", name="same")
    layer.build((None, 6, 7, 3))
    random_weights(layer, rng)
    conv = layers.Conv2D(5, (3, 3), padding="same", activation="relu")
    conv.build((None, 6, 7, 3))
    conv.set_weights(layer.get_weights())
    y = np.asarray(layer(x))
    assert y.shape == (2, 6, 7, 5)
    np.testing.assert_allclose(y, np.asarray(conv(x)), rtol=1e-6, atol=1e-6)
    config = layer.get_config()
    assert "kernel_size" not in config and "padding" not in config  # fixed by the layer
    copy = SameConv2D.from_config(config)
    copy.build((None, 6, 7, 3))
    copy.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(copy(x)), y)


def test_a_compiled_kernel_takes_only_the_layers_it_can_compute(monkeypatch):
    """The dispatch rule: a layer goes to its compiled kernel only in float32, channels last, with a bias,
    a relu, linear or sigmoid activation, on a 4-D input of known size, outside any distribution, and
    when the library has its (input, output) channels compiled in. Anything else runs the keras.ops code.

    The library is asked through `vaelab.kernels.runs`, here a stand-in that has (3, 4) compiled in, so
    the rule is checked without a compiler; tests/test_kernels.py checks the kernels themselves.
    """
    asked = []

    def runs(kind, channels):
        asked.append((kind, tuple(channels)))
        return tuple(channels) == (3, 4)

    monkeypatch.setattr(kernels, "runs", runs)
    x = np.zeros((2, 6, 8, 3), np.float32)
    for activation, name in (("relu", "relu"), (None, "linear"), ("sigmoid", "sigmoid")):
        assert _kernel_activation(SameConv2D(4, activation=activation), "conv", x) == name
    assert asked == [("conv", (3, 4))] * 3  # the kind and the channels of this layer on this input
    assert _kernel_activation(UpSamplingConv2D(4, "valid"), "upconv", x) == "linear"
    assert asked[-1] == ("upconv", (3, 4))
    assert _kernel_activation(SameConv2D(4), "conv", keras.KerasTensor((None, 6, 8, 3))) == "linear"  # any batch
    assert _kernel_activation(SameConv2D(5), "conv", x) is None  # (3, 5) is not compiled in
    refused = {
        "float16 layer": (SameConv2D(4, dtype="float16"), x),
        "bfloat16 computation": (SameConv2D(4, dtype="mixed_bfloat16"), x),
        "float16 input": (SameConv2D(4), x.astype(np.float16)),
        "channels first": (SameConv2D(4, data_format="channels_first"), x),
        "no bias": (SameConv2D(4, use_bias=False), x),
        "tanh": (SameConv2D(4, activation="tanh"), x),
        "3-D input": (SameConv2D(4), x[0]),
        "5-D input": (SameConv2D(4), x[None]),
        "unknown height": (SameConv2D(4), keras.KerasTensor((None, None, 8, 3))),
        "unknown width": (SameConv2D(4), keras.KerasTensor((None, 6, None, 3))),
    }
    for what, (layer, inputs) in refused.items():
        assert _kernel_activation(layer, "conv", inputs) is None, what
    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1])
    with distribution.scope():  # XLA would gather the whole batch onto every device for the call
        assert _kernel_activation(SameConv2D(4), "conv", x) is None
    assert _kernel_activation(SameConv2D(4), "conv", x) == "linear"


@pytest.mark.parametrize(
    ("layer", "padding"),
    [
        (lambda: ConvMaxPool2D(4), "same"),
        (lambda: SameConv2D(4), "same"),
        (lambda: UpSamplingConv2D(4), "same"),
        (lambda: UpSamplingConv2D(4, "valid"), "valid"),
        (lambda: HalvingConv2D(4), "same"),
        (lambda: DoublingConv2DTranspose(4), "same"),
    ],
)
def test_fused_layers_tell_the_browser_their_stock_convolution(layer, padding):
    """The live report's JavaScript runs each fused layer as its stock pair, from the layer's own attributes."""
    from vaelab.explore.webmodel import describe

    x = keras.Input((8, 8, 2))
    described = describe(keras.Model(x, layer()(x)))
    conv = next(op for op in described["ops"] if op["op"] in ("conv2d", "conv2d_transpose"))
    assert conv["padding"] == padding


@pytest.mark.parametrize(("shape", "filters"), [((32, 32, 3), 16), ((45, 37, 3), 5), ((7, 6, 4), 3), ((1, 2, 2), 2)])
@pytest.mark.parametrize(
    ("fused", "stock"),
    [
        (HalvingConv2D, lambda f, **kw: layers.Conv2D(f, 3, strides=2, padding="same", **kw)),
        (DoublingConv2DTranspose, lambda f, **kw: layers.Conv2DTranspose(f, 3, strides=2, padding="same", **kw)),
    ],
)
def test_the_convnets_strided_layers_equal_the_stock_ones(shape, filters, fused, stock):
    """The same variables give the same outputs and gradients (even and odd sizes: Keras pads them differently)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, *shape)).astype(np.float32)
    ours, theirs = fused(filters, activation="relu"), stock(filters, activation="relu")
    ours(x), theirs(x)
    random_weights(theirs, rng)
    ours.set_weights(theirs.get_weights())
    y, grads, grad_x = value_and_grads([ours], x)
    y_stock, grads_stock, grad_x_stock = value_and_grads([theirs], x)
    assert y.shape == y_stock.shape
    np.testing.assert_allclose(y, y_stock, atol=2e-5)
    for g, g_stock in zip(grads, grads_stock, strict=True):
        np.testing.assert_allclose(g, g_stock, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(grad_x, grad_x_stock, atol=2e-5)
    config = ours.get_config()
    assert type(ours).from_config(config).get_config() == config  # round-trips with its fixed settings left out


def test_the_fused_and_the_stock_convnet_have_the_same_variables_and_outputs():
    config = PRESETS["convnet"].for_data((45, 37, 3))
    fused = build_models(config, seed=0)
    stock = build_models(dataclasses.replace(config, implementation="keras"), seed=0)
    assert [(w.path, w.shape) for w in fused.vae.weights] == [(w.path, w.shape) for w in stock.vae.weights]
    x = np.random.default_rng(0).uniform(size=(4, 45, 37, 3)).astype(np.float32)
    np.testing.assert_allclose(
        fused.encoder.predict(x, verbose=0)[0], stock.encoder.predict(x, verbose=0)[0], atol=1e-5
    )
    z = np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)
    np.testing.assert_allclose(fused.generator.predict(z, verbose=0), stock.generator.predict(z, verbose=0), atol=1e-5)
