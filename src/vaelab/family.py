"""The members of the VAE family as the rest of the package asks about them: one `Family` per member, in `FAMILIES`.

A member's network and objective are its Keras class in `vaelab.models` (`MODELS`); everything else the package
asks about it is a property or method of its `Family` here, never an `if family == "..."` elsewhere:

    options            the settings it owns (`Option`: the vae's and the iwae's k, the vamp's pseudo_inputs, ...),
                       flat fields of `ModelConfig` and of config.json's "model", with their defaults and checks;
                       a field may be owned by several members, each with its own default
    conditional        whether the encoder and the generator also read the image's label (labelled data only)
    gaussian_latent    whether its codes are points of a Gaussian latent space (maps, manifolds, interpolations,
                       samplers, disentanglement scores) or, where not, codebook indices (the vqvae's code grids)
    bound_of           what its ELBO and importance-weighted bound bound: log p(x), or log p(x|y)
    terms              the loss terms it logs besides the VAE's, as metrics and history.csv columns
    test_line          its final test figures in one line, each loss term named (`vaelab train`, the report)

A new member subclasses `Family`, overriding only where it differs from the VAE, and is registered with its Keras
class by `vaelab.models.register` (docs/adding-a-model.md). This module sits below `vaelab.config`, which reads a
member's options and checks, so it imports no Keras.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from vaelab.errors import VaelabError

# The iwae's codes per image: Burda et al.'s middle setting (1, 5, 50), 5x a VAE's decoder work.
DEFAULT_K = 5
# The vae's codes per image: one draw, the textbook ELBO; Burda et al. also train it on the ELBO averaged over 5 and 50.
VAE_K = 1
K_FOREIGN = "--k is the number of codes per image of the vae and the iwae; leave it out with --model {family}"
# The vamp's pseudo-inputs: Tomczak & Welling's for MNIST. Each step encodes them all: 500 images, 5x a batch of 100.
DEFAULT_PSEUDO_INPUTS = 500
MNIST_TRAINING_IMAGES = 60_000  # a betatc's N when its network is built without data (the exercise's MNIST)
DEFAULT_CODES = 512  # the vqvae's codebook size K (--codes): van den Oord et al.'s K for images
CODE_DIM = 16  # D, the length of each of a vqvae's latent_dim code vectors: small, for the small networks here
COMMITMENT = 0.25  # beta_c, the vqvae's commitment loss's weight: van den Oord et al. found 0.1 to 2.0 alike
# A betatc's KL split in three (vaelab.models.betatc logs them; they are columns of its history.csv).
TERMS = ("mutual_information", "total_correlation", "dimension_kl")
VQ_METRICS = ("codebook_loss", "commitment_loss", "perplexity")  # a vqvae's besides the VAE's (vaelab.models.vqvae)


@dataclass(frozen=True)
class Option:
    """A setting one member owns: a field of `ModelConfig` (a flat key of config.json's "model"), None meaning
    `default`. `foreign` is the error when another member is given it ({family}: that member's name)."""

    field: str  # ModelConfig's attribute and config.json's key
    default: int
    foreign: str
    flag: str | None = None  # the command line's (`vaelab train`); None for a setting taken from the data
    meaning: str = ""  # what the value is, for --help ("importance samples per image"); "" for the field's name
    minimum: int = 1
    invalid: str | None = None  # the error for a value below `minimum` ({value!r}); None: "field must be >= 1"

    def check(self, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < self.minimum:
            raise VaelabError(
                self.invalid.format(value=value)
                if self.invalid
                else f"{self.field} must be an integer >= {self.minimum}, got {value!r}"
            )


class Family:
    """A member of the VAE family as the package sees it; the defaults are the VAE's (the ELBO with β and a
    Gaussian q(z|x) under N(0, I))."""

    name: ClassVar[str] = "vae"
    summary: ClassVar[str] = "the ELBO, with beta"  # for --model's help
    options: ClassVar[tuple[Option, ...]] = ()
    conditional: ClassVar[bool] = False
    gaussian_latent: ClassVar[bool] = True
    terms: ClassVar[tuple[str, ...]] = ()  # logged besides vaelab.run.LOSSES (and their val_ on the test set)
    kl_term: ClassVar[bool] = True  # whether it logs kl_loss and kl_weight (history.csv's KL_COLUMNS)
    fixed_variance: ClassVar[bool] = True  # whether its code can have the fixed variance (part f's presets)
    code_prior: ClassVar[bool] = False  # whether a prior over its codes can be learned after it (train-prior)
    # Why --beta and --kl-warmup do not apply, where they do not (an objective with no KL term to weight).
    beta_refusal: ClassVar[str | None] = None
    # Why epsilon_std must stay 1, where it must (a loss that weighs codes drawn from q(z|x) itself).
    epsilon_refusal: ClassVar[str | None] = None
    weighted_kl: ClassVar[str] = "{:g} x KL"  # what a KL weight other than 1 multiplies (`vaelab diagnose`)
    kl_estimated: ClassVar[bool] = False  # whether its KL has no closed form and is estimated at the drawn codes
    # The textbook objective its loss is exactly, if any: "elbo" (the beta-weighted ELBO under N(0, I)) or "iwae" (the
    # importance-weighted bound); the compiled whole step (vaelab.training.fused_step) computes only these. Not
    # inherited: a member that does not state it is None, so that a new loss never passes for the VAE's.
    objective: ClassVar[str | None] = "elbo"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.objective = cls.__dict__.get("objective")

    def value(self, config: Any, field: str) -> int | None:
        """The member's setting `field` in `config` (its default where None), or None where it owns no such."""
        for option in self.options:
            if option.field == field:
                given = getattr(config, field)
                return option.default if given is None else given
        return None

    def samples(self, config: Any) -> int:
        """The codes drawn per image in training: its `k` where it owns one (the vae, the iwae), else one."""
        k = self.value(config, "k")
        return 1 if k is None else k

    def bound_of(self, config: Any) -> str:
        """What its ELBO and importance-weighted bound bound."""
        return "log p(x|y)" if self.conditional else "log p(x)"

    def validate(self, config: Any) -> None:
        """One-line errors for `config`'s settings this member cannot take (beyond its options' own checks)."""
        if self.epsilon_refusal and config.epsilon_std != 1.0:
            raise VaelabError(self.epsilon_refusal)

    def for_data(self, config: Any, training_images: int | None) -> dict[str, Any]:
        """The fields of `config` that the data set, where the member reads the data's size."""
        return {}

    def decoder_width(self, config: Any) -> int:
        """The numbers the decoder reads per image (for counting parameters before building)."""
        return config.latent_dim

    def heads(self, config: Any) -> int:
        """The encoder's dense heads onto the code: z_mean and, where the variance is learned, z_log_var."""
        return 2 if config.variance == "learned" else 1

    def extra_parameters(self, config: Any, pixels: int) -> int:
        """Parameters learned beside the encoder and the decoder (pseudo-inputs, a codebook)."""
        return 0

    def working_floats(self, config: Any, batch: int, encoder: int) -> int:
        """The floats a training step holds beyond the networks' activations (`vaelab.limits`)."""
        return 0

    def smaller(self) -> str:
        """What to lower when a training step will not fit in memory."""
        return "the network's widths"

    def loss_note(self, config: Any) -> str:
        """What its logged loss is, in words (the report's note on its figures)."""
        return "the negative ELBO, reconstruction plus KL, with one z sampled per image"

    def test_line(self, config: Any, test: Mapping[str, float]) -> str:
        """The final test figures in one line (`vaelab train` prints it): the loss, and with a KL weight other
        than 1 the objective and the ELBO."""
        recon, kl, w = test["reconstruction_loss"], test["kl_loss"], test.get("kl_weight", 1.0)
        if w == 1.0:
            return f"loss {test['loss']:.2f} nats = reconstruction {recon:.2f} + KL {kl:.2f}"
        return (
            f"objective {test['loss']:.2f} nats = reconstruction {recon:.2f} + {w:g} x KL {kl:.2f}; "
            f"-ELBO {recon + kl:.2f}"
        )


class VAEFamily(Family):
    """The VAE itself: the ELBO with β, on K codes per image (`k`, default 1: the textbook one-draw estimate; more
    average the reconstruction term over K draws, Burda et al.'s "VAE, k = 5 / 50": the same objective, a gradient
    of lower variance, K times the decoder's work)."""

    options = (
        Option("k", VAE_K, K_FOREIGN, flag="--k", meaning="codes per image, its ELBO averaged over them"),
    )  # fmt: skip
    objective = "elbo"

    def smaller(self) -> str:
        return "--k or the network's widths"

    def loss_note(self, config: Any) -> str:
        k = self.samples(config)
        if k == 1:
            return super().loss_note(config)
        return f"the negative ELBO, reconstruction (averaged over K = {k} z drawn per image) plus KL"


class IWAEFamily(Family):
    """The importance-weighted bound of Burda et al. (2015), K codes per image (vaelab.models.iwae)."""

    name = "iwae"
    summary = "the importance-weighted bound"
    objective = "iwae"
    options = (
        Option("k", DEFAULT_K, K_FOREIGN, flag="--k", meaning="importance samples per image"),
    )  # fmt: skip
    beta_refusal = (
        "--beta and --kl-warmup weight the ELBO's KL term, which the iwae's bound has not; "
        "leave them out with --model iwae"
    )
    epsilon_refusal = "the iwae weighs codes drawn from q(z|x) itself; leave epsilon_std at 1"

    def smaller(self) -> str:
        return "--k"

    def loss_note(self, config: Any) -> str:
        return f"the negative importance-weighted bound with K = {self.samples(config)} z sampled per image"

    def test_line(self, config: Any, test: Mapping[str, float]) -> str:
        recon, kl = test["reconstruction_loss"], test["kl_loss"]
        return f"objective {test['loss']:.2f} nats (-IWAE bound, K = {self.samples(config)}); -ELBO {recon + kl:.2f}"


class CVAEFamily(Family):
    """The VAE conditioned on the label, Sohn et al. (2015): its bounds are on log p(x|y) (vaelab.models.cvae)."""

    name = "cvae"
    summary = "conditioned on the label; labelled data"
    conditional = True


class VampFamily(Family):
    """The VAE with the VampPrior of Tomczak & Welling (2018), a mixture over learned pseudo-inputs."""

    name = "vamp"
    summary = "the VampPrior, learned pseudo-inputs"
    options = (
        Option("pseudo_inputs", DEFAULT_PSEUDO_INPUTS,
               "--pseudo-inputs is the vamp's number of pseudo-inputs; leave it out with --model {family}",
               flag="--pseudo-inputs", meaning="learned pseudo-inputs, its prior's mixture components"),
    )  # fmt: skip
    epsilon_refusal = "the vamp weighs codes drawn from q(z|x) itself; leave epsilon_std at 1"
    kl_estimated = True  # the mixture's log density at the codes

    def extra_parameters(self, config: Any, pixels: int) -> int:
        return self.value(config, "pseudo_inputs") * pixels

    def working_floats(self, config: Any, batch: int, encoder: int) -> int:
        # the pseudo-inputs through the encoder, and each code's density under each component
        count = self.value(config, "pseudo_inputs")
        return count * encoder + batch * count * config.latent_dim

    def smaller(self) -> str:
        return "--pseudo-inputs"


class BetaTCFamily(Family):
    """The β-TCVAE of Chen et al. (2018): the ELBO's KL split in three, β on the total correlation."""

    name = "betatc"
    summary = "the beta-TCVAE: beta weights the total correlation"
    options = (
        Option("dataset_size", MNIST_TRAINING_IMAGES,
               "dataset_size is the betatc's number of training images, not --model {family}'s"),
    )  # fmt: skip
    terms = TERMS
    epsilon_refusal = "the betatc weighs codes drawn from q(z|x) itself; leave epsilon_std at 1"
    weighted_kl = "MI + {:g} x TC + dimension-wise KL"

    def for_data(self, config: Any, training_images: int | None) -> dict[str, Any]:
        return {"dataset_size": training_images} if training_images else {}

    def test_line(self, config: Any, test: Mapping[str, float]) -> str:
        recon, kl, w = test["reconstruction_loss"], test["kl_loss"], test.get("kl_weight", 1.0)
        return (
            f"objective {test['loss']:.2f} nats = reconstruction {recon:.2f} + MI {test['mutual_information']:.2f} "
            f"+ {w:g} x TC {test['total_correlation']:.2f} + dimension-wise KL {test['dimension_kl']:.2f}; "
            f"-ELBO {recon + kl:.2f}"
        )


class VQVAEFamily(Family):
    """The VQ-VAE of van den Oord et al. (2017): codes from a learned codebook, the uniform prior over them."""

    name = "vqvae"
    summary = "codes from a learned codebook"
    options = (
        Option("codes", DEFAULT_CODES, "--codes is the vqvae's codebook size; leave it out with --model {family}",
               flag="--codes", minimum=2, meaning="codebook size",
               invalid="--codes, the vqvae's codebook size, must be an integer >= 2, got {value!r}"),
    )  # fmt: skip
    gaussian_latent = False
    terms = VQ_METRICS
    kl_term = False
    fixed_variance = False
    code_prior = True
    beta_refusal = (
        "--beta and --kl-warmup weight the ELBO's KL term; the vqvae has none to weight (its commitment "
        "weight is the paper's 0.25): leave them out with --model vqvae"
    )
    epsilon_refusal = "the vqvae draws no noise; leave epsilon_std at 1"

    def bound_of(self, config: Any) -> str:
        return "log p(x), uniform prior over codes"

    def validate(self, config: Any) -> None:
        if not self.fixed_variance and config.variance != "learned":
            raise VaelabError("the vqvae's codes are nearest codebook vectors, with no variance to fix; use --preset "
                              "mlp, conv or convnet with --model vqvae")  # fmt: skip
        super().validate(config)

    def decoder_width(self, config: Any) -> int:
        return config.latent_dim * CODE_DIM  # L code vectors of D numbers, the decoder reading all of them

    def heads(self, config: Any) -> int:
        return 1  # z_e

    def extra_parameters(self, config: Any, pixels: int) -> int:
        return self.value(config, "codes") * CODE_DIM

    def working_floats(self, config: Any, batch: int, encoder: int) -> int:
        # each of the L code vectors' distance to each of the K codebook vectors
        return 2 * batch * config.latent_dim * self.value(config, "codes")

    def smaller(self) -> str:
        return "--codes"

    def test_line(self, config: Any, test: Mapping[str, float]) -> str:
        """Each term in its own unit: the objective, a sum of nats and a squared distance, then the negative ELBO."""
        recon, commitment, bound = test["reconstruction_loss"], test["commitment_loss"], test.get("bound", "log p(x)")
        return (
            f"objective {test['loss']:.2f} = reconstruction {recon:.2f} nats + {COMMITMENT:g} x commitment "
            f"{commitment:.2f} (a squared distance); -ELBO ({bound}) {test['elbo_loss']:.2f} nats"
        )


# The members, in --model's order: the VAE with β, the importance-weighted bound of Burda et al. (2015), the VAE
# conditioned on the label of Sohn et al. (2015), the VampPrior of Tomczak & Welling (2018), the β-TCVAE of Chen et
# al. (2018), the VQ-VAE of van den Oord et al. (2017). `vaelab.models.register` adds one.
FAMILIES: dict[str, Family] = {
    f.name: f for f in (VAEFamily(), IWAEFamily(), CVAEFamily(), VampFamily(), BetaTCFamily(), VQVAEFamily())
}


def member(name: str) -> Family:
    """The registered member called `name` (a one-line error naming the members where there is none)."""
    if name not in FAMILIES:
        raise VaelabError(f"unknown model {name!r}; choose one of: {', '.join(FAMILIES)}")  # as ModelConfig.validate
    return FAMILIES[name]


def all_terms() -> tuple[str, ...]:
    """Every registered member's logged terms, each once, in the members' order."""
    return tuple(dict.fromkeys(t for f in FAMILIES.values() for t in f.terms))
