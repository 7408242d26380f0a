"""Figures for the analyses. Each `plot_*` draws one figure and returns it; nothing is shown.

Matplotlib's object-oriented API is used (no pyplot), so no GUI backend and no global state.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from matplotlib.ticker import ScalarFormatter

from vaelab._files import write_bytes
from vaelab.analysis.latent import ClassRow, CodeRow, Interpolation, LatentCodes, format_point

DIGIT_COLORS = [to_hex(c) for c in colormaps["tab10"].colors]  # one colour per class, for up to 10 classes
DPI = 100


def class_colors(count: int) -> list[str]:
    """One colour per class: tab10 for up to 10 classes (MNIST's digits), tab20 up to 20, else a hue wheel."""
    if count <= 10:
        return DIGIT_COLORS[:count]
    if count <= 20:
        return [to_hex(c) for c in colormaps["tab20"].colors[:count]]
    return [to_hex(colormaps["hsv"](k / count)) for k in range(count)]


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes; the same figure always gives the same bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def save(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Writes the figure as a PNG, atomically."""
    write_bytes(path, png_bytes(fig))


def plot_latent_map(
    codes: LatentCodes,
    class_names: tuple[str, ...] | None = None,
    *,
    table: list[ClassRow] | None = None,
    interpolation: Interpolation | None = None,
    title: str = "",
    word: str = "digit",
) -> Figure:
    """(c) The test set in the latent plane: one point per image, coloured by class, with a legend.

    `table` marks the class table's images (with 1-sigma ellipses where the variance is learned and
    the plane is z itself); `interpolation` draws the segment of part (e). Without labels
    (`class_names` None) every point has one colour.
    """
    fig = Figure(figsize=(7.5, 6.5))
    ax = fig.add_subplot()
    coords = codes.coords
    colors = class_colors(len(class_names or ()))
    if codes.labels is None or not class_names:
        ax.scatter(coords[:, 0], coords[:, 1], s=3, alpha=0.55, color="#1f77b4", linewidths=0, rasterized=True)
    else:
        for label, name in enumerate(class_names):
            mask = codes.labels == label
            ax.scatter(coords[mask, 0], coords[mask, 1], s=3, alpha=0.55, color=colors[label], label=name,
                       linewidths=0, rasterized=True)  # fmt: skip
    if table:
        points = codes.project(np.array([row.z_mean for row in table]))
        for row, (px, py) in zip(table, points, strict=True):
            if row.sigma is not None and not codes.is_pca and len(row.sigma) == 2:
                ax.add_patch(Ellipse((px, py), 2 * row.sigma[0], 2 * row.sigma[1], fill=False,
                                     edgecolor=colors[row.label], linewidth=1.2))  # fmt: skip
            ax.scatter([px], [py], s=90, color=colors[row.label], edgecolors="black", linewidths=1.2, zorder=3)
            ax.annotate(str(row.label), (px, py), fontsize=8, ha="center", va="center", color="white",
                        fontweight="bold", zorder=4)  # fmt: skip
    if interpolation is not None:
        path = codes.project(interpolation.points)
        ax.plot(path[:, 0], path[:, 1], "-o", color="black", markersize=3.5, linewidth=1.2, zorder=5,
                label=f"path {interpolation.start_name}→{interpolation.end_name}")  # fmt: skip
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(codes.axis_labels[0])
    ax.set_ylabel(codes.axis_labels[1])
    note = " (first two principal components of z_mean)" if codes.is_pca else ""
    ax.set_title((title + "\n" if title else "") + f"test set in the latent space, z_mean{note}", fontsize=10)
    if class_names or interpolation is not None:
        small = 8 if len(class_names or ()) > 10 else None
        legend = ax.legend(title=word if class_names else None, loc="center left", bbox_to_anchor=(1.01, 0.5),
                           markerscale=4, frameon=False, fontsize=small)  # fmt: skip
        for handle in legend.legend_handles:
            handle.set_alpha(1)
    return fig


def show_image(ax, image: np.ndarray, **kwargs) -> None:
    """Draws one image, uint8 or floats in [0, 1]: grey (h, w[, 1]) as dark ink on white, colour (h, w, 3) as it is.

    A canvas's NaN pixels (the gaps between tiled images) show white."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        ax.imshow(image, cmap=_GREY, vmin=0, vmax=255 if image.dtype == np.uint8 else 1, **kwargs)
    else:
        ax.imshow(np.nan_to_num(image, nan=1.0) if image.dtype != np.uint8 else image, **kwargs)


_GREY = colormaps["gray_r"].with_extremes(bad="white")


def plot_class_table(rows: list[ClassRow], images: np.ndarray, title: str = "", word: str = "digit") -> Figure:
    """(c) One test image per class beside its latent coordinates (and sigma where it is learned)."""
    captions = []
    for row in rows:
        text = f"{word} {row.name}  (test #{row.index})\nz = {format_point(row.z_mean, 2)}"
        captions.append(text + (f"\nσ = {format_point(row.sigma, 2)}" if row.sigma is not None else ""))
    return plot_captioned(images, captions, title)


def plot_code_table(rows: list[CodeRow], images: np.ndarray, title: str = "", word: str = "digit") -> Figure:
    """(c) A vqvae's: one test image per class above its codes, the L codebook indices."""
    captions = [f"{word} {row.name}  (test #{row.index})\ncodes {' '.join(map(str, row.codes))}" for row in rows]
    return plot_captioned(images, captions, title)


def plot_captioned(images: np.ndarray, captions: list[str], title: str = "") -> Figure:
    """Images in rows of at most five, each with its caption of a few lines below it."""
    ncols = min(5, len(images))
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(2.2 * ncols, 3.1 * nrows))
    for k, (image, caption) in enumerate(zip(images, captions, strict=True)):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        show_image(ax, image)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=8.5)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_images(
    images: Sequence[np.ndarray], titles: list[str] | None = None, ncols: int = 10, title: str = ""
) -> Figure:
    """A grid of decoded (or original) digits with optional captions."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(1.25 * ncols, 1.45 * nrows + (0.4 if title else 0)))
    for k, image in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        show_image(ax, image)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(titles[k], fontsize=7.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_manifold(grid: np.ndarray, images: np.ndarray, title: str = "") -> Figure:
    """(d) The decoded n x n grid over Gaussian quantiles of z[0] (across) and z[1] (up)."""
    n = len(grid)
    h, w = images.shape[2:4]
    axes = (0, 2, 1, 3, *range(4, images.ndim))  # rows of images, then each image's rows: one canvas
    canvas = images.transpose(axes).reshape(n * h, n * w, *images.shape[4:])
    fig = Figure(figsize=(7.5, 7.5 * h / w))
    ax = fig.add_subplot()
    show_image(ax, canvas)
    labels = [f"{round(v, 2) + 0.0:.2f}" for v in grid]  # + 0.0: no "-0.00"
    ax.set_xticks(np.arange(n) * w + (w - 1) / 2, labels, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(n) * h + (h - 1) / 2, labels[::-1], fontsize=7)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title or f"decoded {n}×{n} grid over Gaussian quantiles (other dimensions 0)", fontsize=10)
    return fig


def plot_interpolation(interp: Interpolation, title: str = "") -> Figure:
    """(e) The two originals at the ends and the decoded points of the segment between their codes."""
    images = [interp.originals[0], *interp.images, interp.originals[1]]
    titles = [f"original {interp.start_name}\n#{interp.start_index}"]
    titles += [f"{k}: {format_point(p, 2)}" for k, p in enumerate(interp.points)]
    titles += [f"original {interp.end_name}\n#{interp.end_index}"]
    return plot_images(images, titles, ncols=len(images), title=title)


def plot_history(histories: dict[str, list[dict[str, float]]]) -> Figure:
    """Training curves: loss, reconstruction and KL per epoch, training (solid) and test (dashed), per run; a vqvae's
    (no KL) its commitment, a squared distance, in the KL's place."""
    fig = Figure(figsize=(13, 4))
    first = next((rows[0] for rows in histories.values() if rows), {})
    codes = "kl_loss" not in first and "commitment_loss" in first  # a vqvae's: its objective is not in nats
    third = "commitment_loss" if codes else "kl_loss"
    for k, metric in enumerate(("loss", "reconstruction_loss", third)):
        ax = fig.add_subplot(1, 3, k + 1)
        for j, (name, rows) in enumerate(histories.items()):
            epochs = [row["epoch"] for row in rows]
            color = DIGIT_COLORS[j % 10]
            ax.plot(epochs, [row[metric] for row in rows], "-o", ms=2.5, color=color, label=f"{name} train")
            ax.plot(epochs, [row[f"val_{metric}"] for row in rows], "--o", ms=2.5, color=color, label=f"{name} test")
        ax.set_xlabel("epoch")
        units = {"loss": "nats + squared distance", "commitment_loss": "squared distance"} if codes else {}
        ax.set_ylabel(f"{units.get(metric, 'nats')} per image")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def image_canvas(rows: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Rows of images (each (n_i, h, w[, c]), uint8 or floats in [0, 1]) tiled into one float canvas in [0, 1].

    Images are separated by `gap` pixels; the background is NaN, so it shows white (`show_image`).
    """
    rows = [_unit_images(r) for r in rows]
    h, w = rows[0].shape[1:3]
    ncols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + gap) - gap, ncols * (w + gap) - gap, *rows[0].shape[3:]), np.nan, np.float32)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            canvas[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = image
    return canvas


def _unit_images(images) -> np.ndarray:
    """Images as floats in [0, 1], shape (n, h, w) grey or (n, h, w, c) colour: uint8 scaled, a trailing channel of
    1 dropped."""
    images = np.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    return images.astype(np.float32) / scale


def plot_image_rows(
    rows: Sequence[np.ndarray], row_labels: Sequence[str], col_labels: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """Rows of small images, one label per row (left) and optionally per column (below)."""
    canvas = image_canvas(rows)
    (h, w), gap = np.shape(rows[0])[1:3], 2
    ncols = max(len(r) for r in rows)
    fig = Figure(figsize=(0.2 + 0.6 * ncols + 1.4, 0.35 + 0.6 * len(rows) * h / w + (0.3 if col_labels else 0)))
    ax = fig.add_subplot()
    show_image(ax, canvas, interpolation="nearest")
    ax.set_yticks(np.arange(len(rows)) * (h + gap) + (h - 1) / 2, row_labels, fontsize=8)
    if col_labels:
        ax.set_xticks(np.arange(ncols) * (w + gap) + (w - 1) / 2, col_labels, fontsize=7)
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_reconstructions(inputs: np.ndarray, outputs: np.ndarray, title: str = "") -> Figure:
    """Test images (top) above their reconstructions, the decoded z_mean (bottom)."""
    return plot_image_rows([inputs, outputs], ["input", "reconstruction"], title=title)


def plot_traversal(
    values: np.ndarray, images: np.ndarray, kl_per_dim: np.ndarray, active: np.ndarray, title=""
) -> Figure:
    """One row per latent dimension: z[j] swept over `values`, the others at 0; each row says its KL."""
    labels = [
        f"z[{j}]  KL {kl:.2f}" + ("" if on else " (inactive)")
        for j, (kl, on) in enumerate(zip(kl_per_dim, active, strict=True))
    ]
    return plot_image_rows(list(images), labels, [f"{v:+.1f}" for v in values], title=title)


def plot_latent_diagnostics(kl_per_dim: np.ndarray, activity: np.ndarray, threshold: float, title: str = "") -> Figure:
    """Per latent dimension: its mean KL (bars, active units dark) and its activity Cov_x(E_q[z_j]) (log scale)."""
    dims = np.arange(len(kl_per_dim))
    active = activity > threshold
    fig = Figure(figsize=(min(13, max(8, 2.5 + 0.25 * len(dims))), 4.2))
    ax_kl, ax_act = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = np.where(active, "#1f77b4", "#c7c7c7")
    ax_kl.bar(dims, kl_per_dim, color=colors)
    ax_kl.set_xlabel("latent dimension j")
    ax_kl.set_ylabel("mean KL(q(z_j|x) ‖ N(0, 1)), nats")
    ax_kl.set_title(f"KL per dimension (sum {kl_per_dim.sum():.2f})", fontsize=10)
    ax_act.bar(dims, np.maximum(activity, 1e-6), color=colors)
    ax_act.axhline(threshold, color="#d62728", linewidth=1, linestyle="--", label=f"threshold {threshold:g}")
    ax_act.set_yscale("log")
    ax_act.set_ylim(bottom=min(threshold / 3, max(np.min(activity), 1e-6) / 2))
    ax_act.set_xlabel("latent dimension j")
    ax_act.set_ylabel("activity Cov_x(E_q[z_j])")
    ax_act.set_title(f"{int(active.sum())} of {len(dims)} units active", fontsize=10)
    ax_act.legend(fontsize=8, frameon=False)
    for ax in (ax_kl, ax_act):
        ax.grid(alpha=0.3, axis="y")
        if len(dims) <= 20:
            ax.set_xticks(dims)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_code_usage(counts: np.ndarray, perplexity: float, title: str = "") -> Figure:
    """A vqvae's codebook usage: how often each codebook vector occurs in the test images' codes, most used first.

    The ranks are on a log scale, so that a few vectors used out of hundreds still show."""
    used = int(np.count_nonzero(counts))
    ranks = np.arange(1, len(counts) + 2)
    share = np.sort(counts)[::-1] / counts.sum()
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    ax.stairs(share, ranks, fill=True, color="#1f77b4")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlim(1, len(counts) + 1)
    ax.set_xlabel("codebook vectors by rank, most used first (log scale)")
    ax.set_ylabel("share of the test images' codes")
    ax.set_title(f"{used} of {len(counts)} codebook vectors used, perplexity {perplexity:.1f}", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_snapshot_strip(
    inputs: np.ndarray, epochs: Sequence[int], reconstructions: np.ndarray, samples: np.ndarray, title: str = ""
) -> Figure:
    """Training as it went: the test images on top, then per epoch shown their reconstructions and the fixed
    prior draws decoded, side by side."""
    blank = np.full((1, *inputs.shape[1:]), np.nan, np.float32)
    gap = [blank] if len(samples[0]) else []

    def row(recon, sample):
        return np.concatenate([np.asarray(recon, np.float32) / 255, *gap, np.asarray(sample, np.float32) / 255])

    rows = [np.concatenate([np.asarray(inputs, np.float32) / 255, *gap])]
    rows += [row(r, s) for r, s in zip(reconstructions, samples, strict=True)]
    labels = ["test images", *[f"epoch {e}" for e in epochs]]
    title = title or "reconstructions of the test images (left) and decoded prior draws (right), by epoch"
    return plot_image_rows(rows, labels, title=title)
