"""Checks that peer_torch.py's ConvNet is vaelab's convnet: Keras' weights copied into it, the same outputs.

    python benchmarks/check_peer_torch.py [--dataset shapes] [--images 100]

Builds vaelab's `convnet` (Keras 3 + JAX, seed 0) for the dataset's images, copies every weight into
peer_torch.ConvNet (kernels transposed to PyTorch's layouts; the dense layers on each side of the 4x4x64
map permuted from Keras' (H, W, C) flattening to PyTorch's (C, H, W)), then compares on the first test
images (every bias set to a random value first, as Keras starts them at 0): z_mean and z_log_var
from the encoder, the decoded images of those z_mean, and the discretised
logistic log-likelihood of the images (at the learned log-scale's initial 0 and at -4, where the bins'
masses are small). It also shows, on a stride-2 Conv2DTranspose alone, that the usual PyTorch recipe
for "same" (padding=1, output_padding=1) has the right size but is shifted by one pixel, while
ConvTranspose2d(padding=0) with the last row and column cropped is not. Prints the largest differences;
exits 1 if one passes `--tolerance`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).parent))

import keras
import numpy as np
import torch
from peer_torch import ConvNet, logistic_log_likelihood

from vaelab.config import make_config
from vaelab.data import load_dataset, scale_pixels
from vaelab.models import build_models
from vaelab.models.likelihoods import log_likelihood


def conv_kernel(k: np.ndarray) -> torch.Tensor:
    """Keras Conv2D (kh, kw, in, out) / Conv2DTranspose (kh, kw, out, in) -> PyTorch (out, in, kh, kw) /
    (in, out, kh, kw): the same transposition for both."""
    return torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))


def copy_weights(vae: keras.Model, net: ConvNet, map_shape: tuple[int, int, int]) -> None:
    """Every weight of vaelab's Keras convnet into `net`; `map_shape` is the encoder's last map (H, W, C)."""
    h, w, c = map_shape

    def layer(name):
        return [np.asarray(v) for v in vae.get_layer(name).get_weights()]

    def dense(module, name, kernel=None, bias=None):
        k, b = layer(name)
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray((k if kernel is None else kernel(k)).T)))
        module.bias.copy_(torch.from_numpy(np.ascontiguousarray(b if bias is None else bias(b))))

    def conv(module, name):
        k, b = layer(name)
        module.weight.copy_(conv_kernel(k))
        module.bias.copy_(torch.from_numpy(b))

    with torch.no_grad():
        for k, module in enumerate(net.encoder_convs, start=1):
            conv(module, f"encoder_conv{k}")
        dense(net.h, "encoder_h", kernel=lambda k: k.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1))
        dense(net.z_mean, "z_mean")
        dense(net.z_log_var, "z_log_var")
        dense(net.dec_h, "decoder_h")
        dense(
            net.dec_up,
            "decoder_upsample",
            kernel=lambda k: k.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(-1, h * w * c),
            bias=lambda b: b.reshape(h, w, c).transpose(2, 0, 1).ravel(),
        )
        for k, module in enumerate(net.decoder_convs, start=1):
            conv(module, f"decoder_conv{k}")
        conv(net.dec_mean, "decoder_mean")
        net.log_scale.copy_(torch.tensor(float(layer("x_log_scale")[0].ravel()[0])))


def random_biases(vae: keras.Model, scale: float = 0.1) -> None:
    """Keras starts its biases at zero, which would leave their copying unchecked: give them random values."""
    rng = np.random.default_rng(2)
    for layer in vae.layers:
        weights = layer.get_weights()
        if len(weights) == 2:  # kernel, bias
            layer.set_weights([weights[0], rng.normal(0.0, scale, weights[1].shape).astype(np.float32)])


def transpose_alignment() -> dict[str, float]:
    """Largest difference from Keras' Conv2DTranspose(3, strides=2, "same") of two PyTorch formulations."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)  # odd and even sides
    keras_layer = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")
    keras_layer.build(x.shape)
    k, b = (np.asarray(v) for v in keras_layer.get_weights())
    b = rng.standard_normal(b.shape).astype(np.float32)
    keras_layer.set_weights([k, b])
    expected = np.asarray(keras_layer(x)).transpose(0, 3, 1, 2)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    out = {}
    for name, padding, output_padding, crop in (
        ("padding=0, cropped", 0, 0, True),
        ("padding=1, output_padding=1", 1, 1, False),
    ):
        layer = torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=padding, output_padding=output_padding)
        with torch.no_grad():
            layer.weight.copy_(conv_kernel(k))
            layer.bias.copy_(torch.from_numpy(b))
            y = layer(xt)
        y = (y[:, :, :-1, :-1] if crop else y).numpy()
        out[name] = float(np.abs(y - expected).max()) if y.shape == expected.shape else float("inf")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest relative difference allowed")
    args = parser.parse_args()

    data = load_dataset(args.dataset, log=lambda msg: None)
    x = scale_pixels(data.x_test[: args.images])
    config = make_config("convnet", dataset=args.dataset).model.for_data(x.shape[1:])
    models = build_models(config, seed=0)
    random_biases(models.vae)
    blocks = len(config.conv_filters)
    map_shape = (x.shape[1] // 2**blocks, x.shape[2] // 2**blocks, config.conv_filters[-1])
    net = ConvNet(
        tuple(x.shape[3:]) + tuple(x.shape[1:3]), config.conv_filters, config.latent_dim, config.intermediate_dim
    )
    copy_weights(models.vae, net, map_shape)

    z_mean, z_log_var = (np.array(t) for t in models.encoder(x))
    decoded = np.array(models.generator(z_mean))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        t_mean, t_log_var = (t.numpy() for t in net.encode(xt))
        t_decoded = net.decode(torch.from_numpy(z_mean)).numpy().transpose(0, 2, 3, 1)
    checks = {
        "z_mean": (t_mean, z_mean),
        "z_log_var": (t_log_var, z_log_var),
        "decoded image": (t_decoded, decoded),
    }
    for log_scale in (0.0, -4.0):
        expected = np.asarray(log_likelihood("logistic", x, decoded, np.full_like(decoded, log_scale)))
        with torch.no_grad():
            got = logistic_log_likelihood(
                xt, torch.from_numpy(decoded.transpose(0, 3, 1, 2).copy()), torch.tensor(log_scale)
            )
        checks[f"log p(x|z), log-scale {log_scale:g}"] = (got.numpy(), expected)

    worst = 0.0
    versions = f"Keras {keras.__version__} + {keras.backend.backend()}, torch {torch.__version__}"
    print(f"{args.images} {args.dataset} test images {x.shape[1:]}; {versions}")
    for name, (got, expected) in checks.items():
        diff = float(np.abs(got - expected).max())
        relative = diff / max(float(np.abs(expected).max()), 1e-30)
        worst = max(worst, relative)
        spread = f"values {float(expected.min()):.4g} to {float(expected.max()):.4g}"
        print(f"{name}: largest difference {diff:.2e} ({relative:.1e} of the largest value; {spread})")
    for name, diff in transpose_alignment().items():
        print(f"Conv2DTranspose 'same' as ConvTranspose2d({name}): largest difference {diff:.2e}")
    if worst > args.tolerance:
        raise SystemExit(f"the networks differ: {worst:.1e} > --tolerance {args.tolerance:g}")


if __name__ == "__main__":
    main()
