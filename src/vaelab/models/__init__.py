"""The VAE family as Keras functional models: for every member an `encoder`, a `generator` and the trainable model.

    MODELS["vae"]     VAE     the ELBO, with β (vaelab.models.vae)
    MODELS["iwae"]    IWAE    the importance-weighted bound with K codes per image (vaelab.models.iwae)
    MODELS["cvae"]    CVAE    encoder and decoder conditioned on the label (vaelab.models.cvae)
    MODELS["vamp"]    Vamp    the ELBO with the VampPrior, a mixture over learned pseudo-inputs (vaelab.models.vamp)
    MODELS["betatc"]  BetaTC  the ELBO's KL split in three, β on the total correlation (vaelab.models.betatc)
    MODELS["vqvae"]   VQVAE   codes from a learned codebook, the uniform prior over them (vaelab.models.vqvae)

All of them share the networks of `vaelab.models.networks` (the arch's encoder body and decoder), so a checkpoint's
variables have the same names in each (a vamp's also holds its pseudo-inputs). `ModelConfig.family` picks the
member; the registry gives its trainable model class, which knows its objective (`compute_loss`), how it draws z
(`draw`) and its prior p(z) (`prior_outputs` in the graph, `prior` for evaluation and generation:
vaelab.models.priors). The vqvae's codes are not Gaussian: its encoder gives code indices and its generator reads
them (`build_vqvae`). What the rest of the package asks about a member (its options, bound, logged terms, whether
its latent is Gaussian) is its `vaelab.family.Family`; `register` adds a member, both halves at once
(docs/adding-a-model.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import keras
from keras import layers as keras_layers  # not `layers`: the package has a submodule of that name

from vaelab.config import ModelConfig
from vaelab.family import FAMILIES, Family
from vaelab.models.betatc import BetaTC
from vaelab.models.cvae import CVAE
from vaelab.models.iwae import IWAE
from vaelab.models.likelihoods import INITIAL_LOG_SCALE, SCALED
from vaelab.models.networks import (
    DECODERS,
    ENCODER_BODIES,
    Binarize,
    FixedLogVariance,
    LogScale,
    Sampling,
    apply,
    dense,
    restore_initializers,
    unset_weights,
)
from vaelab.models.networks import kernel_initializers as _kernel_initializers
from vaelab.models.priors import StandardNormal, VampMixture
from vaelab.models.vae import VAE, bernoulli_log_likelihood, kl_loss, reconstruction_loss
from vaelab.models.vamp import Vamp
from vaelab.models.vqvae import VQVAE, VectorQuantizer, build_vqvae

# The public names (once also `vaelab.model`'s, a module since folded in here).
__all__ = [
    "MODELS",
    "VAE",
    "Binarize",
    "FixedLogVariance",
    "LogScale",
    "Models",
    "Sampling",
    "bernoulli_log_likelihood",
    "build_models",
    "kl_loss",
    "parameter_count",
    "reconstruction_loss",
    "register",
]

MODELS: dict[str, type[VAE]] = {
    "vae": VAE, "iwae": IWAE, "cvae": CVAE, "vamp": Vamp, "betatc": BetaTC, "vqvae": VQVAE
}  # fmt: skip


def register(family: Family, model: type[VAE]) -> None:
    """Adds a member to the family: `family` says what the package asks about it (vaelab.family), `model`, a
    subclass of `VAE` (its objective `compute_loss`, its `draw`, its prior), is the network `build_models` trains.
    From then on `--model`'s checks, training, evaluation and the report take `family.name` like a built-in."""
    if not isinstance(family, Family) or not (isinstance(model, type) and issubclass(model, VAE)):
        raise TypeError("register(family, model) takes a vaelab.family.Family and a subclass of vaelab.models.VAE")
    FAMILIES[family.name] = family
    MODELS[family.name] = model


def parameter_count(model: keras.Model) -> int:
    """The network's learned parameters: its trainable weights, and a vqvae's codebook, learned by moving averages
    rather than gradients (the KL weight, a setting held as a variable, is not one)."""
    codebooks = [layer.codebook for layer in model.layers if isinstance(layer, VectorQuantizer)]
    return sum(math.prod(w.shape) for w in [*model.trainable_weights, *codebooks])


@dataclass
class Models:
    """The three functional models of one network; they share their layers. A conditional model's encoder and
    generator take the one-hot label (n, classes) as a second input."""

    encoder: keras.Model  # x -> [z_mean, z_log_var]; a cvae's: [x, label] -> [z_mean, z_log_var]
    generator: keras.Model  # z -> x_decoded_mean, the decoder layers on a latent input; a cvae's: [z, label] -> ...
    vae: VAE  # x (a cvae: [x, label]) -> {x_decoded_mean, z_mean, z_log_var, ...}, trained end to end

    def prior(self) -> StandardNormal | VampMixture:
        """p(z) with the current weights: N(0, I), or a vamp's mixture over its pseudo-inputs."""
        return self.vae.prior(self.encoder)


def build_models(
    config: ModelConfig,
    seed: int | None = None,
    *,
    binarize: bool = False,
    stock: bool = False,
    initialize: bool = True,
) -> Models:
    """Builds the encoder, the generator and the trainable model of `config.family` (`MODELS`) for `config`.

    `seed` seeds the initial weights and the sampling noise: the same seed builds the same network.
    With `binarize`, the model binarises its input afresh at every training step (see `Binarize`).
    With `stock`, the encoder and generator use stock Keras layers only (the exercise's layers one by
    one, the fixed variance as a frozen all-zero Dense), so that plain Keras can open them (`vaelab.training.export`).
    Without `initialize`, the seeded random initial weights are zeros (`Unset`), computed in no time: for a network
    whose saved weights are loaded next (`vaelab.run.load_run`), which then equals one built with them.
    """
    if not initialize:
        with unset_weights():
            built = build_models(config, seed, binarize=binarize, stock=stock)
        for model in (built.encoder, built.generator, built.vae):
            if model is not None:
                restore_initializers(model)
        return built
    config.validate()
    if stock:
        config = dataclasses.replace(config, implementation="keras")
    family = MODELS[config.family]
    if family is VQVAE:  # (a stock build has no trainable model: vae is None)
        return Models(*build_vqvae(config, seed, binarize=binarize, stock=stock))
    init = _kernel_initializers(seed)
    x = keras.Input(shape=config.input_shape, name="x")
    label = keras.Input(shape=(config.classes,), name="label") if config.conditional else None
    target = Binarize(seed=seed, name="binarize")(x) if binarize and not stock else x
    h = ENCODER_BODIES[config.arch](target, config, init, label)
    z_mean = dense(config.latent_dim, "z_mean", init, implementation=config.implementation)(h)
    if config.variance == "learned":
        z_log_var = dense(config.latent_dim, "z_log_var", init, implementation=config.implementation)(h)
    elif stock:  # 0 * h + 0 with frozen zeros: log sigma^2 = 0 from stock parts
        z_log_var = keras_layers.Dense(
            config.latent_dim, kernel_initializer="zeros", trainable=False, name="z_log_var"
        )(h)
    else:
        z_log_var = FixedLogVariance(name="z_log_var")(z_mean)
    decoded_z, drawn = family.draw(config, seed, z_mean, z_log_var)

    decoder_layers = DECODERS[config.arch](config, init)
    decoder_input = keras.Input(shape=(config.latent_dim,), name="decoder_input")
    if config.conditional:  # y concatenated to z, before the decoder's first layer
        condition = keras_layers.Concatenate(name="decoder_condition")
        generator_label = keras.Input(shape=(config.classes,), name="label")
        x_decoded_mean = apply(decoder_layers, condition([decoded_z, label]))
        generated = apply(decoder_layers, condition([decoder_input, generator_label]))
        inputs, generator_inputs = [x, label], [decoder_input, generator_label]
    else:
        x_decoded_mean = apply(decoder_layers, decoded_z)
        generated = apply(decoder_layers, decoder_input)
        inputs, generator_inputs = x, decoder_input
    encoder = keras.Model(inputs, [z_mean, z_log_var], name="encoder")
    outputs = {"x_decoded_mean": x_decoded_mean, "z_mean": z_mean, "z_log_var": z_log_var, **drawn}
    # The encoder's layers on images never binarised (a vamp's pseudo-inputs): Keras' training flag reaches a nested
    # model's Binarize whatever the call says, so such images enter after it.
    unbinarised = encoder if target is x else keras.Model(target, [z_mean, z_log_var], name="unbinarised_encoder")
    outputs.update(family.prior_outputs(config, init, x, unbinarised))
    if config.pixel_likelihood in SCALED:
        outputs["x_log_scale"] = LogScale(
            config.input_shape, config.scale, INITIAL_LOG_SCALE[config.pixel_likelihood], name="x_log_scale"
        )(x_decoded_mean)
    if binarize and not stock:
        outputs["x"] = target

    return Models(
        encoder=encoder,
        generator=keras.Model(generator_inputs, generated, name="generator"),
        vae=family(inputs, outputs, likelihood=config.pixel_likelihood, name="vae", **family.options(config)),
    )
