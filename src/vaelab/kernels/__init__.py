"""Compiled C++ kernels for the ConvNet's layers and the dense layers, called through JAX's FFI.

The layers of `vaelab.models.layers` (and the decoder's plain 3x3 convolution) compute, on the JAX backend
on a CPU, with hand-written loops instead of XLA's convolutions, which are slow for the 1-16
channels of this network. Same layers, same variables: the kernels are another implementation of
the `keras.ops` formulation, which stays the reference (tests/test_kernels.py) and the fallback
(other backends, other devices, no compiler, `VAELAB_KERNELS=0`, channel counts not compiled in).

What runs, in C++ (conv_math.h, conv_pool.h, conv_layers.h; the batch's chunks in conv_chunks.h; the
FFI handlers in conv_ffi.cc), per image:
- conv_pool: y = act(max over each 2x2 window of conv3x3_same(x, k) + b); it keeps, per output
  value, which of the window's four pixels was the maximum (int8), and the gradient flows to that
  pixel only (the first maximum on ties, as Keras' MaxPooling2D).
- conv: y = act(conv3x3_same(x, k) + b).
- upconv: y = act(conv3x3(upsample2x(x), k) + b), "same" or "valid", at the low resolution: each
  of the four output phases is a 2x2 convolution of x with summed taps of k (`UpSamplingConv2D`).
Each has a backward pass for the kernel and bias and a separate one for the input, so that jit
drops the input gradient where nobody uses it (the first layer's input is the data). The
backward passes keep only the layer's output (for the activation's slope) and the pooling's
argmax, besides the input and kernel. A batch is split into chunks of whole images that run on
XLA's CPU thread pool; weight gradients are summed per chunk and the chunks added in a fixed order,
so training repeats exactly.

With `VAELAB_DENSE_KERNELS=1` (opt-in: see `DENSE_SWITCH`), the dense layers (`vaelab.models.layers.Dense`,
every Dense of the networks unless `--implementation keras`) run y = act(x w + b), act linear, relu,
sigmoid or tanh, any widths, as register-tiled matrix products with the activation fused
(dense_math.h, handlers in dense_ffi.h): a forward pass, one for the kernel and bias, one for the
input, as above. Each pass is cut into column strips that run on XLA's pool when the layer is large
enough to pay for waking a thread; each output is summed by one tile in a fixed order, so the split
does not change the numbers. So do Adam's and RMSprop's element-wise updates (`vaelab.training.optimizers`,
optimizer_math.h): one vectorised pass per variable.

With `VAELAB_FUSED_STEP=1` (opt-in: `vaelab.training.fused_step`), a dense VAE's or IWAE's whole training step is one
call
(vae_step.h, handler vae_step_ffi.h): forward, clipped-Bernoulli loss, backward and the Adam or RMSprop update of
every parameter in place, on the random numbers JAX drew.

`status()` says whether the kernels are in use here and, if not, why.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

from vaelab.kernels import _build

SWITCH = "VAELAB_KERNELS"  # "0" turns the kernels off: every layer runs its keras.ops formulation
# "1" turns the dense layers' and optimizers' kernels on (off by default: on the loaded 2-core machine they measured
# no faster than XLA's own step, docs/performance-dense.md); VAELAB_KERNELS=0 turns them off with the rest.
DENSE_SWITCH = "VAELAB_DENSE_KERNELS"
KINDS = _build.KINDS


@dataclass(frozen=True)
class Status:
    """Whether the compiled kernels run the ConvNet's layers in this process; if not, why not."""

    in_use: bool
    detail: str  # in use: the library and compiler; otherwise the reason, in one line
    supported: dict[str, frozenset[tuple[int, int]]]  # kind -> (input, output) channel pairs compiled in

    def __str__(self) -> str:
        if self.in_use:
            return f"compiled kernels: in use ({self.detail})"
        return f"compiled kernels: not in use ({self.detail}); the ConvNet runs on its keras.ops layers"


_lock = threading.Lock()
_loaded: Status | None = None


def status() -> Status:
    """The kernels' status in this process; builds (once, cached on disk) and registers them on first call."""
    if os.environ.get(SWITCH, "1") == "0":
        return Status(False, f"turned off by {SWITCH}=0", {})
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def runs(kind: str, channels: tuple[int, int]) -> bool:
    """Whether a layer of `kind` with these (input, output) channels runs on the kernels now."""
    current = status()
    return current.in_use and tuple(channels) in current.supported.get(kind, ())


def dense_runs() -> bool:
    """Whether the dense layers and the optimizers' updates run on the kernels now (`DENSE_SWITCH` set to 1, the
    kernels in use; any widths: the library computes every shape)."""
    if os.environ.get(DENSE_SWITCH, "0") != "1":
        return False
    current = status()
    return current.in_use and "dense" in current.supported


def _load() -> Status:
    import keras

    if keras.backend.backend() != "jax":
        return Status(False, f"the Keras backend is {keras.backend.backend()}; the kernels need JAX", {})
    import jax

    if jax.default_backend() != "cpu":
        return Status(False, f"JAX computes on {jax.default_backend()}; the kernels are for the CPU", {})
    announced = []  # compiling takes a while: say so, and finish the same line with the outcome

    def announce(text: str) -> None:
        print(text, end=" ... ", file=sys.stderr, flush=True)
        announced.append(time.perf_counter())

    try:
        build = _build.plan()
        path, _ = _build.ensure_built(build, announce=announce)
        library = _build.load(path)
        supported = _parse_supported(library.vaelab_kernels_supported)
        for name in _build.HANDLERS:
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
    except (_build.BuildError, AttributeError) as err:
        failed = Status(False, str(err), {})
        print(f"failed: {failed}" if announced else f"vaelab: {failed}", file=sys.stderr)  # once: _load runs once
        return failed
    if announced:
        print(f"done ({time.perf_counter() - announced[0]:.0f} s)", file=sys.stderr)
    return Status(True, f"{path}, {build.compiler_version}", supported)


def _parse_supported(function) -> dict[str, frozenset[tuple[int, int]]]:
    """Parses the library's "kind CxF CxF;kind ..." string."""
    import ctypes

    function.restype = ctypes.c_char_p
    table = {}
    for entry in function().decode().split(";"):
        kind, *pairs = entry.split()
        table[kind] = frozenset(tuple(int(v) for v in pair.split("x")) for pair in pairs)
    return table
