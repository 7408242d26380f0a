"""Every setting of a run in one place: the network (`ModelConfig`), training (`TrainConfig`) and presets.

Defaults follow the course's `variational_autoencoder.py`; each says why beside it.
"""

from __future__ import annotations

import dataclasses
import math
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

    def validate(self) -> None:
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("variance", self.variance, VARIANCES)
        _check_choice("implementation", self.implementation, IMPLEMENTATIONS)
        _check_positive("latent_dim", self.latent_dim)
        _check_positive("intermediate_dim", self.intermediate_dim)
        if not (math.isfinite(self.epsilon_std) and self.epsilon_std > 0):
            raise VaelabError(f"epsilon_std must be a finite number > 0, got {self.epsilon_std}")
        if self.parameters() > MAX_PARAMETERS:
            raise VaelabError(
                f"latent_dim {self.latent_dim} with intermediate_dim {self.intermediate_dim} makes a network of about "
                f"{self.parameters():,} weights ({self.parameters() * 16 / 1e9:.0f} GB to train); "
                f"keep it under {MAX_PARAMETERS:,}"
            )

    def parameters(self) -> int:
        """The number of weights the network will have (computed before building it, to refuse absurd sizes)."""
        h, z = self.intermediate_dim, self.latent_dim
        heads = (h + 1) * z * (2 if self.variance == "learned" else 1)  # z_mean (and z_log_var)
        if self.arch == "mlp":
            return (784 + 1) * h + heads + (z + 1) * h + (h + 1) * 784
        convs = (9 * 1 + 1) * 16 + (9 * 16 + 1) * 8 + (9 * 8 + 1) * 8 + (9 * 8 + 1) * 16 + (9 * 16 + 1)
        return convs + (392 + 1) * h + heads + (z + 1) * h + (h + 1) * 512


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

    def validate(self) -> None:
        _check_positive("epochs", self.epochs)
        _check_positive("batch_size", self.batch_size)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise VaelabError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise VaelabError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))


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

    def validate(self) -> RunConfig:
        self.model.validate()
        self.train.validate()
        if not isinstance(self.dataset, str) or not self.dataset:
            raise VaelabError(f"dataset must be a name or a path, got {self.dataset!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        try:
            return cls(
                preset=data["preset"],
                model=ModelConfig(**data["model"]),
                train=TrainConfig(**data["train"]),
                dataset=data.get("dataset", "mnist"),  # runs made before other datasets existed: MNIST
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
    dataset: str | None = None,
    **train: Any,
) -> RunConfig:
    """The configuration of `preset` on `dataset`, with `latent_dim`, `implementation` and any `TrainConfig`
    field overridden (None keeps the default)."""
    _check_choice("preset", preset, tuple(PRESETS))
    model = PRESETS[preset]
    if latent_dim is not None:
        model = dataclasses.replace(model, latent_dim=latent_dim)
    if implementation is not None:
        model = dataclasses.replace(model, implementation=implementation)
    unknown = set(train) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise VaelabError(f"unknown training settings: {', '.join(sorted(unknown))}")
    train = {k: v for k, v in train.items() if v is not None}  # None: keep the default
    return RunConfig(preset=preset, model=model, train=TrainConfig(**train), dataset=dataset or "mnist").validate()


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise VaelabError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VaelabError(f"{name} must be an integer >= 1, got {value!r}")
