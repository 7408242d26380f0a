"""The published rows' run directories committed in benchmarks/published (docs/published-results.md): each is the run
`benchmarks/reproduce.py` makes for its row, so that the script reuses or resumes it (the .lock a process writes
there is never committed: .gitignore); an unfinished one can resume (its optimizer's state is there); a finished one
holds its final files, its K = 5000 evaluation on all 10,000 test images within 1 nat of the paper (or better than
the paper by more, which the tables then say), the weights that evaluation was made with, and the tables of the README
and of docs/published-results.md quote its figure."""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import statistics
import sys
from pathlib import Path

import pytest

from vaelab.analysis.evaluate import evaluate
from vaelab.run import (
    RunConfig,
    has_optimizer_state,
    load_run,
    read_history,
    read_info,
    read_metrics,
    run_is_complete,
)

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
README = BENCHMARKS.parent / "README.md"
PUBLISHED_DOC = BENCHMARKS.parent / "docs" / "published-results.md"
ROW_DIRS = sorted(path for path in (BENCHMARKS / "published").iterdir() if path.is_dir())
FINISHED = [path for path in ROW_DIRS if run_is_complete(path)]


@functools.cache
def reproduce():
    """benchmarks/reproduce.py as a module."""
    spec = importlib.util.spec_from_file_location("reproduce", BENCHMARKS / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def name_of(path: Path) -> tuple[str, int, int]:
    """(the row's name, the epochs, the seed) that reproduce.py names `path` after: `{row}-{epochs}ep-seed{seed}`."""
    name, epochs, seed = re.fullmatch(r"(.+)-(\d+)ep-seed(\d+)", path.name).groups()
    return name, int(epochs), int(seed)


def row_of(path: Path):
    """(the row, the epochs, the seed) of `path`."""
    name, epochs, seed = name_of(path)
    return reproduce().ROWS[name], epochs, seed


def table_cells(document: Path, name: str) -> list[str]:
    """The cells of the row named `name` in the first markdown table of `document` that has one (where each row
    stands; docs/published-results.md has the first pass's table after it), without their emphasis."""
    line = next((line for line in document.read_text().splitlines() if line.startswith(f"| {name} |")), None)
    assert line, f"{document.name} has no table row for {name}"
    return [cell.strip().replace("*", "").replace("−", "-") for cell in line.strip("|").split("|")]


def test_there_is_a_finished_row():
    assert FINISHED, "benchmarks/published holds no finished row"


@pytest.mark.parametrize("path", ROW_DIRS, ids=lambda path: path.name)
def test_a_committed_row_is_the_run_its_row_makes(path, mnist):
    row, epochs, seed = row_of(path)
    info = read_info(path)
    assert info["data_sha256"] == mnist.sha256
    made = reproduce().config_of(row, epochs, seed)
    assert RunConfig.from_dict(info["config"]).for_data(mnist) == made.for_data(mnist)
    if path not in FINISHED:  # resumed by the next sitting, exactly: Adam's slots and step are there
        assert has_optimizer_state(path)


@pytest.mark.parametrize("path", FINISHED, ids=lambda path: path.name)
def test_a_finished_row_is_within_1_nat_of_its_paper_with_the_weights_it_was_evaluated_with(path, mnist):
    row, _, _ = row_of(path)
    evaluation = read_metrics(path)["evaluation"]
    assert (evaluation["samples"], evaluation["images"], evaluation["bound"]) == (5000, 10_000, "log p(x)")
    assert evaluation["nll"] - row.nll <= reproduce().GOAL  # or better than the paper by more: the tables say so
    assert not has_optimizer_state(path)  # final files only
    # The bound with K = 10 on all 10,000 images lies between the ELBO and the K = 5000 bound of the saved evaluation:
    # the committed weights are the evaluated ones (an untrained network's would be hundreds of nats off).
    quick = evaluate(load_run(path), mnist, samples=10)
    assert evaluation["nll"] < quick.nll < -evaluation["elbo"] + 0.1
    assert quick.elbo == pytest.approx(evaluation["elbo"], abs=0.1)


@pytest.mark.parametrize("document", [README, PUBLISHED_DOC], ids=lambda document: document.name)
@pytest.mark.parametrize("path", FINISHED, ids=lambda path: path.name)
def test_the_readme_and_the_docs_quote_a_finished_rows_evaluation(path, document):
    row, epochs, _ = row_of(path)  # the epochs its directory is named after: the schedule it ran, whole
    nll = read_metrics(path)["evaluation"]["nll"]
    gap = round(nll, 2) - row.nll  # as the tables give it: from the NLL they quote
    cells = table_cells(document, name_of(path)[0])
    assert any(cell.startswith(f"{nll:.2f}") for cell in cells)
    assert f"{row.nll:.2f}" in cells
    assert f"{epochs:,} of {epochs:,}" in cells
    assert f"{gap:+.2f}" in cells
    # better than its paper by more than the goal: said so, and not counted
    assert (f"no: {-gap:.2f} nats better" if gap < -reproduce().GOAL else "yes") in cells
    assert not any(words in cell for cell in cells for words in ("so far", "not yet", "in progress"))


def test_the_status_of_every_row_is_read_without_training(mnist):
    saved_before = [read_metrics(path) for path in ROW_DIRS]
    table = reproduce().status(BENCHMARKS / "published", samples=2, images=10).splitlines()
    assert len(table) == 2 + len(ROW_DIRS)
    for path, line, saved in zip(ROW_DIRS, table[2:], saved_before, strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        history, epochs = read_history(path), read_info(path)["config"]["train"]["epochs"]
        assert cells[0] == path.name
        assert cells[1] == f"{len(history):,} of {epochs:,}"
        seconds = [row["seconds"] for row in history]
        pace = statistics.median(seconds[-reproduce().PACE_EPOCHS :])
        assert cells[2:5] == [
            f"{sum(seconds) / 3600:.1f} h",
            f"{pace:.1f}",
            f"{(epochs - len(history)) * pace / 3600:.1f} h",
        ]
        assert cells[5] == f"{-history[-1]['val_elbo_loss']:.2f}"  # the test ELBO logged after the last epoch
        evaluation = saved.get("evaluation")
        assert cells[6] == (f"{evaluation['nll']:.2f} (K = 5000, 10,000 images)" if evaluation else "–")
        # the weights as they are, evaluated as `evaluate` does with the same draws, and not saved in the run
        now = evaluate(load_run(path), mnist, samples=2, images=10)
        assert cells[7] == f"{now.nll:.2f} (epoch {len(history):,}, 10 images)"
        assert read_metrics(path) == saved


def test_the_status_of_a_row_that_has_not_trained_an_epoch(tmp_path):
    started = tmp_path / FINISHED[0].name
    started.mkdir()
    shutil.copy(FINISHED[0] / "config.json", started)  # as a row is before its first epoch ends
    table = reproduce().status(tmp_path, samples=2, images=10).splitlines()
    assert table[0].startswith("| run | epochs | training | s/epoch (last 20) |")
    epochs = read_info(started)["config"]["train"]["epochs"]
    assert table[2] == f"| {started.name} | 0 of {epochs:,} | 0.0 h | – | – | – | – | – |"
