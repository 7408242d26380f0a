"""The figures of one run, drawn by one function that `vaelab encode/generate/interpolate` and the report call.

`draw_run_figures` writes, into one directory, the files of the parts asked for:

    latent_map.png            (c) the test set in the latent plane, the class table's images ringed
    class_table.png, .md, .csv (c) one test image per class and its code (datasets with labels)
    generated.png             (d) the generator at given latent points
    samples.png               (d) draws from the prior (N(0, I); a vamp's VampPrior), or a sampler, decoded
    class_grid.png            (d) a conditional model's every class, the same prior draws in each row (cvae)
    manifold.png              (d) a grid over Gaussian quantiles of z[0] and z[1], decoded
    interpolation.png         (e) the decoded segment between two test images' codes
    interpolation_path.png    (e) that segment on the latent map
    reconstruction.png        diagnose: test images (one per class) above their reconstructions
    latent_kl.png             diagnose: KL and activity per latent dimension, the active units marked
    traversal.png             diagnose: one row per latent dimension swept, the others at 0 (latent_dim > 2)
    snapshots.png             diagnose: the training snapshots as a strip over epochs (runs that have them)

and returns what it computed, for the caller to print or to write about.

A vqvae's codes are codebook indices, not points of a Gaussian latent space: it has no latent map, manifold,
interpolation or latent diagnostics, and its figure set is (`draw_code_figures`)

    code_table.png, .md, .csv (c) one test image per class and its L codes (datasets with labels)
    generated.png             (d) given codes decoded
    samples.png               (d) draws from the uniform prior over codes, decoded, each under its codes
    reconstruction.png        diagnose: test images (one per class) above their reconstructions, the decoded codes
    code_usage.png            diagnose: how often the test images' codes use each codebook vector
    snapshots.png             diagnose: as above
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaelab._files import write_text
from vaelab.analysis import diagnostics, plots
from vaelab.analysis import latent as analysis
from vaelab.data import Dataset, test_images
from vaelab.run import Run
from vaelab.training import snapshots

PARTS = ("encode", "generate", "interpolate", "diagnose")
SNAPSHOT_ROWS = 8  # epochs shown in the snapshot strip, spaced geometrically, the last always included


@dataclass
class RunFigures:
    """The analyses behind a run's figures, and the file each figure went to (by name, e.g. "latent_map")."""

    files: dict[str, Path] = field(default_factory=dict)
    codes: analysis.LatentCodes | None = None
    table: list[analysis.ClassRow] | None = None
    z: np.ndarray | None = None  # the points decoded into generated.png
    manifold_grid: np.ndarray | None = None
    interpolation: analysis.Interpolation | None = None
    latent: diagnostics.LatentDiagnostics | None = None  # over the test set the run is scored on
    snapshot_epochs: list[int] | None = None  # the epochs shown in snapshots.png
    code_table: list[analysis.CodeRow] | None = None  # a vqvae's (c) table
    sample_codes: np.ndarray | None = None  # a vqvae's prior draws decoded into samples.png, (samples, L)
    code_counts: np.ndarray | None = None  # a vqvae's: uses of each codebook vector by the scoring test set's codes


def exercise_point(latent_dim: int) -> np.ndarray:
    """The exercise's `z_sample` (0.5, 0.2) for a 2-d latent space; the prior's mean otherwise."""
    return analysis.check_points([[0.5, 0.2]] if latent_dim == 2 else [[0.0] * latent_dim], latent_dim)


def draw_run_figures(
    run: Run,
    data: Dataset,
    out: Path,
    *,
    parts: Collection[str] = PARTS,
    picks: list[int] | None = None,
    z=None,
    samples: int = 20,
    seed: int = 0,
    manifold: int = 15,
    pair: tuple[int, int] | None = None,
    steps: int = 10,
    sampler=None,
) -> RunFigures:
    """Computes and saves the figures of `parts` for `run` into `out`.

    encode: the latent map and (with labels) the class table, `picks` replacing each class's first
    image; generate: `z` decoded (None: none), `samples` draws with `seed` (0: none) from `sampler` (None: the
    prior; vaelab.analysis.samplers), a `manifold` x `manifold` grid (0: none); interpolate: `pair` of test images
    (default
    `analysis.pick_pair`), `steps` points; diagnose: reconstructions, the latent diagnostics and
    traversal over the scoring test set, and the snapshot strip. A conditional model (cvae) encodes test images
    with their labels and decodes latent points as `run.label` (default: the first class); its generate part adds
    the class grid. A vqvae's set is `draw_code_figures`', `z` its codes (`manifold`, `pair`, `steps` unused).
    """
    if not run.config.model.member.gaussian_latent:
        return draw_code_figures(run, data, out, parts=parts, picks=picks, codes=z, samples=samples, seed=seed)
    if run.config.model.conditional and run.label is None:
        run = dataclasses.replace(run, label=0)
    result = RunFigures()
    word = data.class_word
    title = run.name

    save = _saver(result, out)
    if "encode" in parts or "interpolate" in parts:
        result.codes = analysis.encode_test_set(run, data)
    if "encode" in parts:
        if data.labelled:
            result.table = analysis.class_table(run, data, analysis.parse_picks(data, picks) if picks else None)
            images = data.x_test[[row.index for row in result.table]]
            save("class_table", plots.plot_class_table(result.table, images, title=title, word=word))
            write_text(out / "class_table.md", analysis.table_markdown(result.table, word) + "\n")
            write_text(out / "class_table.csv", analysis.table_csv(result.table, word))
            result.files["class_table_md"] = out / "class_table.md"
            result.files["class_table_csv"] = out / "class_table.csv"
        fig = plots.plot_latent_map(result.codes, data.class_names, table=result.table, title=title, word=word)
        save("latent_map", fig)
    if "generate" in parts:
        if z is not None:
            result.z = analysis.check_points(z, run.config.model.latent_dim)
            images = analysis.generate(run, result.z)
            titles = [analysis.format_point(p, 2) for p in result.z]
            save(
                "generated",
                plots.plot_images(images, titles, ncols=min(10, len(images)), title=f"{title}: generator(z)"),
            )
        if samples:
            _, images = analysis.prior_samples(run, samples, seed=seed, sampler=sampler)
            prior = (sampler or run.models.prior()).name
            save("samples", plots.plot_images(images, title=f"{title}: {samples} samples, z ~ {prior}"))
        if run.config.model.conditional:
            _, images = analysis.class_grid(run, seed=seed)
            title_grid = f"{title}: one row per {word}, the same z ~ N(0, I) down each column"
            save(
                "class_grid",
                plots.plot_images(images.reshape(-1, *images.shape[2:]), ncols=images.shape[1], title=title_grid),
            )
        if manifold:
            result.manifold_grid, images = analysis.manifold(run, manifold)
            save("manifold", plots.plot_manifold(result.manifold_grid, images))
    if "interpolate" in parts:
        start, end = pair or analysis.pick_pair(data)
        result.interpolation = analysis.interpolate(run, data, start, end, steps)
        save("interpolation", plots.plot_interpolation(result.interpolation, title=f"{title}: interpolation"))
        fig = plots.plot_latent_map(
            result.codes, data.class_names, interpolation=result.interpolation, title=title, word=word
        )
        save("interpolation_path", fig)
    if "diagnose" in parts:
        _diagnose(run, data, result, save)
    return result


def draw_code_figures(
    run: Run,
    data: Dataset,
    out: Path,
    *,
    parts: Collection[str] = PARTS,
    picks: list[int] | None = None,
    codes=None,
    samples: int = 20,
    seed: int = 0,
) -> RunFigures:
    """Computes and saves the figures of a vqvae `run` into `out`, the module docstring's second list.

    encode: the code table, `picks` replacing each class's first image; generate: `codes` (n, L) decoded (None:
    none) and `samples` draws with `seed` (0: none) from the run's learned prior over codes (code_prior.npz), or
    from the uniform prior where it has none; diagnose: reconstructions, code usage
    over the scoring test set and the snapshot strip. "interpolate" draws nothing: codes have no segment between
    them. `codes` that are not codebook indices are a one-line error, before anything is drawn.
    """
    from vaelab.analysis.code_prior import load_prior
    from vaelab.analysis.evaluate_codes import code_counts, usage_perplexity
    from vaelab.models.vqvae import uniform_codes

    result, model, title = RunFigures(), run.config.model, run.name
    if codes is not None:
        codes = analysis.check_codes(codes, model.latent_dim, model.codebook_size)
    save = _saver(result, out)
    if "encode" in parts and data.labelled:
        word = data.class_word
        result.code_table = analysis.code_table(run, data, analysis.parse_picks(data, picks) if picks else None)
        images = data.x_test[[row.index for row in result.code_table]]
        save("code_table", plots.plot_code_table(result.code_table, images, title=title, word=word))
        write_text(out / "code_table.md", analysis.code_table_markdown(result.code_table, word) + "\n")
        write_text(out / "code_table.csv", analysis.code_table_csv(result.code_table, word))
        result.files["code_table_md"] = out / "code_table.md"
        result.files["code_table_csv"] = out / "code_table.csv"
    if "generate" in parts and codes is not None:
        result.z = codes
        save("generated", _decoded_codes(run, result.z, f"{title}: generator(codes)"))
    if "generate" in parts and samples:
        prior = load_prior(run)
        if prior is None:
            result.sample_codes = uniform_codes(samples, model, seed)
            what = f"{title}: {samples} samples, codes uniform over {model.codebook_size} codebook vectors"
        else:
            result.sample_codes = prior.sample(samples, seed)
            what = f"{title}: {samples} samples, codes drawn from the learned prior (code_prior.npz)"
        save("samples", _decoded_codes(run, result.sample_codes, what))
    if "diagnose" in parts:
        x_test = test_images(data, binarized=run.config.train.binarize)
        _reconstructions(run, data, x_test, save)
        result.code_counts = code_counts(run.codes(x_test), model.codebook_size)
        save("code_usage", plots.plot_code_usage(result.code_counts, usage_perplexity(result.code_counts), title))
        _snapshot_strip(run, result, save)
    return result


def _decoded_codes(run: Run, codes: np.ndarray, title: str):
    """A vqvae's `codes` (n, L) decoded, each image under its codes."""
    return plots.plot_images(run.decode(codes), [" ".join(map(str, row)) for row in codes], title=title)


def _saver(result: RunFigures, out: Path):
    """save(name, fig, filename=None): writes `fig` to out/filename (default name.png) and records it in `result`."""

    def save(name: str, fig, filename: str | None = None) -> None:
        result.files[name] = out / (filename or f"{name}.png")
        plots.save(fig, result.files[name])

    return save


def _reconstructions(run: Run, data: Dataset, x_test: np.ndarray, save) -> None:
    """reconstruction.png: one test image per class (the snapshots' images) above its reconstruction."""
    index = snapshots.pick_images(data.y_test if data.labelled else None)
    reconstructions = run.reconstruct(x_test[index], labels=analysis.test_labels(run, data, index))
    save("reconstruction", plots.plot_reconstructions(x_test[index], reconstructions, title=run.name))


def _diagnose(run: Run, data: Dataset, result: RunFigures, save) -> None:
    title = run.name
    x_test = test_images(data, binarized=run.config.train.binarize)
    _reconstructions(run, data, x_test, save)
    result.latent = diagnostics.latent_diagnostics(*run.encode(x_test, labels=analysis.test_labels(run, data)))
    latent = result.latent
    fig = plots.plot_latent_diagnostics(latent.kl_per_dim, latent.activity, diagnostics.ACTIVITY_THRESHOLD, title)
    save("latent_kl", fig)
    if run.config.model.latent_dim > 2:
        values = diagnostics.TRAVERSAL_VALUES
        images = diagnostics.traversal(run, values)
        save("traversal", plots.plot_traversal(values, images, latent.kl_per_dim, latent.active, title=title))
    _snapshot_strip(run, result, save)


def _snapshot_strip(run: Run, result: RunFigures, save) -> None:
    """snapshots.png, where the run has training snapshots: at most SNAPSHOT_ROWS epochs of them."""
    shots = snapshots.read_snapshots(run.path)
    if shots is not None and len(shots.epoch):
        keep = strip_rows(shots.epoch, SNAPSHOT_ROWS)
        result.snapshot_epochs = [int(e) for e in shots.epoch[keep]]
        fig = plots.plot_snapshot_strip(
            shots.inputs, result.snapshot_epochs, shots.reconstructions[keep], shots.samples[keep]
        )
        save("snapshots", fig)


def strip_rows(epochs: np.ndarray, rows: int) -> np.ndarray:
    """Indices of at most `rows` of the recorded `epochs`, spaced geometrically (early epochs change most),
    the first and the last included."""
    n = len(epochs)
    if n <= rows:
        return np.arange(n)
    picks = np.unique(np.rint(np.geomspace(1, n, rows)).astype(int) - 1)
    extra = [k for k in np.linspace(0, n - 1, 4 * rows).astype(int) if k not in picks]  # fill up to `rows`
    return np.sort(np.concatenate([picks, extra[: rows - len(picks)]])).astype(int)
