"""A dense VAE's whole training step as one compiled call, where it applies: `install(model, config)`.

Keras' JAX step (the specification, and the fallback) differentiates the model's loss with `jax.grad` and applies
the optimizer, a few hundred small XLA operations per step; on a CPU their dispatch, not the arithmetic, sets the
pace of Burda et al.'s 784-200-200-50 network at batch 20. The fused step replaces the gradient and the update by one
FFI call (`vaelab.kernels.ops.vae_step`, vae_step.h): forward, loss, backward and the optimizer's update of every
parameter, in place. Everything random stays JAX's and the model's own: the step draws the binarised images and the
codes' noise by calling the model's `binarize` and `z` layers (from their seed generators' states, as the XLA step
does), then hands the numbers to the kernel; the metrics are the model's (`track`) and Keras' own loss tracker. So an
epoch from the same seed gives the same numbers as the XLA step, to float32 rounding (tests/test_fused_step.py).

Where: the JAX backend on a CPU with the compiled kernels in use; the mlp arch, the vae (one code per image) or the
iwae family, the Bernoulli likelihood with its sigmoid decoder, a learned variance, not conditional, vaelab's layers
(`--implementation fused`);
Keras' (vaelab's) Adam without amsgrad or RMSprop without momentum or centring, and no weight decay, clipping, EMA,
gradient accumulation or loss scaling; no Keras distribution. `SWITCH` turns it on or off; `reason` says why a
network does not take it.
"""

from __future__ import annotations

import os

import keras
from keras import ops

from vaelab import kernels
from vaelab.config import ModelConfig

# "1": train applicable networks with the fused step; "0": Keras' step. Default: DEFAULT (see its comment).
SWITCH = "VAELAB_FUSED_STEP"
# Off by default until measured faster side by side (docs/performance-dense.md has the measurements).
DEFAULT = "0"
_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")


def enabled() -> bool:
    """Whether `SWITCH` (or its default) asks for the fused step."""
    return os.environ.get(SWITCH, DEFAULT) == "1"


def reason(model: keras.Model, config: ModelConfig) -> str | None:
    """Why the fused step cannot train `model` (built from `config`, compiled with its optimizer), or None if it can."""
    checks = [
        (keras.backend.backend() == "jax", "the Keras backend is not JAX"),
        (keras.distribution.distribution() is None, "a Keras distribution is set"),
        (config.arch == "mlp", f"the {config.arch} arch is not dense"),
        (config.member.objective is not None, f"the {config.family} family's objective"),
        (config.member.objective != "elbo" or config.samples == 1, "the ELBO averaged over K > 1 codes"),
        (config.pixel_likelihood == "bernoulli" and config.output_activation == "sigmoid", "not a Bernoulli decoder"),
        (config.variance == "learned" and not config.conditional, "a fixed variance or a conditional model"),
        (config.implementation == "fused", "--implementation keras"),
        (config.activation in _ACTIVATIONS, f"the activation {config.activation}"),
        (model.compute_dtype == "float32", "not float32"),
    ]
    for ok, why in checks:
        if not ok:
            return why
    optimizer = model.optimizer
    if not _optimizer_kind(optimizer):
        return f"the optimizer {type(optimizer).__name__} with these options"
    if len(_layers(model, config)) * 2 != len(model.trainable_variables):
        return "trainable variables besides the dense layers'"
    status = kernels.status()
    if not status.in_use:
        return f"compiled kernels not in use: {status.detail}"
    import jax

    return None if jax.default_backend() == "cpu" else "JAX does not compute on the CPU"


def install(model: keras.Model, config: ModelConfig) -> bool:
    """Trains `model` (compiled) with the fused step from now on, if `SWITCH` asks for it and it applies; whether
    it does."""
    if not enabled() or reason(model, config) is not None:
        return False
    model.train_step = FusedStep(model, config)  # Keras' JAX trainer jits `self.train_step` (its jax/trainer.py)
    return True


def describe(model: keras.Model, config: ModelConfig) -> str:
    """What runs `model`'s training steps, in words (the training log says it)."""
    if isinstance(getattr(model, "train_step", None), FusedStep):
        return "vaelab's fused step (gradient and update in one compiled call: vaelab.training.fused_step)"
    if not enabled():
        return f"Keras' step (XLA); {SWITCH}=1 fuses it where it applies"
    return f"Keras' step (XLA): the fused step does not apply ({reason(model, config)})"


def _optimizer_kind(optimizer) -> str | None:
    plain = not any(
        getattr(optimizer, name, None)
        for name in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "loss_scale_factor")
    ) and not getattr(optimizer, "gradient_accumulation_steps", None)
    if not plain:
        return None
    if isinstance(optimizer, keras.optimizers.Adam) and not optimizer.amsgrad:
        return "adam"
    if isinstance(optimizer, keras.optimizers.RMSprop) and not optimizer.momentum and not optimizer.centered:
        return "rmsprop"
    return None


def _layers(model: keras.Model, config: ModelConfig) -> list:
    """The network's dense layers in the kernel's order: encoder hidden, z_mean, z_log_var, decoder hidden, output."""
    names = [layer.name for layer in model.layers]
    count = len(config.hidden_widths)
    suffixes = [str(k + 1) if k else "" for k in range(count)]
    wanted = [f"encoder_h{s}" for s in suffixes] + ["z_mean", "z_log_var"]
    wanted += [f"decoder_h{s}" for s in suffixes] + ["decoder_mean"]
    if not all(name in names for name in wanted):
        return []
    layers = [model.get_layer(name) for name in wanted]
    return layers if all(getattr(layer, "bias", None) is not None for layer in layers) else []


class FusedStep:
    """Keras' `train_step(state, data) -> (logs, state)` for the JAX backend, the gradient and update in one call."""

    def __init__(self, model: keras.Model, config: ModelConfig):
        self.model, self.config = model, config
        self.layers = _layers(model, config)
        self.optimizer_kind = _optimizer_kind(model.optimizer)
        names = [layer.name for layer in model.layers]
        self.binarize = model.get_layer("binarize") if "binarize" in names else None
        self.sampling = model.get_layer("z")

    def __call__(self, state, data):
        import jax.numpy as jnp

        from vaelab.kernels import ops as kernel_ops

        model, optimizer = self.model, self.model.optimizer
        trainable, non_trainable, optimizer_values, metrics_values = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        images = x
        batch, latent = images.shape[0], self.config.latent_dim
        # the random numbers, from the model's own layers and seed generators, as the XLA step draws them
        with keras.StatelessScope(state_mapping=_pairs(model.non_trainable_variables, non_trainable)) as scope:
            target = self.binarize(images, training=True) if self.binarize is not None else images
            zeros = jnp.zeros((batch, latent), jnp.float32)
            eps = self.sampling([zeros, zeros])  # z = 0 + exp(0) * eps = eps, bit for bit
            kl_weight = ops.convert_to_tensor(model.kl_weight)
        non_trainable = [_current(scope, v, value) for v, value in _pairs(model.non_trainable_variables, non_trainable)]
        # the optimizer's scalars at this step
        slots_of = self._slots(optimizer)
        with keras.StatelessScope(state_mapping=_pairs(optimizer.variables, optimizer_values)):
            scalars = self._scalars(optimizer)
        trainable_at = {id(v): t for t, v in enumerate(model.trainable_variables)}
        optimizer_at = {id(v): t for t, v in enumerate(optimizer.variables)}
        variables = [v for layer in self.layers for v in (layer.kernel, layer.bias)]
        parameters = [trainable[trainable_at[id(v)]] for v in variables]
        slots = [optimizer_values[optimizer_at[id(s)]] for s in slots_of(variables)]
        scalars = ops.concatenate([ops.reshape(ops.cast(kl_weight, "float32"), (1,)), scalars])
        reconstruction, kl, objective, parameters, slots = kernel_ops.vae_step(
            ops.reshape(target, (batch, -1)),
            ops.reshape(eps, (-1, latent)),
            scalars,
            parameters,
            slots,
            activation=self.config.activation,
            samples=self.config.samples,
            objective=self.config.member.objective,
            optimizer=self.optimizer_kind,
        )
        trainable = list(trainable)
        for v, value in zip(variables, parameters, strict=True):
            trainable[trainable_at[id(v)]] = value
        optimizer_values = list(optimizer_values)
        for s, value in zip(slots_of(variables), slots, strict=True):
            optimizer_values[optimizer_at[id(s)]] = value
        at = optimizer_at[id(optimizer.iterations)]
        optimizer_values[at] = optimizer_values[at] + 1
        loss = ops.mean(objective)
        # the metrics: the model's own (as its compute_loss tracks them), then Keras' loss tracker
        mapping = _pairs(model.non_trainable_variables, non_trainable) + _pairs(model.metrics_variables, metrics_values)
        with keras.StatelessScope(state_mapping=mapping) as scope:
            model.track(reconstruction, kl)
        metrics_values = [_current(scope, v, value) for v, value in _pairs(model.metrics_variables, metrics_values)]
        logs, metrics_values = model._update_metrics_variables(metrics_values, loss, x, y, None, sample_weight)
        return logs, (trainable, non_trainable, optimizer_values, metrics_values)

    def _slots(self, optimizer):
        index = optimizer._get_variable_index
        if self.optimizer_kind == "adam":
            return lambda vs: (
                [optimizer._momentums[index(v)] for v in vs] + [optimizer._velocities[index(v)] for v in vs]
            )
        return lambda vs: [optimizer._velocities[index(v)] for v in vs]

    def _scalars(self, optimizer):
        """The update's four scalars (optimizer_math.h), as vaelab.training.optimizers computes them."""
        lr = ops.cast(optimizer.learning_rate, "float32")
        if self.optimizer_kind == "rmsprop":
            rest = ops.convert_to_tensor([optimizer.rho, 1 - optimizer.rho, optimizer.epsilon], "float32")
            return ops.concatenate([ops.reshape(lr, (1,)), rest])
        local_step = ops.cast(optimizer.iterations + 1, "float32")
        beta_1_power = ops.power(ops.cast(optimizer.beta_1, "float32"), local_step)
        beta_2_power = ops.power(ops.cast(optimizer.beta_2, "float32"), local_step)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        rest = ops.convert_to_tensor([1 - optimizer.beta_1, 1 - optimizer.beta_2, optimizer.epsilon], "float32")
        return ops.concatenate([ops.reshape(alpha, (1,)), rest])


def _pairs(variables, values) -> list:
    return list(zip(variables, values, strict=True))


def _current(scope, variable, value):
    new = scope.get_current_value(variable)
    return value if new is None else new
