"""Every setting of a run in one place: the network (`ModelConfig`), training (`TrainConfig`) and presets.

Defaults follow the course's `variational_autoencoder.py`; each says why beside it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vaelab.errors import VaelabError

ARCHS = ("mlp", "conv")
# Keras seeds are uint32, and each layer's initializer gets 1000 * seed + its number (model.py).
MAX_SEED = (2**32 - 1000) // 1000
MAX_PARAMETERS = 100_000_000  # 400 MB of float32 weights, 1.6 GB with RMSprop's state and gradients
VARIANCES = ("learned", "fixed")
OPTIMIZERS = ("rmsprop", "adam")
IMPLEMENTATIONS = ("fused", "keras")
ACTIVATIONS = ("relu", "tanh")
# Training snapshots (vaelab.snapshots) are on unless --no-snapshots: training waits about 0.2% of an MLP epoch for them
# (benchmarks/snapshot_cost.py). Not part of a run's configuration: they record, they change no number.
SNAPSHOTS = True


@dataclass(frozen=True)
class ModelConfig:
    """The network: which encoder/decoder, whether the variance is learned, and its sizes."""

    arch: str = "mlp"  # "mlp": the course script's dense network; "conv": part (g)'s ConvNet
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

    def __post_init__(self):
        if isinstance(self.hidden, list):  # from config.json: a JSON list
            object.__setattr__(self, "hidden", tuple(self.hidden))

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        """The widths of the dense network's hidden layers, encoder side: `hidden`, or (intermediate_dim,)."""
        return self.hidden if self.hidden is not None else (self.intermediate_dim,)

    def validate(self) -> None:
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("variance", self.variance, VARIANCES)
        _check_choice("implementation", self.implementation, IMPLEMENTATIONS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_positive("latent_dim", self.latent_dim)
        _check_positive("intermediate_dim", self.intermediate_dim)
        if not (math.isfinite(self.epsilon_std) and self.epsilon_std > 0):
            raise VaelabError(f"epsilon_std must be a finite number > 0, got {self.epsilon_std}")
        if self.hidden is not None:
            if not isinstance(self.hidden, tuple) or not self.hidden:
                raise VaelabError(f"hidden must list one or more layer widths, got {self.hidden!r}")
            for width in self.hidden:
                _check_positive("a hidden layer's width", width)
        if self.arch == "conv" and (self.hidden is not None or self.activation != "relu"):
            raise VaelabError("--hidden and --activation shape the dense network (mlp presets); the ConvNet is fixed")
        if self.parameters() > MAX_PARAMETERS:
            widths = "x".join(str(w) for w in (self.hidden_widths if self.arch == "mlp" else (self.intermediate_dim,)))
            raise VaelabError(
                f"latent_dim {self.latent_dim} with hidden widths {widths} makes a network of about "
                f"{self.parameters():,} weights ({self.parameters() * 16 / 1e9:.0f} GB to train); "
                f"keep it under {MAX_PARAMETERS:,}"
            )

    def parameters(self) -> int:
        """The number of weights the network will have (computed before building it, to refuse absurd sizes)."""
        z = self.latent_dim
        heads = 2 if self.variance == "learned" else 1  # z_mean (and z_log_var)
        if self.arch == "mlp":
            widths = self.hidden_widths
            encoder = sum((a + 1) * b for a, b in zip((784, *widths), widths, strict=False))
            decoder = sum((a + 1) * b for a, b in zip((z, *widths[::-1]), (*widths[::-1], 784), strict=True))
            return encoder + (widths[-1] + 1) * z * heads + decoder
        h = self.intermediate_dim
        convs = (9 * 1 + 1) * 16 + (9 * 16 + 1) * 8 + (9 * 8 + 1) * 8 + (9 * 8 + 1) * 16 + (9 * 16 + 1)
        return convs + (392 + 1) * h + (h + 1) * z * heads + (z + 1) * h + (h + 1) * 512


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
    # linearly to beta (see vaelab.schedule.kl_weight). 0, the course's choice: beta from the first step.
    kl_warmup: int = 0
    # None: a constant learning rate. N: Burda et al.'s decay (8 stages, lr * 10^(-i/7) for 3^i epochs,
    # 3,280 epochs in all) compressed into N epochs, by step (see vaelab.schedule.learning_rate).
    lr_decay_epochs: int | None = None

    def __post_init__(self):
        if isinstance(self.beta, int) and not isinstance(self.beta, bool):  # 4 and 4.0: one setting, one name
            object.__setattr__(self, "beta", float(self.beta))

    def validate(self) -> None:
        _check_positive("epochs", self.epochs)
        _check_positive("batch_size", self.batch_size)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise VaelabError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise VaelabError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        for name in ("train_subset", "test_subset", "lr_decay_epochs"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        if (
            isinstance(self.beta, bool)
            or not isinstance(self.beta, int | float)
            or not (math.isfinite(self.beta) and self.beta >= 0)
        ):
            raise VaelabError(f"beta must be a finite number >= 0, got {self.beta!r}")
        if isinstance(self.kl_warmup, bool) or not isinstance(self.kl_warmup, int) or self.kl_warmup < 0:
            raise VaelabError(f"kl_warmup must be an integer >= 0 (epochs), got {self.kl_warmup!r}")


# The exercise's networks, by name. `conv-fixed-var` is the two options combined.
PRESETS: dict[str, ModelConfig] = {
    "mlp": ModelConfig(),
    "mlp-fixed-var": ModelConfig(variance="fixed"),
    "conv": ModelConfig(arch="conv", intermediate_dim=16),
    "conv-fixed-var": ModelConfig(arch="conv", variance="fixed", intermediate_dim=16),
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

        self.model.validate()
        self.train.validate()
        if not isinstance(self.dataset, str) or not self.dataset:
            raise VaelabError(f"dataset must be a name or a path, got {self.dataset!r}")
        check_image_size(self.image_size)
        if not isinstance(self.grey, bool):
            raise VaelabError(f"grey must be true or false, got {self.grey!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The configuration as config.json holds it (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        try:
            return cls(
                preset=data["preset"],
                model=ModelConfig(**data["model"]),
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
    dataset: str | None = None,
    image_size: Sequence[int] | None = None,
    grey: bool = False,
    **train: Any,
) -> RunConfig:
    """The configuration of `preset` on `dataset` (read with `image_size` and `grey`), with `latent_dim`,
    `implementation`, `hidden`, `activation` and any `TrainConfig` field overridden (None keeps the default)."""
    _check_choice("preset", preset, tuple(PRESETS))
    model = PRESETS[preset]
    overrides = {"latent_dim": latent_dim, "implementation": implementation, "activation": activation}
    overrides["hidden"] = tuple(hidden) if hidden is not None else None
    model = dataclasses.replace(model, **{k: v for k, v in overrides.items() if v is not None})
    unknown = set(train) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise VaelabError(f"unknown training settings: {', '.join(sorted(unknown))}")
    train = {k: v for k, v in train.items() if v is not None}  # None: keep the default
    size = tuple(image_size) if image_size is not None else None
    return RunConfig(
        preset=preset, model=model, train=TrainConfig(**train), dataset=dataset or "mnist", image_size=size, grey=grey
    ).validate()


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise VaelabError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VaelabError(f"{name} must be an integer >= 1, got {value!r}")
