"""`vaelab report`: train (or reuse) the exercise's three networks and answer every part in one report.

The report is a pure function of the runs' saved files (and their data): `build_report` only reads runs,
computes the analyses and renders them, in a fixed order. Running it twice gives the same files.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from vaelab import _interrupt, limits
from vaelab._files import write_text
from vaelab.analysis import latent as analysis
from vaelab.analysis import plots, samplers
from vaelab.analysis.figures import draw_run_figures, exercise_point
from vaelab.config import (
    CODE_DIM,
    REPORT_IWAE_SAMPLES,
    ModelConfig,
    RunConfig,
    TrainConfig,
    default_likelihood,
    make_config,
)
from vaelab.data import BUILTIN, DEFAULT_DATASET, IMAGE_SHAPE, Dataset, load_dataset
from vaelab.errors import Interrupted, VaelabError
from vaelab.experiments import lanes
from vaelab.experiments.job import ensure_run
from vaelab.explore import pagedata
from vaelab.explore.export import fitting_block
from vaelab.family import FAMILIES, member
from vaelab.models import parameter_count
from vaelab.models.likelihoods import likelihood_note
from vaelab.report.html import LIVE_MARKER, markdown_to_html
from vaelab.run import Run, epochs_in_words, load_run, read_metrics, run_dir_name, run_is_complete

REPORT_PRESETS = ("mlp", "mlp-fixed-var", "conv")  # the exercise's networks, on 28x28 grey images
# On images of another shape part (g)'s ConvNet, made for 28x28x1, gives way to the one built from the shape.
OTHER_SHAPE_PRESETS = ("mlp", "mlp-fixed-var", "convnet")
FIXED_VARIANCE_PRESETS = ("mlp-fixed-var",)  # part (f): a model without a Gaussian variance (vqvae) skips it
PARTS = {
    "mlp": ("Parts (c), (d), (e): the course's network", "the base network of the course script"),
    "mlp-fixed-var": ("Part (f): the variance fixed to ones", "the base network with z_log_var fixed at 0"),
    "conv": ("Part (g): the ConvNet encoder and decoder", "the ConvNet of part (g), intermediate_dim 16"),
    "convnet": (
        "Part (g): a ConvNet encoder and decoder",
        "a ConvNet built from the image's shape (stride-2 blocks of 16, 32 and 64 filters, mirrored)",
    ),
}
KL_CHECKS = [(0.0, 1.0, 1.0, 2.0), (2.0, 0.5, -1.0, 1.5), (0.0, 0.05, 3.0, 20.0), (-10.0, 10.0, 10.0, 0.1)]


def ensure_evaluation(run: Run, data: Dataset, samples: int, log: Callable[[str], None]) -> bool:
    """Evaluates the run (ELBO, IWAE bound with `samples`) on the test images it is scored on (`scored_test_set`)
    unless its metrics.json already holds that; a vqvae's prior over codes is trained first, and its bound with that
    prior is part of the evaluation. Whether it evaluated now."""
    from vaelab.analysis.code_prior import ensure_prior
    from vaelab.analysis.evaluate import evaluate_and_save

    done = run.metrics.get("evaluation", {})
    images = scored_images(run.config, data)
    code_prior = run.config.model.member.code_prior  # a vqvae's learned prior over its codes, compared in metrics
    fresh_prior = code_prior and ensure_prior(run, data, log)
    if (
        done.get("samples") == recorded_samples(run.config, samples)
        and done.get("images") == images
        and not fresh_prior
        and (not code_prior or "prior_elbo" in done)
    ):
        return False
    log(f"vaelab report: evaluating {run.path} on {images:,} test images (importance-weighted bound, K = {samples})")
    evaluate_and_save(run, data, samples=samples, images=images)
    return True


def ensure_disentanglement(run: Run, data: Dataset, log: Callable[[str], None]) -> None:
    """Scores the run's codes against the data's known factors (vaelab.analysis.disentanglement) unless the data has
    none, the
        run is a vqvae, or its metrics.json already holds them for every test image."""
    from vaelab.analysis.disentanglement import score_and_save

    if data.factors is None or not run.config.model.member.gaussian_latent:
        return
    if run.metrics.get("disentanglement", {}).get("images") == len(data.x_test):
        return
    log(f"vaelab report: scoring the disentanglement of {run.path} against {data.title}'s factors")
    score_and_save(run, data)


def scored_images(config: RunConfig, data: Dataset) -> int:
    """How many test images a run of `config` is scored on: the first `test_subset`, or all."""
    return len(data.x_test[: config.train.test_subset])


def scored_test_set(run: Run, data: Dataset) -> Dataset:
    """`data` with the test images the report scores and draws the run on: the first `--test-subset` (the run's
    `test_subset`, with which it was also validated while it trained), or all of them. The checksum stays that of
    the whole dataset, the one the run records."""
    images = scored_images(run.config, data)
    if images == len(data.x_test):
        return data
    labels = None if data.y_test is None else data.y_test[:images]
    return dataclasses.replace(data, x_test=data.x_test[:images], y_test=labels)


def report(
    *,
    dataset: str = "mnist",
    out: str | os.PathLike[str] = "report",
    runs_dir: str | os.PathLike[str] = "runs",
    epochs: int = TrainConfig.epochs,
    iwae_samples: int = REPORT_IWAE_SAMPLES,
    train_subset: int | None = None,
    test_subset: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: tuple[int, int] | None = None,
    grey: bool = False,
    likelihood: str | None = None,
    model: str | None = None,
    k: int | None = None,
    pseudo_inputs: int | None = None,
    codes: int | None = None,
    sampler: str = "prior",
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> Path:
    """Trains or reuses the presets mlp, mlp-fixed-var and conv (convnet for images other than 28x28 grey; a vqvae
    skips mlp-fixed-var: `report_presets`), then writes the report; returns index.html. With `test_subset` the
    runs are validated, evaluated and drawn on the first `test_subset` test images only (quick tries). A folder's
    or an .npz's images are read at `image_size`, in grey with `grey` (`vaelab.data.load_dataset`); `likelihood`
    replaces the image's default one (`vaelab.models.likelihoods`); `model` (and the vae's or iwae's `k`, the vamp's
    `pseudo_inputs`, the vqvae's `codes`) trains that member of the family on every network (`vaelab.models`); the
    sample grids draw from `sampler` (`vaelab.analysis.samplers`)."""
    if sampler != "prior" and model in FAMILIES and not FAMILIES[model].gaussian_latent:
        raise VaelabError(f"--sampler {sampler} draws Gaussian codes, and a {model}'s are codebook indices")
    data = load_dataset(dataset, data_dir, image_size=image_size, grey=grey, log=log)
    limits.check_evaluation(len(data.x_test), iwae_samples)  # before any training, not after it
    presets = report_presets(data.image_shape, model or ModelConfig.family)
    configs = [
        make_config(
            preset,
            epochs=epochs,
            train_subset=train_subset,
            test_subset=test_subset,
            dataset=data.name,
            image_size=image_size,
            grey=grey,
            likelihood=likelihood,
            model=model,
            k=k,
            pseudo_inputs=pseudo_inputs,
            codes=codes,
        ).for_data(data)
        for preset in presets
    ]
    runs = []
    analysed: dict[Path, tuple[str, str | None]] = {}  # the sections of runs analysed while others trained

    def analyse(path: Path) -> None:
        run = load_run(path)
        log(f"vaelab report: analysing {run.name} while the others train")
        analysed[path.resolve()] = _run_section(
            run, scored_test_set(run, data), Path(out) / "figures" / run.name, Path(out), sampler
        )

    with _interrupt.stop_at_step_boundary():
        _train_side_by_side(configs, Path(runs_dir), data, iwae_samples, data_dir, log, analyse)
        for k, (preset, config) in enumerate(zip(presets, configs, strict=True), 1):
            log(f"vaelab report: [{k}/{len(presets)}] {preset}")
            try:
                runs.append(ensure_run(config, Path(runs_dir) / run_dir_name(config), data, log=log))
                if ensure_evaluation(runs[-1], data, iwae_samples, log):
                    analysed.pop(runs[-1].path.resolve(), None)  # analysed before this evaluation: again
                ensure_disentanglement(runs[-1], data, log)
            except Interrupted:
                raise Interrupted(
                    f"interrupted while working on {preset}; its completed epochs are kept: run the same "
                    "`vaelab report` again to continue (finished runs are reused)"
                ) from None
    log("vaelab report: analysing the runs and writing the report")
    return build_report(runs, data, Path(out), analysed, sampler=sampler)


def report_presets(image_shape: tuple[int, int, int], family: str = ModelConfig.family) -> tuple[str, ...]:
    """The networks the report trains for images of `image_shape` with the model `family`: a vqvae's codes have no
    variance to fix, so it has no part (f)."""
    presets = REPORT_PRESETS if tuple(image_shape) == IMAGE_SHAPE else OTHER_SHAPE_PRESETS
    if not member(family).fixed_variance:
        return tuple(preset for preset in presets if preset not in FIXED_VARIANCE_PRESETS)
    return presets


def recorded_samples(config: RunConfig, samples: int) -> int:
    """The K that the run's evaluation with `samples` records: a vqvae's bound is exact with one sample."""
    from vaelab.analysis.evaluate_codes import SAMPLES

    return samples if config.model.member.gaussian_latent else SAMPLES


def _train_side_by_side(
    configs: list[RunConfig],
    runs_dir: Path,
    data: Dataset,
    samples: int,
    data_dir,
    log: Callable[[str], None],
    on_done: Callable[[Path], None],
) -> None:
    """Trains and evaluates the runs still to do at the same time, each on its own share of the cores, and calls
    `on_done(run directory)` for each as it ends while the others may still train.

    Only for built-in datasets (a worker process loads the data by name) with JAX on a CPU; otherwise,
    or with one core, the report trains them one after the other itself.
    """
    import keras

    from vaelab.training.distribute import on_cpu

    todo = [
        lanes.Job(
            config, runs_dir / run_dir_name(config), recorded_samples(config, samples), scored_images(config, data)
        )
        for config in configs
        if not _evaluated(
            runs_dir / run_dir_name(config), recorded_samples(config, samples), scored_images(config, data)
        )
    ]
    todo.sort(key=lambda job: job.config.model.arch == "mlp")  # the longest first: the ConvNet
    cores = lanes.cpu_lanes(len(todo))
    if len(cores) < 2 or data.name not in BUILTIN or not (keras.backend.backend() == "jax" and on_cpu()):
        return
    log(f"vaelab report: training {len(todo)} networks side by side, on {len(cores)} shares of the cores")
    try:
        lanes.run_in_lanes(
            todo,
            cores,
            data_dir=None if data_dir is None else os.fspath(data_dir),
            log=log,
            on_done=lambda job: on_done(job.path),
        )
    except Interrupted:
        raise Interrupted(
            "interrupted; the runs keep their completed epochs: run the same `vaelab report` again to continue "
            "(finished runs are reused)"
        ) from None


def _evaluated(path: Path, samples: int, images: int) -> bool:
    """Whether the run in `path` is complete and evaluated as the report asks (then nothing is left to do)."""
    try:
        if not run_is_complete(path):
            return False
        done = read_metrics(path).get("evaluation", {})
    except VaelabError:  # no run there yet (or a damaged one: the worker says which file, in one line)
        return False
    return done.get("samples") == samples and done.get("images") == images


# --- the report itself: a pure function of the runs' files ------------------------------------------------


def build_report(
    runs: list[Run],
    data: Dataset,
    out: Path,
    analysed: dict[Path, tuple[str, str | None]] | None = None,
    *,
    sampler: str = "prior",
) -> Path:
    """Writes out/report.md, out/figures/ and the self-contained out/index.html; returns index.html's path.

    In index.html, each run with latent_dim 2 also gets a live latent map that decodes in the page. `analysed`
    holds runs' sections made earlier by `_run_section` with the same `out`, by resolved run directory (the report
    makes them while other runs train). Each run is scored and drawn on its `scored_test_set` of `data`; the sample
    grids draw from `sampler` (prior, gmm[:K]: vaelab.analysis.samplers).
    """
    figures = out / "figures"
    sections = [_header(runs, data, sampler)]
    live = {}
    for run in runs:
        made = (analysed or {}).get(Path(run.path).resolve())
        section, live[run.name] = made or _run_section(
            run, scored_test_set(run, data), figures / run.name, out, sampler
        )
        sections.append(section)
    sections.append(_comparison(runs, data, figures, out))
    if data.factors is not None:
        sections.append(_disentanglement_section(runs, data))
    sections.append(_kl_section())
    markdown = "\n\n".join(sections) + "\n"
    write_text(out / "report.md", markdown)
    html = markdown_to_html(
        markdown,
        base_dir=out,
        title=f"vaelab report: a variational autoencoder on {data.title}",
        live={name: block for name, block in live.items() if block is not None},
    )
    write_text(out / "index.html", html)
    return out / "index.html"


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _header(runs: list[Run], data: Dataset, sampler: str = "prior") -> str:
    versions = runs[0].info.get("versions", {})
    epochs = sorted({run.config.train.epochs for run in runs})
    command = "vaelab report" + (f" --dataset {data.name}" if data.name != DEFAULT_DATASET else "")
    command += f" --epochs {epochs[0]}" if epochs != [TrainConfig.epochs] else ""
    if runs[0].config.train.train_subset:
        command += f" --train-subset {runs[0].config.train.train_subset}"
    if runs[0].config.train.test_subset:
        command += f" --test-subset {runs[0].config.train.test_subset}"
    model = runs[0].config.model
    samples = _samples(runs)
    if model.member.gaussian_latent and samples and samples != [REPORT_IWAE_SAMPLES]:  # a vqvae: one sample, any K
        command += f" --iwae-samples {', '.join(str(k) for k in samples)}"
    if model.pixel_likelihood != default_likelihood(model.input_shape):
        command += f" --likelihood {model.pixel_likelihood}"
    if model.family != ModelConfig.family:
        command += f" --model {model.family}"
    for option in model.member.options:  # the member's own flags, where given (the iwae's or the vae's --k, ...)
        if option.flag and getattr(model, option.field) is not None:
            command += f" {option.flag} {getattr(model, option.field)}"
    command += f" --sampler {sampler}" if sampler != "prior" else ""
    machine = runs[0].info.get("machine", "not recorded")
    run_list = ", ".join(f"`{run.path}`" for run in runs)
    classes = f"{len(data.class_names)} classes ({', '.join(data.class_names)})" if data.labelled else "no class labels"
    return f"""# vaelab report: a variational autoencoder on {data.title}

This report answers the course exercise (Advanced Machine Learning, exercise 4) part by part{_on(data)}. It was
produced by `{command}` from the runs {run_list}; every number and figure below is computed from
those runs' saved files (configuration, weights, history) and the data, nothing is typed in by hand.

- Data: {data.title}, {len(data.x_train):,} training and {len(data.x_test):,} test images of
  {_shape_words(data.image_shape)}, {classes}, scored with the {runs[0].config.model.pixel_likelihood} likelihood
  (sha256 of the arrays `{data.sha256[:16]}…`, from {data.source}).
- Test images: {_scored_phrase(runs, data)}{_subset_note(runs, data)}.
- {_samples_note(runs)}
- Software: vaelab {versions.get("vaelab", "?")}, Keras {versions.get("keras", "?")}, backend
  {versions.get("backend", "?")} {versions.get("backend_version", "")}.
- Trained on: {machine}."""


def _scored_phrase(runs: list[Run], data: Dataset) -> str:
    """Which test images the runs are scored on, in words: "all 10,000", or "the first 500 of the 10,000"."""
    counts = sorted({scored_images(run.config, data) for run in runs})
    if counts == [len(data.x_test)]:
        return f"all {len(data.x_test):,}"
    return f"the first {', '.join(f'{n:,}' for n in counts)} of the {len(data.x_test):,}"


def _subset_note(runs: list[Run], data: Dataset) -> str:
    """What `--test-subset` changed, where it was given."""
    if all(scored_images(run.config, data) == len(data.x_test) for run in runs):
        return " score every network and fill every map and table"
    return (
        " (`--test-subset`, a quick try) validate the networks while they train, score them (the test loss, the"
        " ELBO and the bound) and fill the maps, tables and diagnostics below"
    )


def _samples(runs: list[Run]) -> list[int]:
    """The K of the runs' evaluations (none for runs not evaluated)."""
    return sorted({run.metrics["evaluation"]["samples"] for run in runs if "evaluation" in run.metrics})


def _samples_note(runs: list[Run]) -> str:
    """The K of the runs' log-likelihood bounds, in words."""
    samples = _samples(runs)
    if not samples:
        return "The log-likelihood bound: not computed, as the runs have not been evaluated (`vaelab evaluate RUN`)."
    if not runs[0].config.model.member.gaussian_latent:
        return "The log-likelihood bound: exact with one sample, as q(z|x) is one point (the nearest codes)."
    return (
        f"The log-likelihood bound: K = {', '.join(str(k) for k in samples)} importance samples per test image "
        f"(`--iwae-samples`, default {REPORT_IWAE_SAMPLES})."
    )


def _shape_words(shape: tuple[int, int, int]) -> str:
    height, width, channels = shape
    return f"{height}×{width} " + ("grey levels" if channels == 1 else f"pixels with {channels} channels")


def _on(data: Dataset) -> str:
    return "" if data.name == DEFAULT_DATASET else f", with {data.title} in place of MNIST"


def _run_section(run: Run, data: Dataset, fig_dir: Path, out: Path, sampler: str = "prior") -> tuple[str, str | None]:
    """The run's section of report.md, its samples drawn from `sampler`, and (for latent_dim 2) the data block of its
    live map in index.html: the generator's weights float32, or float16, or int8, the first that keeps the run's share
    of the page within the explorer's budget (`explore.export.fitting_block`, the exported explorer's rule)."""
    if not run.config.model.member.gaussian_latent:
        return _code_section(run, data, fig_dir, out), None
    title, what = PARTS.get(run.config.preset, (run.config.preset, run.config.preset))
    drawn = None if sampler == "prior" else samplers.sampler(run, sampler, data)
    figures = draw_run_figures(run, data, fig_dir, z=exercise_point(run.config.model.latent_dim), sampler=drawn)
    codes, rows, interp, z = figures.codes, figures.table, figures.interpolation, figures.z
    img = {name: _rel(path, out) for name, path in figures.files.items()}
    word = data.class_word

    sigma_note = (
        "σ = exp(z_log_var / 2) is the encoder's standard deviation for that image; the map draws a "
        "one-σ ellipse around each table point."
        if run.config.model.variance == "learned"
        else "The variance is fixed to ones here, so every image's code is N(z_mean, I): there is no σ to report."
    )
    pca = " (latent_dim > 2: the plane of the first two principal components)" if codes.is_pca else ""
    spread = analysis.format_point(codes.z_mean.std(axis=0), 2)
    coloured = f", coloured by the {word} it shows. The ringed points are the images of the table below" if rows else ""
    table = (
        f"""### (c) One image per {word} and its latent coordinates

The first test image of each {word} and where the encoder puts it. {sigma_note}

{analysis.table_markdown(rows, word)}

![{word} table of {run.config.preset}]({img["class_table"]})"""
        if rows
        else f"### (c) One image per class\n\n{data.title} has no class labels, so there is no table of classes."
    )
    conditional = run.config.model.conditional
    as_class = f", as the {word} {data.class_name(0)}" if conditional else ""  # figures.draw_run_figures' default
    class_grid = (
        f"""The {run.config.model.family} draws the {word} it is given: every {word} (one per row) decoded from the
same ten draws z ~ N(0, I) (one per column), so that a column shows one code's style across the classes:

![every {word}]({img["class_grid"]})

"""
        if conditional
        else ""
    )
    interp_class = " as the first image's class (each image is encoded with its own label)" if conditional else ""
    start, end = (
        (analysis.with_article(interp.start_name), analysis.with_article(interp.end_name))
        if data.labelled
        else ("one image", "another")
    )
    live = None
    if run.config.model.latent_dim == 2 and not run.config.model.conditional:  # the page's network reads z alone
        page_map = pagedata.latent_map(run.name, run, codes, rows, data)
        live, _, _ = fitting_block(f"live-{run.name}", page_map, run, encoder=False)
    section = f"""## {title}

Preset `{run.config.preset}`: {what}; latent_dim {run.config.model.latent_dim}, trained {epochs_in_words(run.epoch)}
(run `{run.path}`). {_test_sentence(run)}

### (c) The encoder: the test set in the latent space

The encoder maps each of the {len(data.x_test):,} test images to `z_mean`{pca}; each point is one image{coloured}.
The codes' standard deviation over the test set is {spread} per latent dimension.

![latent map of {run.config.preset}]({img["latent_map"]})

{LIVE_MARKER.format(name=run.name) if live else ""}

{table}

### (d) The generator

{class_grid}`generator.predict(np.array([[{", ".join(f"{v:g}" for v in z[0])}]]))`, the exercise's `z_sample`{as_class}:

![generated image]({img["generated"]})

{_samples_caption(run, drawn, sampler)}, decoded{as_class}:

![prior samples]({img["samples"]})

A 15 × 15 grid of latent points over Gaussian quantiles (the course script's
`norm.ppf(np.linspace(0.05, 0.95, 15))`), decoded in one batch{as_class}:

![manifold]({img["manifold"]})

### (e) Interpolation from {start} to {end}

Test images #{interp.start_index} ({interp.start_name}) and #{interp.end_index} ({interp.end_name}) are encoded to
{analysis.format_point(interp.z_start)} and {analysis.format_point(interp.z_end)}; ten points on the segment
between the codes (endpoints included) are decoded{interp_class}. The originals stand at the two ends.

![interpolation]({img["interpolation"]})

{analysis.points_markdown(interp.points)}

The path on the latent map:

![interpolation path]({img["interpolation_path"]})

{_diagnostics_section(run, figures, img)}"""
    return section, live


def _samples_caption(run: Run, drawn, sampler: str) -> str:
    """What the sample grid draws from: the prior, or the sampler fitted after training (vaelab.analysis.samplers)."""
    if drawn is None:
        return f"Twenty draws from the prior {run.models.prior().name}"
    return (
        f"Twenty draws from {drawn.name} (`--sampler {sampler}`), fitted after training to the posterior means of the "
        "training images, not the model's prior (`vaelab.analysis.samplers`)"
    )


def _code_section(run: Run, data: Dataset, fig_dir: Path, out: Path) -> str:
    """A vqvae run's section: its code table, reconstructions, uniform prior draws, bound and codebook usage.

    A vqvae's codes are codebook indices, so the Gaussian parts (latent map, manifold, interpolation, latent
    diagnostics, live map) have nothing to show; the section says so rather than leaving them out silently."""
    title, what = PARTS.get(run.config.preset, (run.config.preset, run.config.preset))
    model, word = run.config.model, data.class_word
    length, k = model.latent_dim, model.codebook_size
    figures = draw_run_figures(run, data, fig_dir, parts=("encode", "generate", "diagnose"))
    img = {name: _rel(path, out) for name, path in figures.files.items()}
    table = (
        f"""The first test image of each {word} and its codes:

{analysis.code_table_markdown(figures.code_table, word)}

![{word} table of {run.config.preset}]({img["code_table"]})"""
        if figures.code_table
        else f"{data.title} has no class labels, so there is no table of classes."
    )
    return f"""## {title}

Preset `{run.config.preset}`: {what}, as a vqvae; trained {epochs_in_words(run.epoch)} (run `{run.path}`). The encoder
ends in L = {length} code vectors of {CODE_DIM} numbers, each replaced by the nearest of the K = {k} codebook vectors;
the decoder reads those. {_test_sentence(run)}

### (c) The encoder: each image's codes

A vqvae's code for an image is L = {length} indices into the codebook: one point, not a Gaussian. So there is no
map of means and σ (part (c)), no grid of Gaussian quantiles to decode (d) and no segment between two codes to
interpolate along (e). {table}

One test image per {word} (top) and its reconstruction, its codes decoded (bottom):

![reconstructions]({img["reconstruction"]})

### (d) The generator: codes drawn from the prior

{_code_prior(run, img, k, length)}

{_code_usage(run, img)}

{_snapshots(figures, img)}"""


def _code_prior(run: Run, img: dict[str, str], k: int, length: int) -> str:
    """What a vqvae's samples are drawn from: its learned prior over codes (`vaelab train-prior`), or the uniform."""
    from vaelab.analysis.code_prior import load_prior, uniform_nll

    prior = load_prior(run)
    if prior is None:
        return f"""The prior over the codes is uniform over all K^L = {k}^{length} combinations (this run has no
learned prior: `vaelab train-prior {run.path}` fits one). Twenty draws of L indices, each uniform over
0 … {k - 1}, decoded, each image under its codes:

![prior samples]({img["samples"]})

The encoder's codes are far from uniform over the combinations (the codebook's use below), so these draws show the
decoder on arbitrary combinations rather than samples of the data's distribution."""
    best = min(prior.history, key=lambda row: row["val_nll"])
    return f"""As van den Oord et al. fit a PixelCNN over the codes after training, this run has a learned prior
over them, p(z) = ∏ p(c_i | c_<i): an autoregressive network over the L = {length} positions
(`vaelab.analysis.code_prior`), trained on the codes of the training images for
{epochs_in_words(len(prior.history))}, kept at the epoch where their held-out tenth's −log p(z) was lowest
({best["val_nll"]:.2f} nats per image, against L log K = {length} log {k} = {uniform_nll(run):.2f} under the uniform
prior). Twenty draws from it, position after position, decoded, each image under its codes:

![prior samples]({img["samples"]})"""


def _code_usage(run: Run, img: dict[str, str]) -> str:
    """A vqvae's bound on log p(x) under the uniform prior over codes, and how much of its codebook it uses."""
    model, evaluation = run.config.model, run.metrics.get("evaluation")
    length, k = model.latent_dim, model.codebook_size
    last = run.history[-1] if run.history else {}
    training = (
        f" In the last epoch of training the perplexity of each batch's codes averaged {last['perplexity']:.1f} "
        f"(validation: {last['val_perplexity']:.1f}), a figure of one batch at a time, not of the whole test set."
        if "perplexity" in last and "val_perplexity" in last
        else ""
    )
    if not evaluation:
        return f"""### The bound and the codebook's use

This run has not been evaluated (`vaelab evaluate {run.path}`).{training}

![codebook usage]({img["code_usage"]})"""
    return f"""### The bound and the codebook's use

On {evaluation["images"]:,} test images, {evaluation["bound"]} ≥ ELBO = IWAE bound = {evaluation["elbo"]:.2f} nats
per image, i.e. NLL ≤ {evaluation["nll"]:.2f}{_bits(evaluation, ".4f", " ({} bits/dim)")}: −reconstruction
{evaluation["reconstruction_loss"]:.2f} − KL, where KL = L log K = {length} log {k} = {evaluation["kl_loss"]:.2f}
for every image. q(z|x) is one point, the nearest codes, so the importance-weighted bound draws the same codes
every time and equals the ELBO.

{_prior_bound(evaluation)}The test images' codes use {evaluation["codes_used"]} of the {k} codebook vectors, with
perplexity {evaluation["perplexity"]:.1f} (the exponential of the entropy of their frequencies: {k} if all were used
alike, 1 for a single one).{training}

![codebook usage]({img["code_usage"]})"""


def _prior_bound(evaluation: dict) -> str:
    """The bound with the run's learned prior over codes, beside the uniform one (a paragraph), where it has one."""
    if "prior_elbo" not in evaluation:
        return ""
    gain = evaluation["prior_elbo"] - evaluation["elbo"]
    return f"""With the learned prior over codes the bound is log p(x) ≥ log p(x|z_q) + log p(z_q) =
{evaluation["prior_elbo"]:.2f} nats per image: −reconstruction {evaluation["reconstruction_loss"]:.2f} − KL, where
now KL = −log p(z_q) = {evaluation["prior_kl"]:.2f} on average, {abs(gain):.2f} nats {"above" if gain >= 0 else "below"}
the uniform prior's {evaluation["elbo"]:.2f}.

"""


def _test_sentence(run: Run) -> str:
    """The run's final test figures: the loss, and for β or warm-up the objective beside the true ELBO."""
    test, train = run.metrics["test"], run.config.train
    if not run.config.model.member.gaussian_latent:
        line = run.config.model.member.test_line(run.config.model, test)
        return f"Test figures per image: {line} (= reconstruction + L log K)."
    recon, kl = test["reconstruction_loss"], test["kl_loss"]
    if train.beta == 1 and not train.kl_warmup:
        return f"Test loss {test['loss']:.2f} nats per image = reconstruction {recon:.2f} + KL {kl:.2f}."
    return (
        f"Trained with β = {train.beta:g} and a KL warm-up of {epochs_in_words(train.kl_warmup)}: the final test "
        f"objective is "
        f"{test['loss']:.2f} nats per image = reconstruction {recon:.2f} + {test.get('kl_weight', 1):g} × KL {kl:.2f};"
        f" the true negative ELBO (KL weight 1) is {recon + kl:.2f}."
    )


def _diagnostics_section(run: Run, figures, img: dict[str, str]) -> str:
    """Reconstructions, which latent dimensions are used (active units, KL per dimension), traversal, snapshots."""
    latent = figures.latent
    dim = len(latent.kl_per_dim)
    kl_cells = " | ".join(f"{k:.2f}" for k in latent.kl_per_dim)
    act_cells = " | ".join(f"{a:.3g}" for a in latent.activity)
    table = (
        f"""| dimension | {" | ".join(str(j) for j in range(dim))} |
|---|{"---:|" * dim}
| KL, nats | {kl_cells} |
| activity | {act_cells} |

"""
        if dim <= 10
        else ""
    )
    traversal = (
        f"""Each latent dimension swept from −2.5 to 2.5 with the others at the prior's mean 0, one row per dimension
(inactive dimensions change nothing):

![traversal]({img["traversal"]})

"""
        if "traversal" in img
        else ""
    )
    return f"""### Diagnostics: reconstructions and the latent dimensions

One test image per class (top) and its reconstruction, the decoded `z_mean` (bottom):

![reconstructions]({img["reconstruction"]})

{latent.active_units} of {dim} latent dimensions are active (Burda et al.'s criterion: the variance over the test
set of the encoder's mean, Cov_x(E_q[z_j]), above 0.01). The KL term splits over the dimensions
(mean over the test set, nats; they sum to {latent.kl_per_dim.sum():.2f}):

{table}![KL and activity per latent dimension]({img["latent_kl"]})

{traversal}{_snapshots(figures, img)}"""


def _snapshots(figures, img: dict[str, str]) -> str:
    """The training snapshots' strip, or why there is none."""
    if "snapshots" not in img:
        return "This run has no training snapshots (trained before they existed, or with `--no-snapshots`)."
    return f"""How training went: after every epoch, vaelab decoded the same test images and the same prior draws
(`snapshots.npz`); epochs {", ".join(str(e) for e in figures.snapshot_epochs)}:

![training snapshots]({img["snapshots"]})"""


def _comparison(runs: list[Run], data: Dataset, figures: Path, out: Path) -> str:
    codes = not runs[0].config.model.member.gaussian_latent  # the report trains one family on every network
    lines = [
        f"| preset | test {'objective | reconstruction | commitment' if codes else 'loss | reconstruction | KL'} "
        "| ELBO | IWAE bound | bits/dim "
        f"| {'codes used' if codes else 'active units'} | parameters | epochs | training time | s/epoch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    samples = set()
    for run in runs:
        test = run.metrics["test"]
        evaluation = run.metrics.get("evaluation", {})
        samples.add(evaluation.get("samples"))
        seconds = [row["seconds"] for row in run.history]
        per_epoch = statistics.median(seconds[1:] or seconds)
        lines.append(
            f"| `{run.config.preset}` | {test['loss']:.2f} | {test['reconstruction_loss']:.2f} "
            f"| {test['commitment_loss' if codes else 'kl_loss']:.2f} "
            f"| {evaluation.get('elbo', float('nan')):.2f} | {evaluation.get('iwae', float('nan')):.2f} "
            f"| {_bits(evaluation, '.3f', '{}') or '–'} | {_usage(run)} | {parameter_count(run.vae):,} "
            f"| {run.epoch} | {run.metrics['train_seconds']:.0f} s | {per_epoch:.2f} |"
        )
    k = ", ".join(str(s) for s in sorted(samples, key=str))
    images = _scored_phrase(runs, data)
    curves = figures / "training_curves.png"
    plots.save(plots.plot_history({run.config.preset: run.history for run in runs}), curves)
    count = {2: "two ", 3: "three "}.get(len(runs), "")
    bound = runs[0].config.model.bound  # the report trains one family on every network
    return f"""## Comparison of the {count}networks

{_code_figures_note(images, bound) if codes else _figures_note(images, k, bound, runs[0].config.model)}
{_likelihood_note(runs[0])} Training time is the sum of the epochs' wall times, as recorded in each
run's `history.csv`; s/epoch is their median after the first.

{chr(10).join(lines)}

![training curves]({_rel(curves, out)})"""


def _disentanglement_section(runs: list[Run], data: Dataset) -> str:
    """The runs' disentanglement metrics against the data's known factors, from their metrics.json."""
    names = data.factors.names
    lines = [
        "| preset | MIG | DCI disentanglement | DCI completeness | DCI informativeness | FactorVAE score | SAP | "
        + " | ".join(f"MIG {n}" for n in names)
        + " |",
        "|---|" + "---:|" * (6 + len(names)),
    ]
    for run in runs:
        r = run.metrics.get("disentanglement")
        if r is None:
            lines.append(f"| `{run.config.preset}` |" + " – |" * (6 + len(names)))
            continue
        cells = [r["mig"], r["dci_disentanglement"], r["dci_completeness"], r["dci_informativeness"],
                 r["factorvae_score"], r["sap"], *r["mig_per_factor"]]  # fmt: skip
        lines.append(f"| `{run.config.preset}` | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    kinds = ", ".join(f"{n} ({'categorical' if c else 'ordinal'})" for n, c in zip(names, data.factors.categorical,
                                                                                     strict=True))  # fmt: skip
    return f"""## Disentanglement

{data.title}'s test images come with their factors of variation: {kinds}. Each run's codes (z_mean) of the
test images are scored against them (`vaelab.analysis.disentanglement`; 0 to 1, higher is more disentangled): MIG,
the gap in mutual information between the two codes that know most about a factor, over its entropy
(Chen et al., 2018; codes cut into 20 equal-width bins); DCI's disentanglement, completeness and
informativeness (Eastwood & Williams, 2018; lasso importances, held-out R²); the FactorVAE score (Kim &
Mnih, 2018; chance is {1 / len(names):.2f}); and SAP (Kumar et al., 2018).

{chr(10).join(lines)}"""


def _usage(run: Run) -> str:
    """How much of its latent space the run uses: active units of latent_dim, or a vqvae's codebook vectors used."""
    evaluation, model = run.metrics.get("evaluation", {}), run.config.model
    if not model.member.gaussian_latent:
        perplexity = f" (perplexity {evaluation['perplexity']:.1f})" if "perplexity" in evaluation else ""
        return f"{evaluation.get('codes_used', '–')} of {model.codebook_size}{perplexity}"
    return f"{evaluation.get('active_units', '–')} of {model.latent_dim}"


def _figures_note(images: str, k: str, bound: str, model: ModelConfig) -> str:
    """What the comparison's columns mean for a Gaussian latent space."""
    return f"""Test-set figures after the last epoch, in nats per image: the loss is {model.member.loss_note(model)}
(lower is better).
ELBO and IWAE bound come from `vaelab evaluate` on {images} test images: the ELBO with its expectation estimated
from K = {k} samples per image, and the importance-weighted lower bound on {bound} with the same K samples
(higher is better; it is never below the ELBO); bits/dim is that bound's NLL in bits per pixel value."""


def _code_figures_note(images: str, bound: str) -> str:
    """What the comparison's columns mean for a vqvae."""
    from vaelab.models.vqvae import COMMITMENT

    return f"""Test-set figures after the last epoch, per image: the objective is the vqvae's training objective,
reconstruction (nats) + {COMMITMENT:g} × commitment (lower is better), and the commitment is the squared distance
from the encoder's vectors to their codes (not nats: the vqvae has no KL term). ELBO and IWAE bound come from
`vaelab evaluate` on {images} test images and are one number, −reconstruction − L log K nats, the bound on
{bound} (higher is better): q is one point, so every importance sample is the same. bits/dim is that bound's NLL
in bits per pixel value; codes used counts the codebook vectors the test images' codes use, with their perplexity."""


def _likelihood_note(run: Run) -> str:
    """What the bounds of the run's likelihood can be compared with."""
    return likelihood_note(run.config.model.pixel_likelihood, run.config.train.binarize)


def _bits(evaluation: dict, spec: str, template: str) -> str:
    """The evaluation's bits/dim formatted into `template`, or "" where it has none (a density on binary pixels)."""
    value = evaluation.get("bits_per_dim")
    return "" if value is None else template.format(format(value, spec))


def _kl_section() -> str:
    from vaelab.models.kl import gaussian_kl_sigmas, kl_by_integration

    text = importlib.resources.files("vaelab").joinpath("resources/kl-divergence.md").read_text(encoding="utf-8")
    body = text.split("\n", 1)[1]  # drop the document's own title
    body = body.replace("\n## ", "\n### ")
    lines = [
        "| μ1 | σ1 | μ2 | σ2 | closed form (vaelab.models.kl) | numerical integration | relative difference |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mu1, s1, mu2, s2 in KL_CHECKS:
        closed = float(gaussian_kl_sigmas(mu1, s1, mu2, s2))
        numeric = kl_by_integration(mu1, s1, mu2, s2)
        diff = abs(closed - numeric) / abs(closed)
        lines.append(f"| {mu1:g} | {s1:g} | {mu2:g} | {s2:g} | {closed:.12g} | {numeric:.12g} | {diff:.1e} |")
    return f"""## Question 2: the KL divergence of two normal distributions
{body.rstrip()}

### A numerical check

The closed form as vaelab computes it, beside the definition integrated numerically (Simpson's rule):

{chr(10).join(lines)}"""
