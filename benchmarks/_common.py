"""Helpers shared by the benchmark scripts: FLOP counts, the machine's peak, peak memory, tables."""

from __future__ import annotations

import resource
import time

import numpy as np

TRAIN_IMAGES = 60000


def forward_flops_per_image(model) -> tuple[int, int]:
    """(forward FLOPs of one image through `model`, those of its first weighted layer), multiply-add = 2.

    A convolution counts every output pixel's full kernel (the border's zero padding included); a transposed
    convolution counts every input pixel's (the stride-2 convolution whose input gradient it is, counted alike).
    """
    total, first = 0, None
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            flops = 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
        elif kind == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            h, w = layer.output.shape[1:3]
            flops = 2 * h * w * kh * kw * cin * cout
        elif kind == "Conv2DTranspose":
            kh, kw, cout, cin = layer.kernel.shape
            h, w = layer.input.shape[1:3]
            flops = 2 * h * w * kh * kw * cin * cout
        else:
            continue
        total += flops
        first = flops if first is None else first
    return total, first or 0


def train_flops_per_epoch(vae, images: int = TRAIN_IMAGES) -> float:
    """FLOPs of one training epoch: forward, weight gradients, input gradients (none for the first layer)."""
    forward, first = forward_flops_per_image(vae)
    return images * (3 * forward - first)


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """float32 matrix-product throughput on this machine (NumPy's BLAS), the 'peak' of the tables."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
