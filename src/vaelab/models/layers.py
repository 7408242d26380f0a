"""Faster, mathematically identical formulations of the ConvNet's layer pairs, as Keras layers.

Part (g)'s network spends most of its CPU time in two patterns: a 3x3 convolution followed by 2x2
max-pooling (encoder), and 2x nearest upsampling followed by a 3x3 convolution (decoder). Each
layer here computes one such pair in one go, with the same variables as the `Conv2D` it replaces
(`kernel` of shape (3, 3, C, F) and `bias`), so weights move freely between the two formulations.
The tests check outputs and gradients against the stock Keras layers. benchmarks/README.md says
what each saves.

On the JAX backend on a CPU, each layer here (and `SameConv2D`, the decoder's plain 3x3
convolution, and `Dense`, the dense networks' layer) runs compiled C++ kernels instead
(`vaelab.kernels`): the same layer, computed by hand-written loops; the `keras.ops` code below (for
`Dense`, Keras' own) is their specification and the fallback.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import activations, layers, ops

from vaelab import kernels

_KERNEL_ACTIVATIONS = {activations.linear: "linear", activations.relu: "relu", activations.sigmoid: "sigmoid"}
_DENSE_ACTIVATIONS = {**_KERNEL_ACTIVATIONS, activations.tanh: "tanh"}


def _kernel_activation(layer: layers.Conv2D, kind: str, x) -> str | None:
    """The activation's name if the compiled kernel of `kind` can compute `layer` on x now, else None.

    Not under a Keras distribution (several devices or processes): XLA cannot split a kernel's call
    over devices, it would gather the whole batch onto each of them.
    """
    if (
        keras.backend.backend() != "jax"
        or keras.distribution.distribution() is not None
        or layer.compute_dtype != "float32"
        or keras.backend.standardize_dtype(x.dtype) != "float32"
        or layer.data_format != "channels_last"
        or not layer.use_bias
        or layer.activation not in _KERNEL_ACTIVATIONS
        or len(x.shape) != 4
        or None in x.shape[1:]
    ):
        return None
    return _KERNEL_ACTIVATIONS[layer.activation] if kernels.runs(kind, (x.shape[-1], layer.filters)) else None


def _tensors(layer: layers.Conv2D):
    return ops.convert_to_tensor(layer.kernel), ops.convert_to_tensor(layer.bias)


@keras.saving.register_keras_serializable(package="vaelab")
class Dense(layers.Dense):
    """Keras' Dense, run by the compiled dense kernel where it can be: the same variables, the same mathematics.

    Where: the JAX backend on a CPU, float32, a (batch, features) input, a bias, an activation the kernel
    computes (linear, relu, sigmoid, tanh), no LoRA or quantisation, no Keras distribution (`_kernel_activation`).
    Elsewhere, and with `VAELAB_KERNELS=0`, Keras' own `call`: the reference the kernel is tested against.
    """

    def call(self, inputs, training=None):
        if activation := _dense_kernel_activation(self, inputs):
            from vaelab.kernels import ops as kernel_ops

            return kernel_ops.dense(
                inputs, ops.convert_to_tensor(self.kernel), ops.convert_to_tensor(self.bias), activation
            )
        return super().call(inputs, training=training)


def _dense_kernel_activation(layer: layers.Dense, x) -> str | None:
    """The activation's name if the compiled dense kernel can compute `layer` on x now, else None."""
    if (
        keras.backend.backend() != "jax"
        or keras.distribution.distribution() is not None
        or layer.compute_dtype != "float32"
        or keras.backend.standardize_dtype(x.dtype) != "float32"
        or layer.bias is None
        or layer.lora_enabled
        or layer.quantization_mode is not None
        or layer.activation not in _DENSE_ACTIVATIONS
        or len(x.shape) != 2
        or None in x.shape
    ):
        return None
    return _DENSE_ACTIVATIONS[layer.activation] if kernels.dense_runs() else None


@keras.saving.register_keras_serializable(package="vaelab")
class SameConv2D(layers.Conv2D):
    """Conv2D(F, (3, 3), padding="same"): the stock layer, run by the compiled kernel where it can be."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(filters, (3, 3), padding="same", **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["kernel_size"], config["padding"]  # fixed by the layer: 3x3, "same"
        return config

    def call(self, x):
        if activation := _kernel_activation(self, "conv", x):
            from vaelab.kernels import ops as kernel_ops

            return kernel_ops.conv(x, *_tensors(self), activation)
        return super().call(x)


@keras.saving.register_keras_serializable(package="vaelab")
class ConvMaxPool2D(layers.Conv2D):
    """Conv2D(F, (3, 3), padding="same", activation=relu) then MaxPooling2D((2, 2)), in one layer.

    Each of the four pixels of a pooling window is one "phase" of the convolution's output; a
    stride-2 convolution with a 4x4 kernel computes all four phases at once (4F channels), the max
    over the phases is the pooling. Because relu is monotonic and the bias is shared by the phases,
    max(relu(y + b)) = relu(max(y) + b): the activation runs on the pooled, four times smaller map.
    """

    def __init__(self, filters: int, **kwargs):
        kwargs.setdefault("activation", "relu")
        super().__init__(filters, (3, 3), padding="same", **kwargs)
        if self.activation not in (activations.relu, activations.linear):
            raise ValueError("ConvMaxPool2D needs a monotonic activation (relu or linear)")

    def get_config(self):
        config = super().get_config()
        del config["kernel_size"], config["padding"]  # fixed by the layer: 3x3, "same"
        return config

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else h // 2, None if w is None else w // 2, self.filters)

    def call(self, x):
        _, h, w, c = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"ConvMaxPool2D needs an even height and width, got {h}x{w}")
        if (activation := _kernel_activation(self, "conv_pool", x)) in ("relu", "linear"):
            from vaelab.kernels import ops as kernel_ops

            return kernel_ops.conv_max_pool(x, *_tensors(self), activation)
        # kernel4[i, j, c, phase, f] = kernel[i - p, j - q, c, f] for phase (p, q): each phase's 3x3
        # kernel placed at its offset in a 4x4 window.
        phases = [ops.pad(self.kernel, ((p, 1 - p), (q, 1 - q), (0, 0), (0, 0))) for p in (0, 1) for q in (0, 1)]
        kernel4 = ops.reshape(ops.stack(phases, axis=-2), (4, 4, c, 4 * self.filters))
        padded = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        y = ops.conv(padded, kernel4, strides=2, padding="valid")  # (n, h/2, w/2, 4F)
        y = ops.max(ops.reshape(y, (-1, h // 2, w // 2, 4, self.filters)), axis=-2)
        return self.activation(y + self.bias)


@keras.saving.register_keras_serializable(package="vaelab")
class UpSamplingConv2D(layers.Conv2D):
    """UpSampling2D((2, 2)) (nearest) then Conv2D(F, (3, 3), padding), computed at the low resolution.

    On a 2x nearest-upsampled image a 3x3 window covers at most 2x2 distinct low-resolution pixels,
    so each of the four output phases is a 2x2 convolution of the low-resolution input with taps of
    the 3x3 kernel summed. All four run as one convolution (4F channels), then the phases are
    interleaved into the full-resolution output ("sub-pixel convolution"). Same result, about half
    the multiplications, a quarter of the memory traffic.
    """

    def __init__(self, filters: int, padding: str = "same", **kwargs):
        super().__init__(filters, (3, 3), padding=padding, **kwargs)
        offsets = self._offsets(self.padding)  # as Conv2D standardised it: "SAME" is "same"
        self._low = min(min(row) for row in offsets)
        self._high = max(max(row) for row in offsets)
        # taps[p, d, o] = 1 where kernel row d of output phase p reads low-resolution row offset o.
        taps = np.zeros((2, 3, self._high - self._low + 1), np.float32)
        for p in (0, 1):
            for d in range(3):
                taps[p, d, offsets[p][d] - self._low] = 1.0
        self._taps = taps

    def get_config(self):
        config = super().get_config()
        del config["kernel_size"]  # fixed by the layer: 3x3
        return config

    @staticmethod
    def _offsets(padding: str) -> list[list[int]]:
        """Low-resolution row offset read by kernel row d for output row 2a + p: floor((p - pad + d) / 2)."""
        pad = 1 if padding == "same" else 0
        return [[(p - pad + d) // 2 for d in range(3)] for p in (0, 1)]

    def build(self, input_shape):
        n, h, w, c = input_shape
        super().build((n, None if h is None else 2 * h, None if w is None else 2 * w, c))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return super().compute_output_shape((n, None if h is None else 2 * h, None if w is None else 2 * w, c))

    def call(self, x):
        if activation := _kernel_activation(self, "upconv", x):
            from vaelab.kernels import ops as kernel_ops

            return kernel_ops.upsampling_conv(x, *_tensors(self), self.padding, activation)
        c = x.shape[-1]
        size = self._high - self._low + 1
        kernel = ops.einsum("pdo,qeu,decf->oucpqf", self._taps, self._taps, self.kernel)
        kernel = ops.reshape(kernel, (size, size, c, 4 * self.filters))
        if self._low < 0:
            x = ops.pad(x, ((0, 0), (-self._low, self._high), (-self._low, self._high), (0, 0)))
        y = ops.conv(x, kernel, padding="valid")  # (n, oh, ow, 4F), phases (p, q) major
        oh, ow = y.shape[1], y.shape[2]
        y = ops.reshape(y, (-1, oh, ow, 2, 2, self.filters))
        y = ops.reshape(ops.transpose(y, (0, 1, 3, 2, 4, 5)), (-1, 2 * oh, 2 * ow, self.filters))
        return self.activation(y + self.bias)


class _Stride2Same3x3:
    """A (transposed) convolution whose 3x3 kernel, stride 2 and "same" padding are fixed by the layer, and so left
    out of its configuration."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(filters, (3, 3), strides=2, padding="same", **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["kernel_size"], config["strides"], config["padding"]
        return config


@keras.saving.register_keras_serializable(package="vaelab")
class HalvingConv2D(_Stride2Same3x3, layers.Conv2D):
    """Conv2D(F, (3, 3), strides=2, padding="same"): the convnet's downsampling, computed as a stride-1 convolution.

    Output pixel i reads padded input pixels 2i, 2i + 1, 2i + 2 (Keras pads a stride-2 "same" convolution with
    floor(t/2) pixels before and the rest after, t = 2(out - 1) + 3 - size). Cutting the padded input into its
    2x2 phases (space to depth: 4C channels at half the size), pixel i reads phases (0, 1) of block i and phase 0
    of block i + 1: a 2x2 stride-1 convolution whose kernel holds the 3x3 taps, zeros where no tap falls. The
    same sums in another order, 16/9 of the multiplications; XLA's CPU convolutions run a stride-1 one several
    times faster than a strided one, and its gradient too (benchmarks/README.md).
    """

    def call(self, x):
        _, h, w, c = x.shape
        oh, ow = -(-h // 2), -(-w // 2)
        top, left = (2 * (oh - 1) + 3 - h) // 2, (2 * (ow - 1) + 3 - w) // 2
        x = ops.pad(x, ((0, 0), (top, 2 * (oh + 1) - h - top), (left, 2 * (ow + 1) - w - left), (0, 0)))
        x = ops.reshape(ops.transpose(ops.reshape(x, (-1, oh + 1, 2, ow + 1, 2, c)), (0, 1, 3, 2, 4, 5)),
                        (-1, oh + 1, ow + 1, 4 * c))  # fmt: skip
        # kernel2[t, u, (p, q, c), f] = kernel[2t + p, 2u + q, c, f], zero for the fourth row and column
        kernel = ops.reshape(ops.pad(self.kernel, ((0, 1), (0, 1), (0, 0), (0, 0))), (2, 2, 2, 2, c, self.filters))
        kernel = ops.reshape(ops.transpose(kernel, (0, 2, 1, 3, 4, 5)), (2, 2, 4 * c, self.filters))
        return self.activation(ops.conv(x, kernel, padding="valid") + self.bias)


@keras.saving.register_keras_serializable(package="vaelab")
class DoublingConv2DTranspose(_Stride2Same3x3, layers.Conv2DTranspose):
    """Conv2DTranspose(F, (3, 3), strides=2, padding="same"): the convnet's upsampling, computed at low resolution.

    Keras' stride-2 "same" transposed convolution adds input pixel m times kernel tap d to output pixel 2m + d
    (then keeps 2 x size pixels). So output 2m + q gets tap q from input m and tap q + 2 from input m - 1: each
    of the four output phases (q, r) is a 2x2 convolution of the input padded by one pixel before, all four as
    one stride-1 convolution with 4F channels, then interleaved (depth to space), as `UpSamplingConv2D` does.
    """

    def call(self, x):
        _, h, w, c = x.shape
        x = ops.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))
        # Keras keeps the kernel as (kh, kw, F, C). kernel2[t, u, c, (q, r, f)] = kernel[q + 2(1 - t), r + 2(1 - u),
        # f, c], zero for the fourth row and column (tap 3 does not exist).
        kernel = ops.pad(ops.transpose(self.kernel, (0, 1, 3, 2)), ((0, 1), (0, 1), (0, 0), (0, 0)))
        kernel = ops.reshape(kernel, (2, 2, 2, 2, c, self.filters))[::-1, :, ::-1]  # (t, q, u, r, c, f)
        kernel = ops.reshape(ops.transpose(kernel, (0, 2, 4, 1, 3, 5)), (2, 2, c, 4 * self.filters))
        y = ops.reshape(ops.conv(x, kernel, padding="valid"), (-1, h, w, 2, 2, self.filters))
        y = ops.reshape(ops.transpose(y, (0, 1, 3, 2, 4, 5)), (-1, 2 * h, 2 * w, self.filters))
        return self.activation(y + self.bias)
