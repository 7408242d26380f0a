"""The peer: the same networks written in plain PyTorch (eager, or `--compile`), trained the same way.

Batch 100, RMSprop (Keras' defaults: lr 1e-3, rho 0.9, eps 1e-7), loss = -log p(x|z) summed over the
pixels + analytic KL, the test set evaluated after every epoch. Used by train_speed.py; prints one JSON line.

- `mlp`, `conv`: the exercise's networks on MNIST, Bernoulli pixels (binary cross-entropy), PyTorch's
  default initialisation.
- `convnet`: vaelab's `convnet` preset (16, 32, 64 filters) on 32x32x3 images (`--dataset shapes`), with
  the discretised logistic likelihood and its one learned log-scale (vaelab.models.likelihoods), Glorot-uniform
  kernels and zero biases as Keras initialises them. Keras' "same" padding is reproduced exactly: a
  stride-2 Conv2D pads 0 pixels before and 1 after (F.pad, then an unpadded Conv2d); a stride-2
  Conv2DTranspose puts input pixel i's kernel at outputs 2i..2i+2, which is ConvTranspose2d(padding=0)
  with its last row and column cropped (the usual padding=1, output_padding=1 gives the same size but
  shifts the map by one pixel). The images stay uint8 and become floats one batch at a time.
  `check_peer_torch.py` copies the weights of vaelab's Keras model into this one and checks that both
  compute the same encoder outputs, decoded images and log-likelihood.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LEVELS = 255  # vaelab.models.likelihoods: 8-bit pixels are k / 255
MIN_LOG_SCALE = -math.log(256.0)


def bernoulli_log_likelihood(x, x_hat):
    x_hat = x_hat.clamp(1e-7, 1 - 1e-7)
    return -F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).sum(1)


def logistic_log_likelihood(x, mean, log_scale):
    """vaelab.models.likelihoods' discretised logistic, per image: the logistic(mean, s) mass of each pixel's bin."""
    half_bin = 0.5 / LEVELS
    log_scale = log_scale.clamp(min=MIN_LOG_SCALE)
    inverse_scale = torch.exp(-log_scale)
    centred = x - mean
    upper = inverse_scale * (centred + half_bin)
    lower = inverse_scale * (centred - half_bin)
    log_cdf_upper = upper - F.softplus(upper)
    log_survival_lower = -F.softplus(lower)
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    middle = inverse_scale * centred
    log_density = middle - log_scale - 2.0 * F.softplus(middle) - math.log(LEVELS)
    inner = torch.where(mass > 1e-5, torch.log(mass.clamp(min=1e-12)), log_density)
    per_pixel = torch.where(x < half_bin, log_cdf_upper, torch.where(x > 1.0 - half_bin, log_survival_lower, inner))
    return per_pixel.flatten(1).sum(1)


class MLP(nn.Module):
    """vaelab's dense network: hidden widths `hidden` (the decoder mirrored), `activation` tanh or relu."""

    def __init__(self, latent_dim=2, hidden=(256,), activation="relu"):
        super().__init__()
        widths = (784, *hidden)
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.z_mean, self.z_log_var = nn.Linear(widths[-1], latent_dim), nn.Linear(widths[-1], latent_dim)
        back = (latent_dim, *hidden[::-1])
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(back))
        self.dec_mean = nn.Linear(back[-1], 784)
        self.act = torch.tanh if activation == "tanh" else F.relu

    def encode(self, x):
        h = x.flatten(1)
        for layer in self.encoder:
            h = self.act(layer(h))
        return self.z_mean(h), self.z_log_var(h)

    def decode(self, z):
        for layer in self.decoder:
            z = self.act(layer(z))
        return torch.sigmoid(self.dec_mean(z)).view(-1, 1, 28, 28)

    def log_likelihood(self, x, x_hat):
        return bernoulli_log_likelihood(x, x_hat)


class Conv(nn.Module):
    def __init__(self, latent_dim=2, hidden=16):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)
        self.h, self.z_mean, self.z_log_var = (
            nn.Linear(392, hidden),
            nn.Linear(hidden, latent_dim),
            nn.Linear(hidden, latent_dim),
        )
        self.dec_h, self.dec_up = nn.Linear(latent_dim, hidden), nn.Linear(hidden, 512)
        self.d1, self.d2, self.d3 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 3), nn.Conv2d(16, 1, 3, padding=1)

    def encode(self, x):
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        h = F.relu(self.h(h.flatten(1)))
        return self.z_mean(h), self.z_log_var(h)

    def decode(self, z):
        d = F.relu(self.dec_up(F.relu(self.dec_h(z)))).view(-1, 8, 8, 8)
        d = F.interpolate(F.relu(self.d1(d)), scale_factor=2)
        d = F.interpolate(F.relu(self.d2(d)), scale_factor=2)
        return torch.sigmoid(self.d3(d))

    def log_likelihood(self, x, x_hat):
        return bernoulli_log_likelihood(x, x_hat)


class ConvNet(nn.Module):
    """vaelab's convnet (model.py's _convnet_encoder and _convnet_decoder) for (C, H, W) images, H and W
    divisible by 2 ** len(filters), the images flattened and reshaped in PyTorch's (C, H, W) order."""

    def __init__(self, shape=(3, 32, 32), filters=(16, 32, 64), latent_dim=2, hidden=256):
        super().__init__()
        channels, height, width = shape
        self.side = (height // 2 ** len(filters), width // 2 ** len(filters))
        flat = self.side[0] * self.side[1] * filters[-1]
        self.encoder_convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, stride=2) for a, b in zip((channels, *filters), filters, strict=False)
        )
        self.h, self.z_mean, self.z_log_var = (
            nn.Linear(flat, hidden),
            nn.Linear(hidden, latent_dim),
            nn.Linear(hidden, latent_dim),
        )
        self.dec_h, self.dec_up = nn.Linear(latent_dim, hidden), nn.Linear(hidden, flat)
        widths = (*filters[::-1][1:], filters[0])
        self.decoder_convs = nn.ModuleList(
            nn.ConvTranspose2d(a, b, 3, stride=2) for a, b in zip(filters[::-1], widths, strict=True)
        )
        self.dec_mean = nn.Conv2d(filters[0], channels, 3, padding=1)
        self.log_scale = nn.Parameter(torch.zeros(()))  # LogScale, "global": one number for all pixels
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.init.xavier_uniform_(module.weight)  # Keras' glorot_uniform (the same fans for convolutions)
                nn.init.zeros_(module.bias)

    def encode(self, x):
        for conv in self.encoder_convs:
            x = F.relu(conv(F.pad(x, (0, 1, 0, 1))))  # Keras "same", stride 2: 0 before, 1 after
        h = F.relu(self.h(x.flatten(1)))
        return self.z_mean(h), self.z_log_var(h)

    def decode(self, z):
        d = F.relu(self.dec_up(F.relu(self.dec_h(z)))).view(-1, self.decoder_convs[0].in_channels, *self.side)
        for conv in self.decoder_convs:
            d = F.relu(conv(d)[:, :, :-1, :-1])  # 2n + 1 -> Keras' 2n: the last row and column cropped
        return torch.sigmoid(self.dec_mean(d))

    def log_likelihood(self, x, x_hat):
        return logistic_log_likelihood(x, x_hat, self.log_scale)


def loss_fn(model, x):
    z_mean, z_log_var = model.encode(x)
    z = z_mean + torch.exp(0.5 * z_log_var) * torch.randn_like(z_mean)
    reconstruction = -model.log_likelihood(x, model.decode(z))
    kl = -0.5 * torch.sum(1 + z_log_var - z_mean**2 - z_log_var.exp(), dim=1)
    return (reconstruction + kl).mean()


def iwae_loss_fn(model, x, k):
    """The negative importance-weighted bound with k codes per image, the decoder run once on all of them."""
    z_mean, z_log_var = model.encode(x)
    std = torch.exp(0.5 * z_log_var)
    eps = torch.randn((x.shape[0], k, z_mean.shape[1]), device=x.device)
    z = z_mean[:, None] + std[:, None] * eps
    x_hat = model.decode(z.flatten(0, 1)).view(x.shape[0], k, *x.shape[1:])
    log_px = -F.binary_cross_entropy(x_hat.clamp(1e-7, 1 - 1e-7), x[:, None].expand_as(x_hat), reduction="none")
    log_w = log_px.flatten(2).sum(2) - 0.5 * (z**2).sum(2) + 0.5 * (eps**2 + z_log_var[:, None]).sum(2)
    return -(torch.logsumexp(log_w, 1) - math.log(k)).mean()


def as_float(x):
    """A batch as floats in [0, 1]: uint8 images scaled as vaelab.data.scale_pixels does."""
    return x if x.is_floating_point() else x.float().div_(255.0)


def load(arch: str, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) images in (N, C, H, W): MNIST as floats (as the MNIST rows always did), others uint8."""
    if arch in ("mlp", "conv"):
        from vaelab.data import fetch_mnist, scale_pixels

        data = fetch_mnist(log=lambda msg: None)
        return tuple(
            torch.from_numpy(scale_pixels(x)).permute(0, 3, 1, 2).contiguous() for x in (data.x_train, data.x_test)
        )
    from vaelab.data import load_dataset

    data = load_dataset(dataset, log=lambda msg: None)
    return tuple(torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous() for x in (data.x_train, data.x_test))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", choices=["mlp", "conv", "convnet"], required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--dataset", default="shapes", help="convnet's data: a built-in colour dataset")
    parser.add_argument("--compile", action="store_true", help="the loss and its gradient through torch.compile")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: the model and the whole dataset on the GPU")
    parser.add_argument("--hidden", type=int, nargs="+", default=[256], help="mlp: hidden widths")
    parser.add_argument("--latent-dim", type=int, default=2, help="mlp")
    parser.add_argument("--activation", default="relu", choices=["relu", "tanh"], help="mlp")
    parser.add_argument("--optimizer", default="rmsprop", choices=["rmsprop", "adam"])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--binarize", action="store_true", help="draw binary pixels from the grey levels each step")
    parser.add_argument("--k", type=int, default=0, help="mlp: the iwae's bound with K codes per image (0: the ELBO)")
    args = parser.parse_args()

    device = torch.device(args.device)
    x_train, x_test = (x.to(device) for x in load(args.arch, args.dataset))
    torch.manual_seed(0)
    builders = {"mlp": lambda: MLP(args.latent_dim, tuple(args.hidden), args.activation), "conv": Conv}
    model = builders.get(args.arch, lambda: ConvNet(tuple(x_train.shape[1:])))().to(device)
    loss = (lambda m, x: iwae_loss_fn(m, x, args.k)) if args.k else loss_fn
    loss = torch.compile(loss) if args.compile else loss
    if args.optimizer == "adam":  # Keras' defaults
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    else:
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    size = args.batch_size
    seconds, test_loss = [], float("nan")
    for _ in range(args.epochs):
        started = time.perf_counter()
        model.train()
        for batch in torch.randperm(len(x_train), device=device).split(size):
            optimizer.zero_grad(set_to_none=True)
            x = as_float(x_train[batch])
            loss(model, torch.bernoulli(x) if args.binarize else x).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            test_loss = float(
                np.mean([loss(model, as_float(x_test[i : i + size])).item() for i in range(0, len(x_test), size)])
            )
        seconds.append(time.perf_counter() - started)
    how = "torch.compile" if args.compile else "eager"
    print(
        json.dumps(
            {
                "backend": f"plain PyTorch {torch.__version__} {how}",
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "seconds": seconds,
                "train_images": len(x_train),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "test_loss": test_loss,
            }
        )
    )


if __name__ == "__main__":
    main()
