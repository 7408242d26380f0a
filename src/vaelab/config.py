"""Every setting of a run in one place: the network (`ModelConfig`), training (`TrainConfig`) and presets.

Defaults follow the course's `variational_autoencoder.py`; each says why beside it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vaelab.data.dataset import IMAGE_SHAPE
from vaelab.errors import VaelabError
from vaelab.family import (  # noqa: F401 (the family's defaults and terms, once defined here: still vaelab.config's)
    CODE_DIM,
    DEFAULT_CODES,
    DEFAULT_K,
    DEFAULT_PSEUDO_INPUTS,
    FAMILIES,
    MNIST_TRAINING_IMAGES,
    TERMS,
    Family,
    member,
)

MAX_STEPS = 2**31 - 1  # a run's steps: the optimizer's int32 step counter (vaelab.limits checks a run's total)

ARCHS = ("mlp", "conv", "convnet")
# The members of the VAE family (--model): each one's settings, checks and answers are its `Family` (vaelab.family),
# its network and objective its class in vaelab.models.MODELS. Their option defaults live with them.
MODELS = tuple(FAMILIES)  # the built-in members; a member registered later is in FAMILIES (vaelab.models.register)
# p(x|z), the decoder's distribution of the pixels (vaelab.models.likelihoods): Bernoulli for grey images (the
# course's); for 8-bit colour the discretised logistic (as PixelCNN++ and IAF-VAE) with black's own point mass
# ("logistic-black": under the plain logistic a 2-D code holds where a shape is, not its colour); see
# default_likelihood.
LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian", "logistic", "logistic-black")
# The likelihoods whose decoder output is a location on the real line (a linear last layer): the discretised logistics.
LOCATED = ("logistic", "logistic-black")
SCALED = ("gaussian", *LOCATED)  # the likelihoods with a learned log-scale (vaelab.models.networks.LogScale)
SCALES = ("global", "pixel")  # the learned sigma (gaussian) or s (logistics): one for all pixels, or one per pixel
# The decoder's last activation: "sigmoid", a mean in (0, 1); "linear", the discretised logistic's location on the real
# line (PixelCNN++'s). Through a sigmoid the logistic's location cannot pass the end bins' edges, so on a black
# background every mean is pushed into the sigmoid's flat tail and the code collapses (docs/colour.md).
DECODER_ACTIVATIONS = ("sigmoid", "linear")
# The convnet's stride-2 blocks: 32x32 images down to a 4x4 map. Not PyTorch-VAE's (32, 64, 128, ...): on a CPU
# XLA's strided and transposed convolutions train (32, 64, 128) 5-8x slower per step than (16, 32, 64) (measured on
# 32x32x3, batch 100, 2 cores), for 4x the arithmetic; --filters chooses others.
DEFAULT_FILTERS = (16, 32, 64)
# Keras seeds are uint32, and each layer's initializer gets 1000 * seed + its number (model.py).
MAX_SEED = (2**32 - 1000) // 1000
# Training computes in float32: a float setting must be a finite float32, and a positive one no smaller than the
# smallest normal float32 (below it, it flushes to 0 or loses its precision).
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38
MAX_PARAMETERS = 100_000_000  # 400 MB of float32 weights, 1.6 GB with RMSprop's state and gradients
VARIANCES = ("learned", "fixed")
OPTIMIZERS = ("rmsprop", "adam")
IMPLEMENTATIONS = ("fused", "keras")
ACTIVATIONS = ("relu", "tanh")
# Training snapshots (vaelab.training.snapshots) are on unless --no-snapshots: training waits about 0.2% of an MLP
# epoch for them
# (benchmarks/snapshot_cost.py). Not part of a run's configuration: they record, they change no number.
SNAPSHOTS = True
REPORT_IWAE_SAMPLES = 100  # K of `vaelab report`'s log-likelihood bound: a tenth of `vaelab evaluate`'s 1000 decodings


DEFAULT_FAMILY = "vae"  # the exercise's model; pages name the others beside a run's preset


@dataclass(frozen=True)
class ModelConfig:
    """The network: which encoder/decoder, whether the variance is learned, its sizes, the images it takes and
    the distribution of their pixels."""

    # "mlp": the course script's dense network (any image shape); "conv": part (g)'s ConvNet (28x28 grey);
    # "convnet": a ConvNet built from the image's shape (stride-2 blocks of `filters`, a mirrored decoder).
    arch: str = "mlp"
    variance: str = "learned"  # "fixed": z_log_var = 0, only z_mean is learned (part f)
    latent_dim: int = 2  # 2, so the latent space can be drawn as a plane (part c)
    intermediate_dim: int = 256  # the course script's hidden width; part (g) asks for 16
    epsilon_std: float = 1.0  # the course script's std of the sampling noise epsilon
    # How the ConvNet's conv+pool and upsample+conv pairs are computed: "fused" (one layer each,
    # the same mathematics, about twice as fast on a CPU) or "keras" (the exercise's layers one by one).
    implementation: str = "fused"
    # The dense network's deterministic layers, encoder side (the decoder mirrors them): None is the course
    # script's one layer of intermediate_dim units; (200, 200) is Burda et al.'s network.
    hidden: tuple[int, ...] | None = None
    activation: str = "relu"  # of the dense network's hidden layers: the course's relu; Burda et al. use tanh
    # (height, width, channels) of the images; None: the data's (set when training starts: `for_data`), and
    # the exercise's 28x28x1 for a network built without data (and for runs made before other shapes existed).
    image_shape: tuple[int, int, int] | None = None
    likelihood: str | None = None  # one of LIKELIHOODS; None: default_likelihood of the image shape
    scale: str = "global"  # of the gaussian's sigma or the logistic's s: IAF-VAE's one learned number
    # The decoder's last activation (DECODER_ACTIVATIONS); None: the likelihood's (default_decoder_activation). Runs
    # saved before it existed had the sigmoid (`RunConfig.from_dict`).
    decoder_activation: str | None = None
    filters: tuple[int, ...] | None = None  # the convnet's blocks, encoder side; None: DEFAULT_FILTERS
    family: str = DEFAULT_FAMILY  # which model of the family (MODELS, --model); runs made before it existed: vae
    # The codes per image in training (--k): the iwae's importance samples (None: DEFAULT_K), the vae's draws its ELBO
    # averages over (None: VAE_K, one). Only these two take it.
    k: int | None = None
    codes: int | None = None  # the vqvae's codebook size K (--codes); None: DEFAULT_CODES. Only the vqvae takes it
    # A conditional model's number of classes (the one-hot label's length); None: the data's (set by `for_data`).
    classes: int | None = None
    pseudo_inputs: int | None = None  # the vamp's learned pseudo-inputs (--pseudo-inputs); None: DEFAULT_PSEUDO_INPUTS
    # The betatc's N, the training images its estimate of q(z) averages over; None: the data's (set by `for_data`).
    dataset_size: int | None = None

    def __post_init__(self):
        for name in ("hidden", "image_shape", "filters"):
            if isinstance(getattr(self, name), list):  # from config.json: a JSON list
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of the images the network takes: `image_shape`, or the exercise's 28x28x1."""
        return self.image_shape if self.image_shape is not None else IMAGE_SHAPE

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """The shape of the decoder's output: the image's, with `logistic-black`'s pi as one channel more
        (`parameter_channels`)."""
        height, width, channels = self.input_shape
        return (height, width, parameter_channels(self.pixel_likelihood, channels))

    @property
    def pixel_likelihood(self) -> str:
        """The likelihood the network is trained and evaluated with: `likelihood`, or the image's default."""
        return self.likelihood if self.likelihood is not None else default_likelihood(self.input_shape)

    @property
    def output_activation(self) -> str:
        """The decoder's last activation: `decoder_activation`, or the likelihood's default."""
        if self.decoder_activation is not None:
            return self.decoder_activation
        return default_decoder_activation(self.pixel_likelihood)

    @property
    def member(self) -> Family:
        """The member of the family this network is (`family`): what it owns and how the package treats it."""
        return member(self.family)

    @property
    def conditional(self) -> bool:
        """Whether the encoder and the generator also read the image's one-hot label (the cvae)."""
        return self.member.conditional

    @property
    def samples(self) -> int:
        """The codes drawn per image in training: `k` for the iwae (DEFAULT_K) and the vae (VAE_K), one for others."""
        return self.member.samples(self)

    @property
    def codebook_size(self) -> int:
        """K, the vqvae's codebook vectors: `codes`, or DEFAULT_CODES."""
        return self.codes or DEFAULT_CODES

    @property
    def pseudo_input_count(self) -> int:
        """The vamp's pseudo-inputs: `pseudo_inputs`, or DEFAULT_PSEUDO_INPUTS; none for the other models."""
        return self.member.value(self, "pseudo_inputs") or 0

    @property
    def training_images(self) -> int:
        """The betatc's N: `dataset_size`, or MNIST's 60,000 for a network built without data."""
        return self.dataset_size or MNIST_TRAINING_IMAGES

    @property
    def bound(self) -> str:
        """What the model's ELBO and importance-weighted bound bound: log p(x|y) for a conditional model, and
        log p(x) under the uniform prior over the codes for the vqvae (whose prior is not learned)."""
        return self.member.bound_of(self)

    @property
    def conv_filters(self) -> tuple[int, ...]:
        return self.filters if self.filters is not None else DEFAULT_FILTERS

    def for_data(
        self, shape: tuple[int, int, int], classes: int | None = None, training_images: int | None = None
    ) -> ModelConfig:
        """This network for images of `shape` (and, for a conditional model, `classes` labels; for a betatc, the
        `training_images` it trains on), with the likelihood resolved; a network made for another shape or another
        number of classes is a one-line error."""
        shape = tuple(int(d) for d in shape)
        if self.conditional and self.classes is not None and self.classes != classes:
            raise VaelabError(
                f"the cvae was made for {self.classes} classes, but the data have {classes or 'no labels'}; "
                "train a new run for these data"
            )
        if self.image_shape is not None and self.image_shape != shape:
            raise VaelabError(
                f"the network was made for {_shape_words(self.image_shape)} images, but the data are "
                f"{_shape_words(shape)}; train a new run for these data"
            )
        likelihood = self.likelihood or default_likelihood(shape)
        resolved = dataclasses.replace(
            self,
            image_shape=shape,
            likelihood=likelihood,
            decoder_activation=self.decoder_activation or default_decoder_activation(likelihood),
            classes=classes if self.conditional else None,
            **self.member.for_data(self, training_images),
        )
        resolved.validate()
        return resolved

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        """The widths of the dense network's hidden layers, encoder side: `hidden`, or (intermediate_dim,)."""
        return self.hidden if self.hidden is not None else (self.intermediate_dim,)

    def validate(self) -> None:
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("model", self.family, tuple(FAMILIES))
        own = {option.field: option for option in self.member.options}
        for other in FAMILIES.values():  # a member's options, given to a member that owns no such, are a mistake
            for option in other.options:
                value = getattr(self, option.field)
                if value is not None and option.field not in own:
                    raise VaelabError(option.foreign.format(family=self.family))
        for name, option in own.items():
            if getattr(self, name) is not None:
                option.check(getattr(self, name))
        self.member.validate(self)
        if self.classes is not None and not self.conditional:
            raise VaelabError(f"classes are read by a conditional model (cvae), not by --model {self.family}")
        if self.classes is not None and (
            isinstance(self.classes, bool) or not isinstance(self.classes, int) or self.classes < 2
        ):
            raise VaelabError(f"a cvae needs 2 or more classes, got {self.classes!r}")
        _check_choice("variance", self.variance, VARIANCES)
        _check_choice("implementation", self.implementation, IMPLEMENTATIONS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_positive("latent_dim", self.latent_dim)
        _check_positive("intermediate_dim", self.intermediate_dim)
        _check_float32("epsilon_std", self.epsilon_std)
        if self.hidden is not None:
            if not isinstance(self.hidden, tuple) or not self.hidden:
                raise VaelabError(f"hidden must list one or more layer widths, got {self.hidden!r}")
            for width in self.hidden:
                _check_positive("a hidden layer's width", width)
        _check_choice("likelihood", self.pixel_likelihood, LIKELIHOODS)
        _check_choice("scale", self.scale, SCALES)
        _check_choice("decoder activation", self.output_activation, DECODER_ACTIVATIONS)
        if self.output_activation == "linear" and self.pixel_likelihood not in LOCATED:
            raise VaelabError(
                f"a linear decoder output is the discretised logistic's location; the {self.pixel_likelihood} "
                "likelihood needs a mean in (0, 1): leave decoder_activation out"
            )
        shape = self.input_shape
        if len(shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise VaelabError(f"image_shape must be (height, width, channels), got {self.image_shape!r}")
        if self.arch != "mlp" and (self.hidden is not None or self.activation != "relu"):
            raise VaelabError("--hidden and --activation shape the dense network (mlp presets); not the ConvNets")
        if self.arch == "conv" and shape != IMAGE_SHAPE:
            raise VaelabError(
                f"the exercise's ConvNet (--preset conv) takes 28x28 grey images, not {_shape_words(shape)}; "
                "use --preset convnet, built from the image's shape"
            )
        if self.filters is not None and self.arch != "convnet":
            raise VaelabError("--filters shapes the convnet preset's blocks; choose --preset convnet")
        if self.arch == "convnet":
            if not isinstance(self.conv_filters, tuple) or not self.conv_filters:
                raise VaelabError(f"filters must list one or more block widths, got {self.filters!r}")
            for width in self.conv_filters:
                _check_positive("a convnet block's width", width)
            if 2 ** len(self.conv_filters) > max(shape[:2]):
                raise VaelabError(
                    f"{len(self.conv_filters)} stride-2 blocks halve {shape[0]}x{shape[1]} images below one pixel; "
                    "give fewer --filters"
                )
        if self.parameters() > MAX_PARAMETERS:
            widths = "x".join(str(w) for w in (self.hidden_widths if self.arch == "mlp" else (self.intermediate_dim,)))
            raise VaelabError(
                f"latent_dim {self.latent_dim} with hidden widths {widths} makes a network of about "
                f"{self.parameters():,} weights ({self.parameters() * 16 / 1e9:.0f} GB to train); "
                f"keep it under {MAX_PARAMETERS:,}"
            )

    def parameters(self) -> int:
        """The number of weights the network will have (computed before building it, to refuse absurd sizes)."""
        z, heads = self.member.decoder_width(self), self.member.heads(self)  # the code's width; z_mean (z_log_var)
        height, width, channels = self.input_shape
        pixels = height * width * channels
        scale = {"global": 1, "pixel": pixels}[self.scale] if self.pixel_likelihood in SCALED else 0
        out = height * width * self.output_shape[-1]  # the decoder's numbers: the pixels' (and logistic-black's pi)
        extra = self.member.extra_parameters(self, pixels)  # learned beside the networks: pseudo-inputs, codebook
        c = (self.classes or 0) if self.conditional else 0  # the one-hot label, into the first dense layers
        if self.arch == "mlp":
            widths = self.hidden_widths
            encoder = sum((a + 1) * b for a, b in zip((pixels + c, *widths), widths, strict=False))
            decoder = sum((a + 1) * b for a, b in zip((z + c, *widths[::-1]), (*widths[::-1], out), strict=True))
            return encoder + (widths[-1] + 1) * z * heads + decoder + scale + extra
        h = self.intermediate_dim
        if self.arch == "convnet":
            filters = self.conv_filters
            side = (math.ceil(height / 2 ** len(filters)), math.ceil(width / 2 ** len(filters)))
            flat = side[0] * side[1] * filters[-1]
            encoder = sum((9 * a + 1) * b for a, b in zip((channels, *filters), filters, strict=False))
            ups = (*filters[::-1][1:], filters[0])
            decoder = (
                sum((9 * a + 1) * b for a, b in zip(filters[::-1], ups, strict=True))
                + (9 * ups[-1] + 1) * self.output_shape[-1]
            )
            dense = (flat + c + 1) * h + (h + 1) * z * heads + (z + c + 1) * h + (h + 1) * flat
            return encoder + dense + decoder + scale + extra
        last = (9 * 16 + 1) * self.output_shape[-1]
        convs = (9 * 1 + 1) * 16 + (9 * 16 + 1) * 8 + (9 * 8 + 1) * 8 + (9 * 8 + 1) * 16 + last
        dense = (392 + c + 1) * h + (h + 1) * z * heads + (z + c + 1) * h + (h + 1) * 512
        return convs + dense + extra


@dataclass(frozen=True)
class TrainConfig:
    """How the network is trained."""

    epochs: int = 50  # the course script's 50 passes over the 60,000 training images
    batch_size: int = 100  # the course script's batch size
    optimizer: str = "rmsprop"  # the course script's optimizer; "adam" also works
    learning_rate: float = 1e-3  # Keras' RMSprop default, which the course script uses
    seed: int = 0  # seeds weights, sampling noise and shuffling: same seed, same machine, same losses
    binarize: bool = False  # dynamic binarisation (Bernoulli pixels each epoch), for literature NLLs
    train_subset: int | None = None  # use only the first N training images (quick tries, tests)
    test_subset: int | None = None  # use only the first N test images
    # Weight of the KL term in the objective: 1 is the ELBO (the course's loss); > 1 is a beta-VAE
    # (Higgins et al., 2017), < 1 favours reconstruction. Reported figures always include the true ELBO.
    beta: float = 1.0
    # KL warm-up (Bowman et al., 2016; Sønderby et al., 2016): over the first N epochs the KL weight rises
    # linearly to beta (see vaelab.training.schedule.kl_weight). 0, the course's choice: beta from the first step.
    kl_warmup: int = 0
    # None: a constant learning rate. N: Burda et al.'s decay (8 stages, lr * 10^(-i/7) for 3^i epochs,
    # 3,280 epochs in all) compressed into N epochs, by step (see vaelab.training.schedule.learning_rate).
    lr_decay_epochs: int | None = None

    def __post_init__(self):
        if isinstance(self.beta, int) and not isinstance(self.beta, bool):  # 4 and 4.0: one setting, one name
            object.__setattr__(self, "beta", float(self.beta))

    def validate(self) -> None:
        for name in ("epochs", "kl_warmup", "lr_decay_epochs"):  # the optimizer's step counter is an int32
            if isinstance(getattr(self, name), int) and getattr(self, name) > MAX_STEPS:
                raise VaelabError(f"{name} must be at most {MAX_STEPS:,} (the steps a run can take), got "
                                  f"{getattr(self, name):.3g}; lower it")  # fmt: skip
        _check_positive("epochs", self.epochs)
        _check_positive("batch_size", self.batch_size)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_float32("learning_rate", self.learning_rate)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise VaelabError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        for name in ("train_subset", "test_subset", "lr_decay_epochs"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        _check_float32("beta", self.beta, zero=True)
        if isinstance(self.kl_warmup, bool) or not isinstance(self.kl_warmup, int) or self.kl_warmup < 0:
            raise VaelabError(f"kl_warmup must be an integer >= 0 (epochs), got {self.kl_warmup!r}")


# The exercise's networks, by name. `conv-fixed-var` is the two options combined.
PRESETS: dict[str, ModelConfig] = {
    "mlp": ModelConfig(),
    "mlp-fixed-var": ModelConfig(variance="fixed"),
    "conv": ModelConfig(arch="conv", intermediate_dim=16),
    "conv-fixed-var": ModelConfig(arch="conv", variance="fixed", intermediate_dim=16),
    "convnet": ModelConfig(arch="convnet"),  # for images of any shape, colour included
}


@dataclass(frozen=True)
class RunConfig:
    """A run's whole configuration, saved as `config.json` beside its weights."""

    preset: str = "mlp"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str = "mnist"  # a built-in dataset's name, or the path of a folder of images or an .npz
    # How a folder's or an .npz's images are read (vaelab.data.custom): None keeps their own size; (H, W) pads
    # and resizes them all to it. Recorded, so the run reloads the same data.
    image_size: tuple[int, int] | None = None
    grey: bool = False  # convert colour images to grey (ITU-R 601-2 luma); False keeps them as they are

    def __post_init__(self):
        if isinstance(self.image_size, list):  # from config.json: a JSON list
            object.__setattr__(self, "image_size", tuple(self.image_size))

    def validate(self) -> RunConfig:
        from vaelab.data import check_image_size

        _check_choice("preset", self.preset, tuple(PRESETS))
        self.model.validate()
        self.train.validate()
        if not isinstance(self.dataset, str) or not self.dataset:
            raise VaelabError(f"dataset must be a name or a path, got {self.dataset!r}")
        if self.train.binarize and self.model.pixel_likelihood in LOCATED:
            raise VaelabError(
                f"the {self.model.pixel_likelihood} likelihood models 8-bit pixels, and --binarize makes them binary; "
                "with --binarize use --likelihood bernoulli"
            )
        refusal = self.model.member.beta_refusal
        if refusal and (self.train.beta != 1.0 or self.train.kl_warmup):
            raise VaelabError(refusal)
        check_image_size(self.image_size)
        if not isinstance(self.grey, bool):
            raise VaelabError(f"grey must be true or false, got {self.grey!r}")
        return self

    def for_data(self, data: Any) -> RunConfig:
        """This configuration for the images of `data` (a `Dataset`): the network's image shape and likelihood
        resolved; a network made for another shape is a one-line error."""
        classes = None
        if self.model.conditional:
            if not data.labelled or data.y_train is None:
                raise VaelabError(
                    f"a {self.model.family} is conditioned on the labels, and {data.title} has none; "
                    "give labelled data (a folder with one subfolder per class) or --model vae"
                )
            classes = len(data.class_names)
        training_images = len(data.x_train[: self.train.train_subset])
        return dataclasses.replace(
            self, model=self.model.for_data(data.image_shape, classes, training_images)
        ).validate()

    def to_dict(self) -> dict[str, Any]:
        """The configuration as config.json holds it (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        try:
            # runs saved before the decoder's activation was a setting: the sigmoid, whatever the likelihood
            model = {"decoder_activation": "sigmoid", **data["model"]}
            return cls(
                preset=data["preset"],
                model=ModelConfig(**model),
                train=TrainConfig(**data["train"]),
                dataset=data.get("dataset", "mnist"),  # runs made before other datasets existed: MNIST
                image_size=data.get("image_size"),  # runs made before images of any size: their own size
                grey=data.get("grey", False),
            ).validate()
        except (KeyError, TypeError, AttributeError) as err:
            raise VaelabError(f"not a vaelab run configuration ({err})") from None

    def replace(self, **train_overrides: Any) -> RunConfig:
        """A copy with some training settings changed."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **train_overrides)).validate()


def make_config(
    preset: str = "mlp",
    *,
    latent_dim: int | None = None,
    implementation: str | None = None,
    hidden: Sequence[int] | None = None,
    activation: str | None = None,
    likelihood: str | None = None,
    scale: str | None = None,
    filters: Sequence[int] | None = None,
    image_shape: Sequence[int] | None = None,
    dataset: str | None = None,
    image_size: Sequence[int] | None = None,
    grey: bool = False,
    model: str | None = None,
    k: int | None = None,
    pseudo_inputs: int | None = None,
    codes: int | None = None,
    **train: Any,
) -> RunConfig:
    """The configuration of `preset` on `dataset` (read with `image_size` and `grey`), with `latent_dim`,
    `implementation`, `hidden`, `activation`, `likelihood`, `scale`, `filters`, `image_shape`, the `model` of the
    family (MODELS; default vae), the vae's and the iwae's `k`, the vamp's `pseudo_inputs`, the vqvae's `codes` and
    any `TrainConfig` field overridden (None keeps the default; the image shape, and a cvae's classes, are otherwise the
    data's, set when training starts)."""
    _check_choice("preset", preset, tuple(PRESETS))
    overrides = {"latent_dim": latent_dim, "implementation": implementation, "activation": activation,
                 "likelihood": likelihood, "scale": scale, "family": model, "k": k,
                 "pseudo_inputs": pseudo_inputs, "codes": codes}  # fmt: skip
    overrides["hidden"] = tuple(hidden) if hidden is not None else None
    overrides["filters"] = tuple(filters) if filters is not None else None
    overrides["image_shape"] = tuple(image_shape) if image_shape is not None else None
    network = dataclasses.replace(PRESETS[preset], **{n: v for n, v in overrides.items() if v is not None})
    unknown = set(train) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise VaelabError(f"unknown training settings: {', '.join(sorted(unknown))}")
    train = {k: v for k, v in train.items() if v is not None}  # None: keep the default
    size = tuple(image_size) if image_size is not None else None
    return RunConfig(
        preset=preset, model=network, train=TrainConfig(**train), dataset=dataset or "mnist", image_size=size, grey=grey
    ).validate()


DATA_SETTINGS = ("dataset", "image_size", "grey", "image_shape")  # make_config's keywords that the data set


def run_settings() -> tuple[str, ...]:
    """The settings of a run that `make_config` takes by keyword besides the preset and the data's: the network's
    (its own keywords) and training's (`TrainConfig`'s fields), in that order."""
    network = [
        name
        for name, parameter in inspect.signature(make_config).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY and name not in DATA_SETTINGS
    ]
    return (*network, *(f.name for f in dataclasses.fields(TrainConfig)))


def default_likelihood(shape: tuple[int, int, int]) -> str:
    """The likelihood a run on images of `shape` gets unless it names one: Bernoulli for grey images (the
    course's); for colour the discretised logistic of the colour VAE papers (8-bit pixels) with black's own point
    mass, "logistic-black", with which a 2-D code holds the colour of `shapes` (docs/colour.md)."""
    return "bernoulli" if shape[-1] == 1 else "logistic-black"


def parameter_channels(likelihood: str, channels: int) -> int:
    """How many numbers per pixel the decoder gives for images of `channels` channels: one per channel (the mean or
    the location), and for `logistic-black` one more, the logit of pi, after them (vaelab.models.likelihoods)."""
    return channels + 1 if likelihood == "logistic-black" else channels


def default_decoder_activation(likelihood: str) -> str:
    """The decoder's last activation for `likelihood`: the discretised logistic's location is unbounded ("linear",
    as PixelCNN++'s), every other likelihood's parameter is a mean in (0, 1) ("sigmoid")."""
    return "linear" if likelihood in LOCATED else "sigmoid"


def _shape_words(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise VaelabError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


def _check_float32(name: str, value: object, zero: bool = False) -> None:
    """A float setting, checked in the precision training uses: a finite number > 0 (or >= 0, with `zero`) that
    float32 holds, neither beyond its largest number nor, if positive, below its smallest normal one."""
    bound = ">= 0" if zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise VaelabError(f"{name} must be a finite number {bound}, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise VaelabError(f"{name} must be a finite number {bound}, got {value!r}")
    if value > FLOAT32_MAX or 0 < value < FLOAT32_TINY:
        raise VaelabError(
            f"{name} {value!r} is outside float32, which training computes in: give a number from "
            f"{FLOAT32_TINY:.4g} to {FLOAT32_MAX:.4g}{' (or 0)' if zero else ''}"
        )


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VaelabError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class PriorConfig:
    """How a vqvae's learned prior over its codes is built and trained (vaelab.analysis.code_prior); saved with it."""

    epochs: int = 30  # at most: training stops 3 epochs after the held-out codes' likelihood last improved
    hidden: int = 256  # width of its two hidden layers: a few hundred thousand weights, seconds per epoch on 2 cores
    embedding: int = 32  # length of each code's embedding, read at the positions after it
    batch_size: int = 128  # the codes are small: small batches give more steps per epoch on 10,000 images
    learning_rate: float = 1e-3  # Adam's usual step
    held_out: float = 0.1  # the share of the training codes held out to stop training at their best likelihood
    seed: int = 0

    def validate(self) -> None:
        _check_positive("the prior's --epochs", self.epochs)
