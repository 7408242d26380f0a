"""Keras' Adam and RMSprop, with each variable's update run by a compiled kernel where it can be.

The same optimizers (same variables, same hyperparameters, same mathematics): on the JAX backend on a CPU, the
element-wise update of a variable and its slots runs as one vectorised pass over memory (`vaelab.kernels`,
optimizer_math.h) instead of XLA's loops; Keras' own `update_step` is the specification, the reference in the
tests, and the fallback (other backends, `VAELAB_KERNELS=0`, amsgrad, momentum, centred RMSprop, other dtypes,
a Keras distribution).
"""

from __future__ import annotations

import keras
from keras import ops

from vaelab import kernels


def _runs(variable, gradient) -> bool:
    """Whether the update kernel can update `variable` now."""
    return (
        keras.backend.backend() == "jax"
        and keras.distribution.distribution() is None
        and keras.backend.standardize_dtype(variable.dtype) == "float32"
        and keras.backend.standardize_dtype(gradient.dtype) == "float32"
        and kernels.dense_runs()
    )


@keras.saving.register_keras_serializable(package="vaelab")
class Adam(keras.optimizers.Adam):
    """Keras' Adam; each variable's update one compiled pass where it can be (module docstring)."""

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or not _runs(variable, gradient):
            return super().update_step(gradient, variable, learning_rate)
        from vaelab.kernels import ops as kernel_ops

        # alpha as Keras computes it (keras/src/optimizers/adam.py)
        lr = ops.cast(learning_rate, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        constants = [1 - self.beta_1, 1 - self.beta_2, self.epsilon]
        scalars = ops.concatenate([ops.reshape(alpha, (1,)), ops.convert_to_tensor(constants, "float32")])
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        new = kernel_ops.adam_update(*(ops.convert_to_tensor(t) for t in (variable, m, v)), gradient, scalars)
        for target, value in zip((variable, m, v), new, strict=True):
            self.assign(target, value)


@keras.saving.register_keras_serializable(package="vaelab")
class RMSprop(keras.optimizers.RMSprop):
    """Keras' RMSprop; each variable's update one compiled pass where it can be (no momentum, not centred)."""

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum > 0 or self.centered or not _runs(variable, gradient):
            return super().update_step(gradient, variable, learning_rate)
        from vaelab.kernels import ops as kernel_ops

        lr = ops.cast(learning_rate, variable.dtype)
        constants = [self.rho, 1 - self.rho, self.epsilon]
        scalars = ops.concatenate([ops.reshape(lr, (1,)), ops.convert_to_tensor(constants, "float32")])
        velocity = self._velocities[self._get_variable_index(variable)]
        new = kernel_ops.rmsprop_update(*(ops.convert_to_tensor(t) for t in (variable, velocity)), gradient, scalars)
        for target, value in zip((variable, velocity), new, strict=True):
            self.assign(target, value)
