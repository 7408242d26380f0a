"""The VAEs as Keras functional models: `encoder`, `generator` and the trainable `vae`.

Images enter every network as (H, W, C) floats in [0, 1] (`ModelConfig.input_shape`; the exercise's
28x28x1 MNIST by default). The dense network flattens them (the course script's 784 inputs for MNIST);
the ConvNet of part (g) reads 28x28x1 images as they are; the convnet is built from the image's shape.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers, ops

from vaelab.config import ModelConfig
from vaelab.kl import gaussian_kl
from vaelab.layers import ConvMaxPool2D, SameConv2D, UpSamplingConv2D
from vaelab.likelihoods import SCALED, log_likelihood


def bernoulli_log_likelihood(x, x_decoded_mean):
    """log p(x|z) of each image in nats: the pixels independent Bernoulli(x_decoded_mean), summed.

    Written as Keras' binary cross-entropy (which clips probabilities to [1e-7, 1 - 1e-7]), over all
    axes but the first; for grey levels x in [0, 1] it is the continuous extension the course uses.
    """
    return log_likelihood("bernoulli", x, x_decoded_mean)


def reconstruction_loss(x, x_decoded_mean, likelihood: str = "bernoulli", x_log_scale=None):
    """-log p(x|z) per image, in nats: for the course's Bernoulli, binary cross-entropy summed over the pixels."""
    return -log_likelihood(likelihood, x, x_decoded_mean, x_log_scale)


def kl_loss(z_mean, z_log_var):
    """KL(q(z|x) || N(0, I)) per image, in nats, summed over the latent dimensions."""
    return ops.sum(gaussian_kl(z_mean, z_log_var), axis=-1)


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
    every pixel ("global") or one per pixel ("pixel"), not depending on z; outputs it for each image."""

    def __init__(self, image_shape: tuple[int, int, int], scale: str = "global", **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(image_shape)
        self.scale = scale
        shape = self.image_shape if scale == "pixel" else (1, 1, 1)
        self.log_scale = self.add_weight(shape=shape, initializer="zeros", name="log_scale")

    def call(self, x_decoded_mean):
        return ops.zeros_like(x_decoded_mean) + ops.cast(self.log_scale, x_decoded_mean.dtype)

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape, "scale": self.scale}


@keras.saving.register_keras_serializable(package="vaelab")
class VAE(keras.Model):
    """The trainable VAE: image -> {x_decoded_mean, z_mean, z_log_var} (and "x", the binarised input,
    for runs with dynamic binarisation: the image the reconstruction is scored against).

    Its loss per image, the objective minimised, is reconstruction_loss + w * kl_loss, in nats, where
    w = `kl_weight` (1 for the ELBO; vaelab.schedule sets it per epoch for beta and warm-up) and the
    reconstruction is scored with `likelihood` (vaelab.likelihoods; "x_log_scale" is its scale). Training
    logs `loss`, `reconstruction_loss`, `kl_loss`, `elbo_loss` (= reconstruction + KL: the negative
    ELBO, whatever w is) and `kl_weight`, each averaged over images.
    """

    def __init__(self, *args, likelihood: str = "bernoulli", **kwargs):
        super().__init__(*args, **kwargs)
        self.likelihood = likelihood
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.elbo_loss_tracker = keras.metrics.Mean(name="elbo_loss")
        self.kl_weight_tracker = keras.metrics.Mean(name="kl_weight")
        # A variable, not a Python number: the compiled step reads its current value, so changing it
        # between epochs needs no recompilation.
        self.kl_weight = keras.Variable(1.0, trainable=False, dtype="float32", name="kl_weight")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        reconstruction = reconstruction_loss(
            y_pred.get("x", x), y_pred["x_decoded_mean"], self.likelihood, y_pred.get("x_log_scale")
        )
        kl = kl_loss(y_pred["z_mean"], y_pred["z_log_var"])
        self.reconstruction_loss_tracker.update_state(reconstruction)
        self.kl_loss_tracker.update_state(kl)
        self.elbo_loss_tracker.update_state(reconstruction + kl)
        self.kl_weight_tracker.update_state(self.kl_weight)
        return ops.mean(reconstruction + ops.cast(self.kl_weight, kl.dtype) * kl)

    def get_config(self):
        return {**super().get_config(), "likelihood": self.likelihood}


def parameter_count(model: keras.Model) -> int:
    """The network's learned parameters (the KL weight, a setting held as a variable, is not one)."""
    return sum(math.prod(w.shape) for w in model.trainable_weights)


@dataclass
class Models:
    """The three functional models of one network; they share their layers."""

    encoder: keras.Model  # x -> [z_mean, z_log_var]
    generator: keras.Model  # z -> x_decoded_mean, the decoder layers on a latent input
    vae: VAE  # x -> {x_decoded_mean, z_mean, z_log_var}, trained end to end


def build_models(
    config: ModelConfig, seed: int | None = None, *, binarize: bool = False, stock: bool = False
) -> Models:
    """Builds the encoder, the generator and the VAE for `config`.

    `seed` seeds the initial weights and the sampling noise: the same seed builds the same network.
    With `binarize`, the VAE binarises its input afresh at every training step (see `Binarize`).
    With `stock`, the encoder and generator use stock Keras layers only (the exercise's layers one by
    one, the fixed variance as a frozen all-zero Dense), so that plain Keras can open them (`vaelab.export`).
    """
    config.validate()
    if stock:
        config = dataclasses.replace(config, implementation="keras")
    init = _kernel_initializers(seed)
    x = keras.Input(shape=config.input_shape, name="x")
    target = Binarize(seed=seed, name="binarize")(x) if binarize and not stock else x
    h = _ENCODER_BODIES[config.arch](target, config, init)
    z_mean = _dense(config.latent_dim, "z_mean", init)(h)
    if config.variance == "learned":
        z_log_var = _dense(config.latent_dim, "z_log_var", init)(h)
    elif stock:  # 0 * h + 0 with frozen zeros: log sigma^2 = 0 from stock parts
        z_log_var = layers.Dense(config.latent_dim, kernel_initializer="zeros", trainable=False, name="z_log_var")(h)
    else:
        z_log_var = FixedLogVariance(name="z_log_var")(z_mean)
    z = Sampling(config.epsilon_std, seed=seed, name="z")([z_mean, z_log_var])

    decoder_layers = _DECODERS[config.arch](config, init)
    x_decoded_mean = _apply(decoder_layers, z)
    decoder_input = keras.Input(shape=(config.latent_dim,), name="decoder_input")
    outputs = {"x_decoded_mean": x_decoded_mean, "z_mean": z_mean, "z_log_var": z_log_var}
    if config.pixel_likelihood in SCALED:
        outputs["x_log_scale"] = LogScale(config.input_shape, config.scale, name="x_log_scale")(x_decoded_mean)
    if binarize and not stock:
        outputs["x"] = target

    return Models(
        encoder=keras.Model(x, [z_mean, z_log_var], name="encoder"),
        generator=keras.Model(decoder_input, _apply(decoder_layers, decoder_input), name="generator"),
        vae=VAE(x, outputs, likelihood=config.pixel_likelihood, name="vae"),
    )


Initializer = Callable[[], keras.initializers.Initializer]


def _kernel_initializers(seed: int | None) -> Initializer:
    """Gives each layer Keras' default kernel initializer (Glorot uniform) with its own seed from `seed`."""
    count = itertools.count()
    return lambda: keras.initializers.GlorotUniform(seed=None if seed is None else 1000 * seed + next(count))


def _apply(stack: list[layers.Layer], tensor):
    for layer in stack:
        tensor = layer(tensor)
    return tensor


def _dense(units: int, name: str, init: Initializer, activation: str | None = None) -> layers.Dense:
    return layers.Dense(units, activation=activation, name=name, kernel_initializer=init())


def _conv(
    filters: int, name: str, init: Initializer, activation="relu", padding="same", strides: int = 1
) -> layers.Conv2D:
    """Conv2D(filters, (3, 3)) as the exercise writes it (with `strides` 2: the image's height and width halved)."""
    return layers.Conv2D(
        filters, (3, 3), strides=strides, activation=activation, padding=padding, name=name, kernel_initializer=init()
    )


def _hidden_names(side: str, count: int) -> list[str]:
    """encoder_h, encoder_h2, ...: the course network's one layer keeps its name, so its checkpoints still load."""
    return [f"{side}_h" + (str(k + 1) if k else "") for k in range(count)]


def _mlp_encoder(x, config: ModelConfig, init: Initializer):
    h = layers.Flatten(name="flatten")(x)  # the course script's 784 inputs for MNIST
    widths = config.hidden_widths
    for width, name in zip(widths, _hidden_names("encoder", len(widths)), strict=True):
        h = _dense(width, name, init, config.activation)(h)
    return h


def _mlp_decoder(config: ModelConfig, init: Initializer) -> list[layers.Layer]:
    widths = config.hidden_widths[::-1]  # the encoder's layers mirrored
    hidden = [
        _dense(w, n, init, config.activation)
        for w, n in zip(widths, _hidden_names("decoder", len(widths)), strict=True)
    ]
    return [
        *hidden,
        _dense(math.prod(config.input_shape), "decoder_mean", init, "sigmoid"),
        layers.Reshape(config.input_shape, name="decoder_image"),
    ]


def _conv_encoder(x, config: ModelConfig, init: Initializer):
    if config.implementation == "fused":  # each conv+pool pair in one layer, with the pair's conv's name
        h = ConvMaxPool2D(16, name="encoder_conv1", kernel_initializer=init())(x)  # conv 28x28x16, pool 14x14x16
        h = ConvMaxPool2D(8, name="encoder_conv2", kernel_initializer=init())(h)  # conv 14x14x8, pool 7x7x8
    else:
        h = _conv(16, "encoder_conv1", init)(x)  # 28x28x16
        h = layers.MaxPooling2D((2, 2), padding="same", name="encoder_pool1")(h)  # 14x14x16
        h = _conv(8, "encoder_conv2", init)(h)  # 14x14x8
        h = layers.MaxPooling2D((2, 2), padding="same", name="encoder_pool2")(h)  # 7x7x8
    h = layers.Flatten(name="flatten")(h)  # 392
    return _dense(config.intermediate_dim, "encoder_h", init, "relu")(h)


def _conv_decoder(config: ModelConfig, init: Initializer) -> list[layers.Layer]:
    head = [
        _dense(config.intermediate_dim, "decoder_h", init, "relu"),
        _dense(8 * 8 * 8, "decoder_upsample", init, "relu"),
        layers.Reshape((8, 8, 8), name="decoder_reshape"),
    ]
    if config.implementation == "fused":
        return [
            *head,
            SameConv2D(8, activation="relu", name="decoder_conv1", kernel_initializer=init()),  # 8x8x8
            UpSamplingConv2D(16, "valid", activation="relu", name="decoder_conv2", kernel_initializer=init()),
            UpSamplingConv2D(1, "same", activation="sigmoid", name="decoder_mean", kernel_initializer=init()),
        ]  # up 16x16x8, conv 14x14x16; up 28x28x16, conv 28x28x1
    return [
        *head,
        _conv(8, "decoder_conv1", init),  # 8x8x8
        layers.UpSampling2D((2, 2), name="decoder_up1"),  # 16x16x8
        _conv(16, "decoder_conv2", init, padding="valid"),  # 14x14x16
        layers.UpSampling2D((2, 2), name="decoder_up2"),  # 28x28x16
        _conv(1, "decoder_mean", init, activation="sigmoid"),  # 28x28x1
    ]


def _convnet_encoder(x, config: ModelConfig, init: Initializer):
    """Stride-2 3x3 convolutions, one block per width in `filters`, each halving the image (rounding up)."""
    h = x
    for k, filters in enumerate(config.conv_filters, start=1):
        h = _conv(filters, f"encoder_conv{k}", init, strides=2)(h)
    h = layers.Flatten(name="flatten")(h)
    return _dense(config.intermediate_dim, "encoder_h", init, "relu")(h)


def _convnet_decoder(config: ModelConfig, init: Initializer) -> list[layers.Layer]:
    """The encoder mirrored: stride-2 transposed convolutions back up, then the image cropped to its shape."""
    height, width, channels = config.input_shape
    filters = config.conv_filters
    blocks = len(filters)
    side = (-(-height // 2**blocks), -(-width // 2**blocks))  # the encoder's last map
    widths = (*filters[::-1][1:], filters[0])
    up = [_conv_transpose(w, f"decoder_conv{k}", init) for k, w in enumerate(widths, start=1)]
    grown = (side[0] * 2**blocks, side[1] * 2**blocks)  # at least the image: crop the extra rows and columns
    excess = ((0, grown[0] - height), (0, grown[1] - width))
    crop = [layers.Cropping2D(excess, name="decoder_crop")] if grown != (height, width) else []
    return [
        _dense(config.intermediate_dim, "decoder_h", init, "relu"),
        _dense(side[0] * side[1] * filters[-1], "decoder_upsample", init, "relu"),
        layers.Reshape((*side, filters[-1]), name="decoder_reshape"),
        *up,
        *crop,
        _conv(channels, "decoder_mean", init, activation="sigmoid"),
    ]


def _conv_transpose(filters: int, name: str, init: Initializer) -> layers.Conv2DTranspose:
    """A stride-2 3x3 transposed convolution: the map's height and width doubled."""
    return layers.Conv2DTranspose(
        filters, 3, strides=2, padding="same", activation="relu", name=name, kernel_initializer=init()
    )


_ENCODER_BODIES = {"mlp": _mlp_encoder, "conv": _conv_encoder, "convnet": _convnet_encoder}
_DECODERS = {"mlp": _mlp_decoder, "conv": _conv_decoder, "convnet": _convnet_decoder}
