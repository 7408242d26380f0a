"""What changes over training: the weight of the KL term (β, warm-up) and the learning rate.

Both are functions of the position in training alone, so a resumed run follows them exactly:

- the KL weight of epoch e (counted from 1) is w(e) = β · min(1, e / N) with N = `kl_warmup`, and β
  from the first epoch when N = 0. It lives in the VAE as a non-trainable variable (`VAE.kl_weight`)
  that `KLWeight` sets at the start of every epoch: the compiled step reads it, nothing recompiles.
- the learning rate, with `lr_decay_epochs` = E, follows Burda et al. (2015): eight stages, stage
  i = 0..7 at lr · 10^(-i/7) for 3^i of 3,280 epochs; compressed here so the eight stages fill E
  epochs, and counted in optimizer steps (the optimizer's step count is in the checkpoint).
"""

from __future__ import annotations

import keras

from vaelab.config import TrainConfig

BURDA_STAGES = 8  # i = 0..7
BURDA_EPOCHS = sum(3**i for i in range(BURDA_STAGES))  # 3,280 passes over the data in the paper


def kl_weight(config: TrainConfig, epoch: int) -> float:
    """The KL weight during `epoch` (counted from 0): β · min(1, (epoch + 1) / kl_warmup), or β without warm-up."""
    if config.kl_warmup == 0:
        return config.beta
    return config.beta * min(1.0, (epoch + 1) / config.kl_warmup)


class KLWeight(keras.callbacks.Callback):
    """Sets the VAE's KL weight at the start of every epoch from the run's schedule (`kl_weight`)."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(kl_weight(self.config, epoch))


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's learning rate: the constant `learning_rate`, or Burda et al.'s decay over `lr_decay_epochs`."""
    if config.lr_decay_epochs is None:
        return config.learning_rate
    stage_ends = [sum(3**j for j in range(i + 1)) for i in range(BURDA_STAGES - 1)]  # in the paper's epochs
    # PiecewiseConstantDecay moves to stage i + 1 after step `boundary` (counted from 0): the last step of stage i.
    boundaries = [round(end / BURDA_EPOCHS * config.lr_decay_epochs * steps_per_epoch) - 1 for end in stage_ends]
    values = [config.learning_rate * 10 ** (-i / 7) for i in range(BURDA_STAGES)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
