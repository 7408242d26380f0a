"""The VQ-VAE (van den Oord, Vinyals & Kavukcuoglu, 2017): codes that are the nearest of K codebook vectors.

The encoder maps an image to z_e, L code vectors of D numbers (L = `latent_dim`, D = `CODE_DIM`): for every
arch the encoder body's features through one dense head to L x D (the convnet's feature map goes through that
head too, so that all archs share one decoder input; its spatial positions are not the codes). Each vector is
replaced by its nearest codebook vector e (K = `ModelConfig.codes`, `--codes`); the decoder reads z_q = e with
the straight-through gradient (the decoder's gradient at z_q is passed to z_e). The objective per image:

    -log p(x|z_q)  +  beta_c ||z_e - sg[e]||^2,      beta_c = COMMITMENT (the paper's 0.25)

the reconstruction in nats plus the commitment, a squared distance summed over the L vectors (so the sum is in
no one unit: it is what is minimised, not a bound). The codebook does not learn by gradient (the paper's codebook
term ||sg[z_e] - e||^2): it moves by moving averages, a k-means step per batch, starts at the encoder's outputs
and restarts unused codes (`VectorQuantizer`), against the collapse of the codebook onto a few codes that
gradient-trained codebooks suffer (van den Oord et al., appendix A.1; Dhariwal et al., 2020; Lancucki et al.,
2020). The prior over the codes is uniform here (generation draws L codes uniformly); a learned one is
`vaelab.analysis.code_prior`. q(z|x) is a point mass on the nearest codes, so the ELBO under the uniform prior is
log p(x|z_q(x)) - L log K, and the importance-weighted bound equals it (`vaelab.analysis.evaluate_codes`). The model has
no KL term to weight: a vqvae refuses β and KL warm-up (vaelab.config), and logs no KL.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from vaelab.config import CODE_DIM, ModelConfig
from vaelab.family import COMMITMENT  # beta_c, the commitment loss's weight (the paper's 0.25)
from vaelab.models.likelihoods import INITIAL_LOG_SCALE, SCALED
from vaelab.models.networks import DECODERS, ENCODER_BODIES, Binarize, LogScale, apply, dense, initial
from vaelab.models.networks import kernel_initializers as _kernel_initializers
from vaelab.models.vae import VAE, reconstruction_loss

DECAY = 0.99  # gamma, the codebook's moving averages' decay per step: van den Oord et al.'s appendix A.1
DEAD = 0.5  # a code whose usage (an EMA count) falls under half its uniform share is dead: it restarts


@keras.saving.register_keras_serializable(package="vaelab")
class VectorQuantizer(layers.Layer):
    """The codebook, K vectors of D numbers. On z_e (b, L, D): [z_q, codes], the nearest codebook vector of each
    of the L vectors and its index (b, L) int32; with `lookup`, on codes (b, L): their vectors (b, L, D).

    The nearest e_k maximises 2 z.e_k - ||e_k||^2 (||z - e_k||^2 less ||z||^2, the same for every k): a Dense
    layer's scores, which is how the exported encoder finds it with stock layers (`weights_for`).

    In training (`training=True`) the codebook learns without gradients, as van den Oord et al.'s appendix A.1:
    after each step e_k = m_k / N_k, where N_k is an exponential moving average (decay `DECAY`) of how many of the
    batch's vectors chose code k (`usage`) and m_k one of their sum (`sums`): a k-means step per batch. A code
    whose usage falls below `DEAD` times its uniform share (the batch's vectors / K) is dead: it restarts at one
    of the batch's vectors (Dhariwal et al., 2020), with the share as its usage. At the first step every code is
    dead, so the codebook starts at the encoder's outputs rather than at its far-off random initial values.
    z_q is read from the codebook before the step's update.
    """

    def __init__(self, codes: int, code_dim: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.codes, self.code_dim, self.seed = codes, code_dim, seed
        # U(-1/K, 1/K), the usual choice of VQ-VAE implementations; replaced at the first training step
        init = initial(keras.initializers.RandomUniform(-1.0 / codes, 1.0 / codes, seed=seed))
        self.codebook = self.add_weight(shape=(codes, code_dim), initializer=init, trainable=False, name="codebook")
        self.usage = self.add_weight(shape=(codes,), initializer="zeros", trainable=False, name="usage")
        self.sums = self.add_weight(shape=(codes, code_dim), initializer="zeros", trainable=False, name="sums")
        self.restarts = keras.random.SeedGenerator(seed, name="restarts")

    def update(self, z_e, codes) -> None:
        """One EMA step of the codebook towards the batch's code vectors z_e (b, L, D), which chose `codes` (b, L);
        dead codes restarted."""
        z = ops.reshape(ops.stop_gradient(ops.cast(z_e, "float32")), (-1, self.code_dim))
        chosen = ops.one_hot(ops.reshape(codes, (-1,)), self.codes, dtype="float32")  # (n, K)
        usage = DECAY * self.usage + (1.0 - DECAY) * ops.sum(chosen, axis=0)
        sums = DECAY * self.sums + (1.0 - DECAY) * ops.matmul(ops.transpose(chosen), z)
        share = ops.cast(ops.shape(z)[0], "float32") / self.codes
        dead = ops.expand_dims(usage < DEAD * share, -1)
        picks = keras.random.randint((self.codes,), 0, ops.shape(z)[0], seed=self.restarts)
        fresh = ops.take(z, picks, axis=0)
        usage = ops.where(dead[:, 0], share, usage)
        sums = ops.where(dead, fresh * share, sums)
        self.usage.assign(usage)
        self.sums.assign(sums)
        self.codebook.assign(sums / ops.expand_dims(usage, -1))

    def scores(self, z_e):
        """(b, L, K): 2 z.e_k - ||e_k||^2, largest for the nearest codebook vector."""
        codebook = ops.cast(self.codebook, z_e.dtype)
        return 2.0 * ops.matmul(z_e, ops.transpose(codebook)) - ops.sum(ops.square(codebook), axis=-1)

    def call(self, inputs, lookup: bool = False, training: bool | None = None):
        if lookup:
            return ops.take(self.codebook, ops.cast(inputs, "int32"), axis=0)
        codes = ops.cast(ops.argmax(self.scores(inputs), axis=-1), "int32")
        z_q = ops.take(ops.cast(self.codebook, inputs.dtype), codes, axis=0)
        if training:
            self.update(inputs, codes)
        return [z_q, codes]

    def weights_for(self, stock: layers.Layer) -> list[np.ndarray]:
        """The codebook as the stock layer that stands for it in the exported files holds it: an Embedding's
        (K, D) table, or the scores Dense's kernel 2 e^T (D, K) and bias -||e||^2 (K,)."""
        codebook = np.asarray(self.codebook)
        if isinstance(stock, layers.Embedding):
            return [codebook]
        return [2.0 * codebook.T, -np.sum(codebook**2, axis=1)]

    def get_config(self):
        return {**super().get_config(), "codes": self.codes, "code_dim": self.code_dim, "seed": self.seed}


@keras.saving.register_keras_serializable(package="vaelab")
class StraightThrough(layers.Layer):
    """[z_e, z_q] -> z_q in the forward pass, with the gradient of z_e: z_e + sg[z_q - z_e]."""

    def call(self, inputs):
        z_e, z_q = inputs
        return z_e + ops.stop_gradient(z_q - z_e)


def uniform_codes(count: int, config: ModelConfig, seed: int = 0) -> np.ndarray:
    """`count` draws from the vqvae's prior, L codes each uniform over the K codebook vectors: (count, L) int32."""
    rng = np.random.default_rng(seed)
    return rng.integers(config.codebook_size, size=(count, config.latent_dim)).astype(np.int32)


def perplexity(codes, k: int):
    """exp of the entropy of the codes' frequencies (K for uniform use, 1 for a single code), over all codes given."""
    counts = ops.sum(ops.one_hot(ops.reshape(codes, (-1,)), k), axis=0)
    p = counts / ops.sum(counts)
    return ops.exp(-ops.sum(p * ops.log(p + 1e-10)))


@keras.saving.register_keras_serializable(package="vaelab")
class VQVAE(VAE):
    """The trainable VQ-VAE: image -> {x_decoded_mean, z_e (b, L, D), z_q (b, L, D), codes (b, L)}.

    Its objective per image is the module docstring's. Training logs `loss` (that objective), `reconstruction_loss`
    (-log p(x|z_q), nats), `elbo_loss` (reconstruction + L log K, nats: the negative ELBO under the uniform prior),
    `commitment_loss` (||z_e - e||^2, the squared distance from the encoder's vectors to their codes, unweighted)
    and `perplexity` (of the codes used in a batch, averaged over batches). No KL and no KL weight: it has none.
    """

    def __init__(self, *args, codes: int = 512, **kwargs):
        super().__init__(*args, **kwargs)
        self.codes = codes
        self.commitment_loss_tracker = keras.metrics.Mean(name="commitment_loss")
        self.perplexity_tracker = keras.metrics.Mean(name="perplexity")

    @property
    def metrics(self):
        """The metrics logged and reset: the VAE's without the KL and its weight, which the vqvae's loss has not."""
        return [m for m in super().metrics if m is not self.kl_loss_tracker and m is not self.kl_weight_tracker]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z_e, z_q = y_pred["z_e"], y_pred["z_q"]
        reconstruction = reconstruction_loss(
            y_pred.get("x", x), y_pred["x_decoded_mean"], self.likelihood, y_pred.get("x_log_scale")
        )
        commitment = ops.sum(ops.square(z_e - ops.stop_gradient(z_q)), axis=(1, 2))
        self.reconstruction_loss_tracker.update_state(reconstruction)
        self.elbo_loss_tracker.update_state(reconstruction + z_e.shape[1] * math.log(self.codes))
        self.commitment_loss_tracker.update_state(commitment)
        self.perplexity_tracker.update_state(perplexity(y_pred["codes"], self.codes))
        return ops.mean(reconstruction + COMMITMENT * commitment)

    def get_config(self):
        return {**super().get_config(), "codes": self.codes}


def build_vqvae(config: ModelConfig, seed: int | None = None, *, binarize: bool = False, stock: bool = False):
    """(encoder, generator, trainable model) of a vqvae, as `vaelab.models.build_models` describes them.

    encoder: x -> codes (n, L) int32, the index of each code vector's nearest codebook vector; generator:
    codes (n, L) int32 -> x_decoded_mean. With `stock`, the codebook is a Dense of scores and an argmax in
    the encoder and an Embedding in the generator (stock Keras, `VectorQuantizer.weights_for`).
    """
    init = _kernel_initializers(seed)
    length, k = config.latent_dim, config.codebook_size
    x = keras.Input(shape=config.input_shape, name="x")
    target = Binarize(seed=seed, name="binarize")(x) if binarize and not stock else x
    h = ENCODER_BODIES[config.arch](target, config, init)
    z_e = layers.Reshape((length, CODE_DIM), name="z_e_codes")(dense(length * CODE_DIM, "z_e", init)(h))
    codes_in = keras.Input(shape=(length,), dtype="int32", name="codes")
    flatten = layers.Flatten(name="decoder_codes")
    decoder_layers = DECODERS[config.arch](config, init)
    if stock:
        codes = ops.argmax(layers.Dense(k, name="codebook")(z_e), axis=-1)
        generated = apply(decoder_layers, flatten(layers.Embedding(k, CODE_DIM, name="codebook")(codes_in)))
        return keras.Model(x, codes, name="encoder"), keras.Model(codes_in, generated, name="generator"), None

    quantizer = VectorQuantizer(k, CODE_DIM, seed=None if seed is None else 1000 * seed + 999, name="codebook")
    z_q, codes = quantizer(z_e)
    x_decoded_mean = apply(decoder_layers, flatten(StraightThrough(name="z")([z_e, z_q])))
    generated = apply(decoder_layers, flatten(quantizer(codes_in, lookup=True)))
    outputs = {"x_decoded_mean": x_decoded_mean, "z_e": z_e, "z_q": z_q, "codes": codes}
    if config.pixel_likelihood in SCALED:
        outputs["x_log_scale"] = LogScale(
            config.input_shape, config.scale, INITIAL_LOG_SCALE[config.pixel_likelihood], name="x_log_scale"
        )(x_decoded_mean)
    if binarize:
        outputs["x"] = target
    return (
        keras.Model(x, codes, name="encoder"),
        keras.Model(codes_in, generated, name="generator"),
        VQVAE(x, outputs, likelihood=config.pixel_likelihood, codes=k, name="vae"),
    )
