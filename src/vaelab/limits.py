"""What the machine can hold: counts and sizes checked before any work starts, each refusal one line.

A training step's memory grows with the batch, the image, the networks' widths and, for the models of the family,
with the K codes per image of the iwae (and of a vae with --k), the vamp's pseudo-inputs (encoded at every step) and
the vqvae's codebook (every code vector's distance to every codebook vector). `step_bytes` estimates it from the
configuration alone: the activations of one forward pass in float32, which XLA's fused step holds about once
(measured with an iwae, mlp, batch 100 on MNIST: K = 2000 raised the peak resident memory by 1.67 GB over K = 1, the
estimate says 2.09 GB; for K = 1,000,000 XLA asked for 837 GB, the estimate says 1,043 GB). A training that would
need more than MEMORY_SHARE of the machine's memory is refused before its run directory is written, naming the
estimate, the limit and what to lower.

The optimizer's step counter is an int32 under JAX (64-bit mode is off), so a run takes at most MAX_STEPS steps:
epochs x steps per epoch beyond it would wrap the counter, and the learning-rate schedule with it.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from vaelab.config import MAX_STEPS
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    from vaelab.config import ModelConfig, RunConfig

MEMORY_SHARE = 0.5  # a training or an evaluation may take at most this share of the machine's memory
FLOAT_BYTES = 4  # training computes in float32


def physical_memory() -> int:
    """The machine's memory in bytes (8 GB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def memory_limit() -> int:
    return int(MEMORY_SHARE * physical_memory())


def _image_floats(model: ModelConfig) -> tuple[int, int]:
    """Activations of one image through the encoder, and of one code through the decoder (the likelihood's
    per-pixel terms included), in numbers."""
    height, width, channels = model.input_shape
    pixels = height * width * channels
    if model.arch == "mlp":
        hidden = sum(model.hidden_widths)
        return pixels + hidden, hidden + 3 * pixels
    if model.arch == "convnet":
        maps = sum(math.ceil(height / 2**i) * math.ceil(width / 2**i) * f for i, f in enumerate(model.conv_filters, 1))
    else:  # part (g)'s ConvNet on 28x28: 28x28x16, 14x14x16, 14x14x8, 7x7x8 and back
        maps = 28 * 28 * 16 + 14 * 14 * 16 + 14 * 14 * 8 + 7 * 7 * 8
    return pixels + maps + model.intermediate_dim, 2 * maps + model.intermediate_dim + 3 * pixels


def step_bytes(model: ModelConfig, batch: int) -> int:
    """An estimate of one training step's memory, in bytes (see the module's docstring)."""
    encoder, decoder = _image_floats(model)
    codes = model.samples  # the iwae's K, a vae's --k; 1 for the others
    floats = batch * (encoder + codes * decoder + 4 * codes * model.latent_dim)
    floats += model.member.working_floats(model, batch, encoder)  # a vamp's pseudo-inputs, a vqvae's distances
    return FLOAT_BYTES * floats


def check_training(config: RunConfig, steps_per_epoch: int) -> None:
    """Refuses, in one line, a training that cannot fit: its step counter, or its memory (see the docstring)."""
    epochs = config.train.epochs
    if epochs * steps_per_epoch > MAX_STEPS:
        raise VaelabError(
            f"{epochs:,} epochs of {steps_per_epoch:,} steps are {epochs * steps_per_epoch:,} steps, over the "
            f"{MAX_STEPS:,} the optimizer's int32 step counter holds; lower --epochs"
        )
    needed, limit = step_bytes(config.model, config.train.batch_size), memory_limit()
    if needed > limit:
        model = config.model
        lower = model.member.smaller()
        raise VaelabError(
            f"a training step of this {model.family} would need about {needed / 1e9:,.1f} GB, over the "
            f"{limit / 1e9:.1f} GB allowed ({MEMORY_SHARE:.0%} of this machine's memory); lower {lower} or --batch-size"
        )


def check_evaluation(images: int, samples: int) -> None:
    """Refuses, in one line, an importance-sampled evaluation of `images` x `samples` that cannot fit."""
    needed, limit = 2 * images * samples * 8, memory_limit()  # log w and log p(x|z), float64, per image and sample
    if needed > limit:
        raise VaelabError(
            f"{images:,} images x {samples:,} samples need {needed / 1e9:.1f} GB, over the {limit / 1e9:.1f} GB "
            f"allowed ({MEMORY_SHARE:.0%} of this machine's memory): use fewer --samples or --images"
        )
