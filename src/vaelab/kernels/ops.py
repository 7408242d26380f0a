"""The kernels as differentiable JAX functions: FFI calls wrapped in `jax.custom_vjp`.

Each function checks shapes and dtypes first and raises ValueError (a wrong buffer must never reach
the C++ code), and needs `vaelab.kernels.status().in_use`. Convolutions: shapes NHWC, kernels
(3, 3, C, F); the dense layer: x (M, K), kernel (K, N), as Keras' Dense keeps it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vaelab import kernels

ACTIVATIONS = {"linear": 0, "relu": 1, "sigmoid": 2}  # conv_math.h's Activation
DENSE_ACTIVATIONS = {**ACTIVATIONS, "tanh": 3}  # dense_math.h's
PADDINGS = {"valid": 0, "same": 1}  # upconv's zero border around the upsampled image


def conv_max_pool(x, kernel, bias, activation: str = "relu"):
    """act(max over each 2x2 window of conv3x3_same(x, kernel) + bias): (n, h, w, C) -> (n, h/2, w/2, F)."""
    _check("conv_pool", x, kernel, bias, activation, ("linear", "relu"))
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"conv_max_pool needs an even height and width, got {x.shape[1]}x{x.shape[2]}")
    return _conv_pool(x, kernel, bias, ACTIVATIONS[activation])


def conv(x, kernel, bias, activation: str = "relu"):
    """act(conv3x3_same(x, kernel) + bias): (n, h, w, C) -> (n, h, w, F)."""
    _check("conv", x, kernel, bias, activation, tuple(ACTIVATIONS))
    return _conv(x, kernel, bias, ACTIVATIONS[activation])


def upsampling_conv(x, kernel, bias, padding: str = "same", activation: str = "relu"):
    """act(conv3x3_padding(upsample2x_nearest(x), kernel) + bias): (n, h, w, C) -> (n, 2h[-2], 2w[-2], F)."""
    _check("upconv", x, kernel, bias, activation, tuple(ACTIVATIONS))
    if padding not in PADDINGS:
        raise ValueError(f"upsampling_conv: padding must be 'same' or 'valid', got {padding!r}")
    if padding == "valid" and min(x.shape[1], x.shape[2]) < 2:
        raise ValueError(f"upsampling_conv with 'valid' padding needs at least 2x2 pixels, got {x.shape[1:3]}")
    return _upconv(x, kernel, bias, ACTIVATIONS[activation], PADDINGS[padding])


def _check(kind: str, x, kernel, bias, activation: str, activations: tuple[str, ...]) -> None:
    if activation not in activations:
        raise ValueError(f"{kind} kernel: activation must be one of {', '.join(activations)}, got {activation!r}")
    for name, value, rank in (("input", x, 4), ("kernel", kernel, 4), ("bias", bias, 1)):
        if getattr(value, "dtype", None) != jnp.float32 or len(getattr(value, "shape", ())) != rank:
            raise ValueError(
                f"{kind} kernel: the {name} must be a float32 array of rank {rank}, got "
                f"{getattr(value, 'dtype', type(value).__name__)} {getattr(value, 'shape', '')}"
            )
    if None in x.shape or min(x.shape[1:]) < 1:
        raise ValueError(f"{kind} kernel: the input needs a known, non-empty shape, got {x.shape}")
    c, f = x.shape[-1], bias.shape[0]
    if tuple(kernel.shape) != (3, 3, c, f):
        raise ValueError(
            f"{kind} kernel: kernel shape {kernel.shape} does not fit input {x.shape} and bias {bias.shape}"
        )
    if not kernels.runs(kind, (c, f)):
        raise ValueError(f"{kind} kernel: not available for {c} -> {f} channels here ({kernels.status()})")


def _ffi(name: str, outputs, *args, **attributes):
    """One FFI call; `outputs` as (shape, dtype) pairs; attributes are int32 scalars."""
    shapes = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in outputs]
    attributes = {key: np.int32(value) for key, value in attributes.items()}
    return jax.ffi.ffi_call(name, shapes)(*args, **attributes)


# ---- conv_pool ----------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_pool(x, kernel, bias, act):
    return _conv_pool_forward(x, kernel, bias, act)[0]


def _conv_pool_forward(x, kernel, bias, act):
    n, h, w, _ = x.shape
    shape = (n, h // 2, w // 2, kernel.shape[3])
    return _ffi("vaelab_conv_pool_forward", [(shape, jnp.float32), (shape, jnp.int8)], x, kernel, bias, activation=act)


def _conv_pool_fwd(x, kernel, bias, act):
    y, arg = _conv_pool_forward(x, kernel, bias, act)
    return y, (x, kernel, y, arg)


def _conv_pool_bwd(act, residuals, g):
    x, kernel, y, arg = residuals
    weights = [(kernel.shape, jnp.float32), ((kernel.shape[3],), jnp.float32)]
    dkernel, dbias = _ffi("vaelab_conv_pool_weights", weights, x, y, arg, g, activation=act)
    (dx,) = _ffi("vaelab_conv_pool_input", [(x.shape, jnp.float32)], kernel, y, arg, g, activation=act)
    return dx, dkernel, dbias


_conv_pool.defvjp(_conv_pool_fwd, _conv_pool_bwd)


# ---- conv ---------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv(x, kernel, bias, act):
    return _conv_fwd(x, kernel, bias, act)[0]


def _conv_fwd(x, kernel, bias, act):
    (y,) = _ffi(
        "vaelab_conv_forward", [((*x.shape[:3], kernel.shape[3]), jnp.float32)], x, kernel, bias, activation=act
    )
    return y, (x, kernel, y)


def _conv_bwd(act, residuals, g):
    x, kernel, y = residuals
    weights = [(kernel.shape, jnp.float32), ((kernel.shape[3],), jnp.float32)]
    dkernel, dbias = _ffi("vaelab_conv_weights", weights, x, y, g, activation=act)
    (dx,) = _ffi("vaelab_conv_input", [(x.shape, jnp.float32)], kernel, y, g, activation=act)
    return dx, dkernel, dbias


_conv.defvjp(_conv_fwd, _conv_bwd)


# ---- upconv -------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _upconv(x, kernel, bias, act, pad):
    return _upconv_fwd(x, kernel, bias, act, pad)[0]


def _upconv_fwd(x, kernel, bias, act, pad):
    n, h, w, _ = x.shape
    shape = (n, 2 * h + 2 * pad - 2, 2 * w + 2 * pad - 2, kernel.shape[3])
    (y,) = _ffi("vaelab_upconv_forward", [(shape, jnp.float32)], x, kernel, bias, activation=act, pad=pad)
    return y, (x, kernel, y)


def _upconv_bwd(act, pad, residuals, g):
    x, kernel, y = residuals
    weights = [(kernel.shape, jnp.float32), ((kernel.shape[3],), jnp.float32)]
    dkernel, dbias = _ffi("vaelab_upconv_weights", weights, x, y, g, activation=act, pad=pad)
    (dx,) = _ffi("vaelab_upconv_input", [(x.shape, jnp.float32)], kernel, y, g, activation=act, pad=pad)
    return dx, dkernel, dbias


_upconv.defvjp(_upconv_fwd, _upconv_bwd)


# ---- dense --------------------------------------------------------------------------------------


def dense(x, kernel, bias, activation: str = "linear"):
    """act(x @ kernel + bias): (M, K) -> (M, N)."""
    if activation not in DENSE_ACTIVATIONS:
        raise ValueError(f"dense kernel: activation must be one of {', '.join(DENSE_ACTIVATIONS)}, got {activation!r}")
    for name, value, rank in (("input", x, 2), ("kernel", kernel, 2), ("bias", bias, 1)):
        if getattr(value, "dtype", None) != jnp.float32 or len(getattr(value, "shape", ())) != rank:
            raise ValueError(
                f"dense kernel: the {name} must be a float32 array of rank {rank}, got "
                f"{getattr(value, 'dtype', type(value).__name__)} {getattr(value, 'shape', '')}"
            )
    if None in x.shape or min(x.shape) < 1 or min(kernel.shape) < 1:
        raise ValueError(
            f"dense kernel: the input and kernel need known, non-empty shapes, got {x.shape}, {kernel.shape}"
        )
    if kernel.shape[0] != x.shape[1] or bias.shape[0] != kernel.shape[1]:
        raise ValueError(
            f"dense kernel: kernel shape {kernel.shape} does not fit input {x.shape} and bias {bias.shape}"
        )
    if not kernels.dense_runs():
        raise ValueError(f"dense kernel: not available here ({kernels.status()})")
    return _dense(x, kernel, bias, DENSE_ACTIVATIONS[activation])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _dense(x, kernel, bias, act):
    return _dense_fwd(x, kernel, bias, act)[0]


def _dense_fwd(x, kernel, bias, act):
    (y,) = _ffi("vaelab_dense_forward", [((x.shape[0], kernel.shape[1]), jnp.float32)], x, kernel, bias, activation=act)
    return y, (x, kernel, y)


def _dense_bwd(act, residuals, g):
    x, kernel, y = residuals
    weights = [(kernel.shape, jnp.float32), ((kernel.shape[1],), jnp.float32)]
    dkernel, dbias = _ffi("vaelab_dense_weights", weights, x, y, g, activation=act)
    (dx,) = _ffi("vaelab_dense_input", [(x.shape, jnp.float32)], kernel, y, g, activation=act)
    return dx, dkernel, dbias


_dense.defvjp(_dense_fwd, _dense_bwd)


# ---- the optimizers' updates --------------------------------------------------------------------


def adam_update(variable, m, v, gradient, scalars):
    """Keras' Adam update of one variable in one pass: (variable, m, v) after it. `scalars`: float32
    [alpha, 1 - beta_1, 1 - beta_2, epsilon] (optimizer_math.h). The outputs reuse the inputs' buffers where XLA can."""
    _check_update("adam", (variable, m, v, gradient), scalars)
    shapes = [(variable.shape, jnp.float32)] * 3
    return _ffi_aliased("vaelab_adam_update", shapes, {0: 0, 1: 1, 2: 2}, variable, m, v, gradient, scalars)


def rmsprop_update(variable, velocity, gradient, scalars):
    """Keras' RMSprop update (no momentum, not centred) of one variable: (variable, velocity) after it. `scalars`:
    float32 [learning rate, rho, 1 - rho, epsilon]."""
    _check_update("rmsprop", (variable, velocity, gradient), scalars)
    shapes = [(variable.shape, jnp.float32)] * 2
    return _ffi_aliased("vaelab_rmsprop_update", shapes, {0: 0, 1: 1}, variable, velocity, gradient, scalars)


def _check_update(kind: str, arrays, scalars) -> None:
    shape = tuple(arrays[0].shape)
    for value in arrays:
        if getattr(value, "dtype", None) != jnp.float32 or tuple(value.shape) != shape:
            raise ValueError(f"{kind} kernel: the variable, its slots and its gradient must be float32 of one shape")
    if getattr(scalars, "dtype", None) != jnp.float32 or tuple(scalars.shape) != (4,):
        raise ValueError(f"{kind} kernel: the scalars must be a float32 array of 4")
    if not kernels.dense_runs():
        raise ValueError(f"{kind} kernel: not available here ({kernels.status()})")


def _ffi_aliased(name: str, outputs, aliases: dict[int, int], *args):
    shapes = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in outputs]
    return jax.ffi.ffi_call(name, shapes, input_output_aliases=aliases)(*args)


# ---- a dense VAE's whole training step ----------------------------------------------------------

OBJECTIVES = {"elbo": 0, "iwae": 1}  # vae_step.h's
OPTIMIZERS = {"adam": 0, "rmsprop": 1}


def vae_step(x, eps, scalars, parameters, slots, *, activation: str, samples: int, objective: str, optimizer: str):
    """One training step of a dense VAE (vae_step.h): (reconstruction, kl, objective per image, parameters after,
    slots after). x (B, D) the images scored; eps (B K, L); scalars float32 [KL weight, the optimizer's 4]; parameters
    the 2 (2 n + 3) kernels and biases in the network's order; slots Adam's m's then v's, or RMSprop's velocities.
    Each parameter and slot is updated in place where XLA can (its result aliases its argument)."""
    arrays = [x, eps, scalars, *parameters, *slots]
    if any(getattr(a, "dtype", None) != jnp.float32 for a in arrays):
        raise ValueError("vae step kernel: every array must be float32")
    if len(x.shape) != 2 or len(eps.shape) != 2 or tuple(scalars.shape) != (5,) or len(parameters) % 4 != 2:
        raise ValueError("vae step kernel: x and eps must be matrices, 5 scalars, 2 (2 n + 3) parameters")
    per = 2 if optimizer == "adam" else 1
    if len(slots) != per * len(parameters) or any(
        s.shape != p.shape for s, p in zip(slots, list(parameters) * per, strict=True)
    ):
        raise ValueError("vae step kernel: the slots must match the parameters")
    if activation not in DENSE_ACTIVATIONS or objective not in OBJECTIVES or optimizer not in OPTIMIZERS:
        raise ValueError(
            f"vae step kernel: unknown activation, objective or optimizer ({activation}, {objective}, {optimizer})"
        )
    if not kernels.status().in_use:
        raise ValueError(f"vae step kernel: not available here ({kernels.status()})")
    batch = x.shape[0]
    shapes = [jax.ShapeDtypeStruct((batch,), jnp.float32)] * 3 + [
        jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (*parameters, *slots)
    ]
    aliases = {3 + t: 3 + t for t in range(len(parameters) + len(slots))}
    results = jax.ffi.ffi_call("vaelab_vae_step", shapes, input_output_aliases=aliases)(
        *arrays,
        activation=np.int32(DENSE_ACTIVATIONS[activation]),
        hidden=np.int32((len(parameters) - 6) // 4),
        samples=np.int32(samples),
        objective=np.int32(OBJECTIVES[objective]),
        optimizer=np.int32(OPTIMIZERS[optimizer]),
    )
    count = len(parameters)
    return results[0], results[1], results[2], list(results[3 : 3 + count]), list(results[3 + count :])
