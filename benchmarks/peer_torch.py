"""The peer: the same networks written in plain PyTorch (eager), trained the same way.

Batch 100, RMSprop (Keras' defaults: lr 1e-3, rho 0.9, eps 1e-7), loss = summed binary cross-entropy
+ analytic KL, the test set evaluated after every epoch. Used by train_speed.py; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    def __init__(self, latent_dim=2, hidden=256):
        super().__init__()
        self.h, self.z_mean, self.z_log_var = (
            nn.Linear(784, hidden),
            nn.Linear(hidden, latent_dim),
            nn.Linear(hidden, latent_dim),
        )
        self.dec_h, self.dec_mean = nn.Linear(latent_dim, hidden), nn.Linear(hidden, 784)

    def encode(self, x):
        h = F.relu(self.h(x.flatten(1)))
        return self.z_mean(h), self.z_log_var(h)

    def decode(self, z):
        return torch.sigmoid(self.dec_mean(F.relu(self.dec_h(z)))).view(-1, 1, 28, 28)


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


def loss_fn(model, x):
    z_mean, z_log_var = model.encode(x)
    z = z_mean + torch.exp(0.5 * z_log_var) * torch.randn_like(z_mean)
    x_hat = model.decode(z).clamp(1e-7, 1 - 1e-7)
    reconstruction = F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).sum(1)
    kl = -0.5 * torch.sum(1 + z_log_var - z_mean**2 - z_log_var.exp(), dim=1)
    return (reconstruction + kl).mean()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", choices=["mlp", "conv"], required=True)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    from vaelab.data import fetch_mnist, scale_pixels

    data = fetch_mnist(log=lambda msg: None)
    x_train = torch.from_numpy(scale_pixels(data.x_train)).permute(0, 3, 1, 2).contiguous()
    x_test = torch.from_numpy(scale_pixels(data.x_test)).permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(0)
    model = MLP() if args.arch == "mlp" else Conv()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    seconds, test_loss = [], float("nan")
    for _ in range(args.epochs):
        started = time.perf_counter()
        model.train()
        for batch in torch.randperm(len(x_train)).split(100):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, x_train[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            test_loss = float(np.mean([loss_fn(model, x_test[i : i + 100]).item() for i in range(0, len(x_test), 100)]))
        seconds.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "backend": f"plain PyTorch {torch.__version__} eager",
                "seconds": seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "test_loss": test_loss,
            }
        )
    )


if __name__ == "__main__":
    main()
