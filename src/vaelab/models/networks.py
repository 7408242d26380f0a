"""The networks every model of the family shares: the encoder bodies, the decoders, and the layers between them.

Images enter every network as (H, W, C) floats in [0, 1] (`ModelConfig.input_shape`; the exercise's
28x28x1 MNIST by default). The dense network flattens them (the course script's 784 inputs for MNIST);
the ConvNet of part (g) reads 28x28x1 images as they are; the convnet is built from the image's shape.
A conditional model (`ModelConfig.conditional`: the cvae) also gives the encoder body a one-hot label,
concatenated to the flattened image (the mlp) or to the flattened feature maps (the ConvNets), and the
decoder a label concatenated to z (`vaelab.models.build_models`).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
from collections.abc import Callable, Iterator

import keras
import numpy as np
from keras import layers, ops

from vaelab.config import ModelConfig
from vaelab.models.layers import (
    ConvMaxPool2D,
    Dense,
    DoublingConv2DTranspose,
    HalvingConv2D,
    SameConv2D,
    UpSamplingConv2D,
)


@keras.saving.register_keras_serializable(package="vaelab")
class Sampling(layers.Layer):
    """Samples z, the vector encoding a digit: z = z_mean + exp(z_log_var / 2) * epsilon."""

    def __init__(self, epsilon_std: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.epsilon_std = epsilon_std
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name=f"{self.name}_seed")

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(ops.shape(z_mean), stddev=self.epsilon_std, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def get_config(self):
        return {**super().get_config(), "epsilon_std": self.epsilon_std, "seed": self.seed}


@keras.saving.register_keras_serializable(package="vaelab")
class ImportanceSampling(Sampling):
    """Samples K codes per image from q(z|x): z (b, K, latent_dim) = z_mean + exp(z_log_var / 2) * epsilon. The iwae's
    importance samples, and the vae's draws when its ELBO is averaged over K > 1 (`ModelConfig.samples`)."""

    def __init__(self, samples: int, epsilon_std: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(epsilon_std, seed, **kwargs)
        self.samples = samples

    def call(self, inputs):
        z_mean, z_log_var = inputs
        shape = (ops.shape(z_mean)[0], self.samples, ops.shape(z_mean)[-1])
        epsilon = keras.random.normal(shape, stddev=self.epsilon_std, seed=self.seed_generator)
        return z_mean[:, None] + ops.exp(0.5 * z_log_var[:, None]) * epsilon

    def compute_output_shape(self, input_shape):
        batch, dim = input_shape[0]
        return (batch, self.samples, dim)

    def get_config(self):
        return {**super().get_config(), "samples": self.samples}


@keras.saving.register_keras_serializable(package="vaelab")
class FoldSamples(layers.Layer):
    """(b, K, latent_dim) -> (b * K, latent_dim): image i's K codes at rows i*K .. i*K + K-1, decoded in one call."""

    def call(self, z):
        return ops.reshape(z, (-1, ops.shape(z)[-1]))

    def compute_output_shape(self, input_shape):
        batch, k, dim = input_shape
        return (None if batch is None else batch * k, dim)


@keras.saving.register_keras_serializable(package="vaelab")
class Binarize(layers.Layer):
    """Dynamic binarisation: during training each pixel becomes 1 with probability equal to its grey value.

    A fresh draw every time an image is seen (so every epoch), as in Burda et al. (2015); at
    inference the layer passes its input through, and binary inputs are unchanged either way.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name=f"{self.name}_seed")

    def call(self, x, training=False):
        if not training:
            return x
        return ops.cast(keras.random.uniform(ops.shape(x), seed=self.seed_generator) < x, x.dtype)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="vaelab")
class FixedLogVariance(layers.Layer):
    """Part (f): the variance is fixed to ones, so `z_log_var` is zero and nothing about it is learned."""

    def call(self, z_mean):
        return ops.zeros_like(z_mean)


@keras.saving.register_keras_serializable(package="vaelab")
class LogScale(layers.Layer):
    """The learned log-scale of the gaussian (log sigma) or the logistic (log s) likelihood: one number for
    every pixel ("global") or one per pixel ("pixel"), not depending on z, starting at `initial`
    (`vaelab.models.likelihoods.INITIAL_LOG_SCALE`); outputs it for each image."""

    def __init__(self, image_shape: tuple[int, int, int], scale: str = "global", initial: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.scale = scale
        self.initial = float(initial)
        shape = self.image_shape if scale == "pixel" else (1, 1, 1)
        start = keras.initializers.Constant(self.initial)
        self.log_scale = self.add_weight(shape=shape, initializer=start, name="log_scale")

    def call(self, x_decoded_mean):
        # The image's channels: a decoder output with more (logistic-black's pi) has no scale for them.
        locations = x_decoded_mean[..., : self.image_shape[-1]]
        return ops.zeros_like(locations) + ops.cast(self.log_scale, x_decoded_mean.dtype)

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape, "scale": self.scale, "initial": self.initial}


Initializer = Callable[[], keras.initializers.Initializer]

_UNSET = contextvars.ContextVar("vaelab_unset_weights", default=False)


class Unset(keras.initializers.Initializer):
    """Stands for `initializer` in a network whose saved weights are about to replace its initial ones: zeros made
    by NumPy, so that nothing is computed (on JAX each random initializer is compiled once per weight shape:
    seconds for a network). Its config is `initializer`'s, seed included."""

    def __init__(self, initializer: keras.initializers.Initializer):
        self.initializer = initializer

    def __call__(self, shape, dtype=None):
        return np.zeros(shape, keras.backend.standardize_dtype(dtype))

    def get_config(self):
        return self.initializer.get_config()


@contextlib.contextmanager
def unset_weights() -> Iterator[None]:
    """Within it, the networks' seeded random initial weights are `Unset`: for a network about to load its weights."""
    token = _UNSET.set(True)
    try:
        yield
    finally:
        _UNSET.reset(token)


def restore_initializers(model: keras.Model) -> None:
    """Gives `model`'s layers back the initializers that `Unset` stood for, so that the model saves (its
    config) as one built with them: a `.keras` file of a loaded run opens in Keras like any other."""
    for layer in model._flatten_layers(include_self=False):
        for name, value in list(vars(layer).items()):
            if isinstance(value, Unset):
                setattr(layer, name, value.initializer)


def initial(initializer: keras.initializers.Initializer) -> keras.initializers.Initializer:
    """`initializer`, or its `Unset` stand-in within `unset_weights`."""
    return Unset(initializer) if _UNSET.get() else initializer


def kernel_initializers(seed: int | None) -> Initializer:
    """Gives each layer Keras' default kernel initializer (Glorot uniform) with its own seed from `seed`."""
    count = itertools.count()
    return lambda: initial(keras.initializers.GlorotUniform(seed=None if seed is None else 1000 * seed + next(count)))


def apply(stack: list[layers.Layer], tensor):
    """`tensor` through the layers of `stack` in order (a decoder's layers, on z or on the generator's input)."""
    for layer in stack:
        tensor = layer(tensor)
    return tensor


def dense(
    units: int, name: str, init: Initializer, activation: str | None = None, *, implementation: str = "keras"
) -> layers.Dense:
    """A Dense layer: Keras' own (`implementation` "keras"), or vaelab's (`vaelab.models.layers.Dense`, the same
    layer, run
        by the compiled kernel where it can be) for "fused"."""
    kind = Dense if implementation == "fused" else layers.Dense
    return kind(units, activation=activation, name=name, kernel_initializer=init())


def _conv(
    filters: int, name: str, init: Initializer, activation="relu", padding="same", strides: int = 1
) -> layers.Conv2D:
    """Conv2D(filters, (3, 3)) as the exercise writes it (with `strides` 2: the image's height and width halved)."""
    return layers.Conv2D(
        filters, (3, 3), strides=strides, activation=activation, padding=padding, name=name, kernel_initializer=init()
    )


def _with_label(flat, label):
    """The flattened image or feature maps, with the one-hot label concatenated after them (a conditional model)."""
    return flat if label is None else layers.Concatenate(name="encoder_condition")([flat, label])


def _hidden_names(side: str, count: int) -> list[str]:
    """encoder_h, encoder_h2, ...: the course network's one layer keeps its name, so its checkpoints still load."""
    return [f"{side}_h" + (str(k + 1) if k else "") for k in range(count)]


def _mlp_encoder(x, config: ModelConfig, init: Initializer, label=None):
    h = _with_label(layers.Flatten(name="flatten")(x), label)  # the course script's 784 inputs for MNIST
    widths = config.hidden_widths
    for width, name in zip(widths, _hidden_names("encoder", len(widths)), strict=True):
        h = dense(width, name, init, config.activation, implementation=config.implementation)(h)
    return h


def _mlp_decoder(config: ModelConfig, init: Initializer) -> list[layers.Layer]:
    widths = config.hidden_widths[::-1]  # the encoder's layers mirrored
    names = _hidden_names("decoder", len(widths))
    hidden = [
        dense(w, n, init, config.activation, implementation=config.implementation)
        for w, n in zip(widths, names, strict=True)
    ]
    return [
        *hidden,
        dense(
            math.prod(config.output_shape),
            "decoder_mean",
            init,
            config.output_activation,
            implementation=config.implementation,
        ),
        layers.Reshape(config.output_shape, name="decoder_image"),
    ]


def _conv_encoder(x, config: ModelConfig, init: Initializer, label=None):
    if config.implementation == "fused":  # each conv+pool pair in one layer, with the pair's conv's name
        h = ConvMaxPool2D(16, name="encoder_conv1", kernel_initializer=init())(x)  # conv 28x28x16, pool 14x14x16
        h = ConvMaxPool2D(8, name="encoder_conv2", kernel_initializer=init())(h)  # conv 14x14x8, pool 7x7x8
    else:
        h = _conv(16, "encoder_conv1", init)(x)  # 28x28x16
        h = layers.MaxPooling2D((2, 2), padding="same", name="encoder_pool1")(h)  # 14x14x16
        h = _conv(8, "encoder_conv2", init)(h)  # 14x14x8
        h = layers.MaxPooling2D((2, 2), padding="same", name="encoder_pool2")(h)  # 7x7x8
    h = _with_label(layers.Flatten(name="flatten")(h), label)  # 392 (+ the classes)
    return dense(config.intermediate_dim, "encoder_h", init, "relu", implementation=config.implementation)(h)


def _conv_decoder(config: ModelConfig, init: Initializer) -> list[layers.Layer]:
    head = [
        dense(config.intermediate_dim, "decoder_h", init, "relu", implementation=config.implementation),
        dense(8 * 8 * 8, "decoder_upsample", init, "relu", implementation=config.implementation),
        layers.Reshape((8, 8, 8), name="decoder_reshape"),
    ]
    if config.implementation == "fused":
        return [
            *head,
            SameConv2D(8, activation="relu", name="decoder_conv1", kernel_initializer=init()),  # 8x8x8
            UpSamplingConv2D(16, "valid", activation="relu", name="decoder_conv2", kernel_initializer=init()),
            UpSamplingConv2D(
                config.output_shape[-1],
                "same",
                activation=config.output_activation,
                name="decoder_mean",
                kernel_initializer=init(),
            ),
        ]  # up 16x16x8, conv 14x14x16; up 28x28x16, conv 28x28x1
    return [
        *head,
        _conv(8, "decoder_conv1", init),  # 8x8x8
        layers.UpSampling2D((2, 2), name="decoder_up1"),  # 16x16x8
        _conv(16, "decoder_conv2", init, padding="valid"),  # 14x14x16
        layers.UpSampling2D((2, 2), name="decoder_up2"),  # 28x28x16
        _conv(config.output_shape[-1], "decoder_mean", init, activation=config.output_activation),  # 28x28x1
    ]


def _convnet_encoder(x, config: ModelConfig, init: Initializer, label=None):
    """Stride-2 3x3 convolutions, one block per width in `filters`, each halving the image (rounding up); fused:
    each computed as a stride-1 convolution of the image's 2x2 phases (`HalvingConv2D`), the same layer."""
    h = x
    for k, filters in enumerate(config.conv_filters, start=1):
        name = f"encoder_conv{k}"
        if config.implementation == "fused":
            h = HalvingConv2D(filters, activation="relu", name=name, kernel_initializer=init())(h)
        else:
            h = _conv(filters, name, init, strides=2)(h)
    h = _with_label(layers.Flatten(name="flatten")(h), label)
    return dense(config.intermediate_dim, "encoder_h", init, "relu", implementation=config.implementation)(h)


def _convnet_decoder(config: ModelConfig, init: Initializer) -> list[layers.Layer]:
    """The encoder mirrored: stride-2 transposed convolutions back up, then the image cropped to its shape."""
    height, width, _ = config.input_shape
    channels = config.output_shape[-1]  # the image's, and logistic-black's pi
    filters = config.conv_filters
    blocks = len(filters)
    side = (-(-height // 2**blocks), -(-width // 2**blocks))  # the encoder's last map
    widths = (*filters[::-1][1:], filters[0])
    up = [_conv_transpose(w, f"decoder_conv{k}", init, config.implementation) for k, w in enumerate(widths, start=1)]
    grown = (side[0] * 2**blocks, side[1] * 2**blocks)  # at least the image: crop the extra rows and columns
    excess = ((0, grown[0] - height), (0, grown[1] - width))
    crop = [layers.Cropping2D(excess, name="decoder_crop")] if grown != (height, width) else []
    return [
        dense(config.intermediate_dim, "decoder_h", init, "relu", implementation=config.implementation),
        dense(side[0] * side[1] * filters[-1], "decoder_upsample", init, "relu", implementation=config.implementation),
        layers.Reshape((*side, filters[-1]), name="decoder_reshape"),
        *up,
        *crop,
        _conv(channels, "decoder_mean", init, activation=config.output_activation),
    ]


def _conv_transpose(filters: int, name: str, init: Initializer, implementation: str) -> layers.Conv2DTranspose:
    """A stride-2 3x3 transposed convolution: the map's height and width doubled (fused: computed at the low
    resolution, `DoublingConv2DTranspose`, the same layer)."""
    if implementation == "fused":
        return DoublingConv2DTranspose(filters, activation="relu", name=name, kernel_initializer=init())
    return layers.Conv2DTranspose(
        filters, 3, strides=2, padding="same", activation="relu", name=name, kernel_initializer=init()
    )


# The encoder body of each arch: (x, config, init, label=None) -> h, the features the z_mean and z_log_var heads read.
ENCODER_BODIES = {"mlp": _mlp_encoder, "conv": _conv_encoder, "convnet": _convnet_encoder}
# The decoder of each arch: (config, init) -> its layers, from a latent point (z, or [z, label]) to the pixels'
# parameters (`ModelConfig.output_shape`: the means, or locations, and logistic-black's pi).
DECODERS = {"mlp": _mlp_decoder, "conv": _conv_decoder, "convnet": _convnet_decoder}
