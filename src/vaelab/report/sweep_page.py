"""The comparison page of a sweep: tables and a figure, from the points' results only.

`write_comparison` writes summary.csv, sweep.md, figures/metrics.png and the self-contained
index.html into the sweep directory (see vaelab.sweep for the whole file set).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vaelab._files import write_text
from vaelab.config import RunConfig
from vaelab.run import epochs_in_words

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BOUND = "iwae"  # the importance-weighted bound's figure (metrics.json's evaluation["iwae"]), a cell that may be marked
FIGURES = ("elbo", "iwae", "kl_loss", "active_units")  # compared across points, in this order
# compared too where the data has known factors (vaelab.analysis.disentanglement), after FIGURES
DISENTANGLEMENT = ("mig", "dci_disentanglement", "dci_completeness", "factorvae_score", "sap")
LABELS = {"elbo": "test ELBO", "iwae": "IWAE bound", "kl_loss": "KL", "active_units": "active units", "mig": "MIG",
          "dci_disentanglement": "DCI disentanglement", "dci_completeness": "DCI completeness",
          "factorvae_score": "FactorVAE score", "sap": "SAP"}  # fmt: skip
DIGITS = {"elbo": 2, "iwae": 2, "kl_loss": 2, "active_units": 1, "mig": 3, "dci_disentanglement": 3,
          "dci_completeness": 3, "factorvae_score": 3, "sap": 3}  # fmt: skip


class Point(Protocol):
    """What the page reads of each grid point the sweep hands it (a `vaelab.sweep.Point`)."""

    settings: dict[str, Any]
    config: RunConfig | None
    error: str | None
    status: str
    figures: dict[str, Any]
    reused: bool

    @property
    def name(self) -> str: ...


def compared(points: list[Point]) -> tuple[str, ...]:
    """The figures the comparison shows: FIGURES, then the disentanglement metrics where any point has them."""
    return FIGURES + tuple(n for n in DISENTANGLEMENT if any(n in p.figures for p in points))


def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def groups(points: list[Point], axes: dict[str, Sequence[Any]]) -> dict[tuple, list[Point]]:
    """The points by their settings other than the seed, in grid order."""
    keys = [a for a in axes if a != "seed"]
    out: dict[tuple, list[Point]] = {}
    for point in points:
        out.setdefault(tuple(point.settings[a] for a in keys), []).append(point)
    return out


def summary_rows(points: list[Point], axes: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Per setting (seeds pooled): how many seeds are done, and the mean and spread of each figure."""
    keys = [a for a in axes if a != "seed"]
    rows = []
    for key, members in groups(points, axes).items():
        done = [p for p in members if p.status == "done"]
        row: dict[str, Any] = {**dict(zip(keys, key, strict=True)), "seeds_done": len(done), "seeds": len(members)}
        for name in compared(points):
            values = [p.figures[name] for p in done if p.figures.get(name) is not None]
            mean, sd = spread(values) if values else (math.nan, math.nan)
            row[f"{name}_mean"], row[f"{name}_sd"] = mean, sd
        rows.append(row)
    return rows


CONDITIONAL_MARK = " †"  # an iwae cell that bounds log p(x|y), a conditional model's (cvae), not log p(x)


def _bound_mark(members: list[Point]) -> str:
    """CONDITIONAL_MARK where these points' bound is not on log p(x): their figure does not rank beside it."""
    return CONDITIONAL_MARK if any(p.config and p.config.model.bound != "log p(x)" for p in members) else ""


def _cell(mean: float, sd: float, digits: int, n: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def plot_sweep(points: list[Point], axes: dict[str, Sequence[Any]], names: Sequence[str] | None = None) -> Figure:
    """Each figure (rows; default `compared(points)`) against each swept setting (columns): mean over seeds, error
    bars one standard deviation; one line per combination of the other swept settings."""
    from matplotlib.figure import Figure  # here, not above: a sweep's workers import this module and never draw

    from vaelab.analysis import plots

    shown = tuple(names or compared(points))
    swept = [a for a in axes if a != "seed" and len(axes[a]) > 1] or [a for a in axes if a != "seed"] or ["seed"]
    fig = Figure(figsize=(4.2 * len(swept) + 1.5, 2.6 * len(shown)))
    for row, name in enumerate(shown):
        for col, axis in enumerate(swept):
            ax = fig.add_subplot(len(shown), len(swept), row * len(swept) + col + 1)
            others = [a for a in axes if a not in ("seed", axis)]
            lines: dict[tuple, dict[Any, list[float]]] = {}
            for p in points:
                if p.status == "done" and p.figures.get(name) is not None:
                    key = tuple(p.settings[a] for a in others)
                    lines.setdefault(key, {}).setdefault(p.settings[axis], []).append(p.figures[name])
            for k, (key, by_value) in enumerate(lines.items()):  # in grid order
                xs = [i for i, v in enumerate(axes[axis]) if v in by_value]
                stats = [spread(by_value[axes[axis][i]]) for i in xs]
                label = ", ".join(f"{a}={v}" for a, v in zip(others, key, strict=True)) or None
                ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", ms=4, capsize=3,
                            color=plots.DIGIT_COLORS[k % 10], label=label)  # fmt: skip
            ax.set_xticks(range(len(axes[axis])), [str(v) for v in axes[axis]])
            ax.set_xlim(-0.5, len(axes[axis]) - 0.5)
            ax.grid(alpha=0.3)
            if row == len(shown) - 1:
                ax.set_xlabel(axis)
            if col == 0:
                ax.set_ylabel(LABELS[name])
            if row == 0 and any(ax.get_legend_handles_labels()[1]):
                ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def _disentanglement_note(names: Sequence[str], images: int) -> str:
    if "mig" not in names:
        return ""
    return (
        f"\n\nThe data has known factors, so each point's codes (z_mean of the same {images:,} test images) are "
        "scored for disentanglement (vaelab.analysis.disentanglement; 0 to 1, higher is more disentangled): "
        "MIG (Chen et al., "
        "2018), DCI disentanglement and completeness (Eastwood & Williams, 2018), the FactorVAE score (Kim & Mnih, "
        "2018; chance is 1 over the number of factors) and SAP (Kumar et al., 2018)."
    )


def write_comparison(out: Path, points: list[Point], axes: dict[str, Sequence[Any]], *, samples: int, images: int):
    """Writes summary.csv, figures/metrics.png, sweep.md and index.html; returns index.html's path."""
    from vaelab.analysis import plots
    from vaelab.report.html import markdown_to_html

    summary = summary_rows(points, axes)
    shown = compared(points)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(summary[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary)
    write_text(out / "summary.csv", buf.getvalue())
    plots.save(plot_sweep(points, axes), out / "figures" / "metrics.png")

    keys = [a for a in axes if a != "seed"]
    head = [*keys, "seeds done", *(LABELS[n] for n in shown)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(keys) + "---:|" * (1 + len(shown))]
    for row, members in zip(summary, groups(points, axes).values(), strict=True):
        cells = [str(row[k]) for k in keys] + [f"{row['seeds_done']} of {row['seeds']}"]
        cells += [_cell(row[f"{n}_mean"], row[f"{n}_sd"], DIGITS[n], row["seeds_done"])
                  + (_bound_mark(members) if n == BOUND else "") for n in shown]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")

    settings = list(points[0].settings)
    point_head = ["run", *settings, "status", *(LABELS[n] for n in shown), "training s", "error"]
    point_lines = ["| " + " | ".join(point_head) + " |",
                   "|" + "---|" * (len(settings) + 2) + "---:|" * (len(shown) + 1) + "---|"]  # fmt: skip
    for p in points:
        figs = p.figures
        cells = [f"`{p.name}`", *(str(p.settings[a]) for a in settings), p.status + (" (reused)" if p.reused else "")]
        cells += [(f"{figs[n]:.{DIGITS[n] if n != 'active_units' else 0}f}" if figs.get(n) is not None else "–")
                  + (_bound_mark([p]) if n == BOUND else "") for n in shown]  # fmt: skip
        cells += [f"{figs['train_seconds']:.0f}" if "train_seconds" in figs else "–", (p.error or "").replace("|", "/")]
        point_lines.append("| " + " | ".join(cells) + " |")

    grid_text = ", ".join(f"{a} ∈ {{{', '.join(str(v) for v in values)}}}" for a, values in axes.items())
    config = next((p.config for p in points if p.config is not None), None)
    fixed = (
        f"{config.train.epochs} epoch{'s' if config.train.epochs > 1 else ''} per point, dataset {config.dataset}"
        + (f", KL warm-up {epochs_in_words(config.train.kl_warmup)}" if config.train.kl_warmup else "")
        + (f", the first {config.train.train_subset:,} training images" if config.train.train_subset else "")
        if config
        else "no valid configuration"
    )
    done = sum(p.status == "done" for p in points)
    conditional = (
        f"; a cell marked{CONDITIONAL_MARK} is a conditional model's bound on log p(x|y), the likelihood of an image "
        "given its label: another quantity, not to be ranked beside log p(x)"
        if _bound_mark(points)
        else ""
    )
    failed = [p for p in points if p.status != "done"]
    seconds = sum(p.figures.get("train_seconds", 0) for p in points)
    markdown = f"""# vaelab sweep: {done} of {len(points)} points done

The grid {grid_text}; {fixed}. Each point is an ordinary run directory under `runs/`. Every figure is
on the first {images:,} test images: the ELBO (KL weight 1, whatever β the point was trained with)
and the importance-weighted bound on log p(x) with K = {samples} (nats, higher is better){conditional}, the KL term
(nats), and the active units (latent dimensions whose code varies over the test set: Cov_x(E_q[z_j]) > 0.01,
Burda et al., 2015).{_disentanglement_note(shown, images)} Training took {seconds / 60:.1f} minutes of epochs
in all.

## Per setting, over seeds

Mean ± standard deviation over the seeds that finished.

{chr(10).join(lines)}

![each figure against each swept setting](figures/metrics.png)

## Every point

{chr(10).join(point_lines)}
"""
    if failed:
        markdown += f"\n{len(failed)} points did not finish; run the same `vaelab sweep` again to retry them.\n"
    write_text(out / "sweep.md", markdown)
    html = markdown_to_html(markdown, base_dir=out, title=f"vaelab sweep: {grid_text}")
    write_text(out / "index.html", html)
    return out / "index.html"
