"""`vaelab explore RUN ... --export DIR`: the explorer as one static page, DIR/index.html.

The page is the served explorer's own markup, styles and scripts (static/), inlined, with each run's
latent map (a vqvae's: its code grid) and networks embedded as JSON data blocks, so it decodes,
interpolates and encodes drawings in the browser with no server: it opens from file:// and can be put
on any static web server. A Content-Security-Policy forbids every connection (vaelab.explore.webpage).

A run's share of the page is kept within RUN_BUDGET_BYTES by the first of these that fits (EMBEDDINGS):
its generator and encoder with float32 weights; both as float16 (half the size; the decoded images
differ from float32 weights by the figure quoted in README.md); the generator alone as float16; the
generator alone as int8 with a scale per array (a quarter of float32: `webmodel`; the mlp's generator on
32x32x3 shapes decodes within 0.66 of a level of 255 of its float32 images, docs/colour.md). The
last two drop only the drawing pad, the one feature that needs the encoder (the page says so, and the
served explorer keeps it), rather than the budget: the convnet on 32x32 colour images holds 629,475
generator and 618,820 encoder numbers, and its share with 10,000 test images measured 6.86 MB as
float32, 3.53 MB as float16 and 1.88 MB as a float16 generator alone (a 0.20 MB latent map). Its
decoding, interpolation, map and class table need the generator only; a sketch on white paper is
far from colour photographs anyway. A run that fits none of them is exported in the last form with a
warning. The report's live maps follow the same rule (`fitting_block`) with the generator alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab._files import write_text
from vaelab.data import Dataset
from vaelab.explore import pagedata, webpage
from vaelab.run import Run

PAGE = "index.html"
RUN_BUDGET_BYTES = 2_000_000  # a run's share of the page: a course page that loads in a second or two
# (weights' dtype, encoder?), by preference
EMBEDDINGS = (("float32", True), ("float16", True), ("float16", False), ("int8", False))
SCRIPT_TAG = re.compile(r'<script src="static/([\w.-]+\.js)"></script>\n?')
STYLE_TAG = re.compile(r'<link rel="stylesheet" href="static/([\w.-]+\.css)">\n?')


@dataclass(frozen=True)
class ExportedRun:
    """What one run adds to the page."""

    name: str
    dtype: str  # of the embedded weights
    bytes: int
    encoder: bool = True  # whether the encoder is embedded (the drawing pad works)
    code_grid: bool = False  # a vqvae's page: a code grid, which needs no encoder


def explorer_page(data_blocks: list[str]) -> str:
    """The served explorer page (static/index.html) as one self-contained page holding `data_blocks`."""
    served = webpage.asset("index.html")
    title = re.search(r"<title>(.*?)</title>", served, re.S).group(1)
    body = re.search(r"<body>\n?(.*?)</body>", served, re.S).group(1)
    scripts = [webpage.asset(name) for name in SCRIPT_TAG.findall(body)]
    styles = [webpage.asset(name) for name in STYLE_TAG.findall(served)]
    body = SCRIPT_TAG.sub("", body).rstrip() + "\n" + "\n".join(data_blocks)
    return webpage.standalone_page(title=title, body=body, styles=styles, scripts=scripts)


def run_block(run_id: str, run: Run, data: Dataset) -> tuple[str, str, bool]:
    """The run's data block (its latent map and networks), the weights' dtype and whether the encoder is
    in it: the first of EMBEDDINGS that fits RUN_BUDGET_BYTES, else the last."""
    return fitting_block(f"vaelab-run-{run_id}", pagedata.page_map(run_id, run, data), run)


def fitting_block(
    element_id: str, page_map: dict[str, Any], run: Run, *, encoder: bool = True
) -> tuple[str, str, bool]:
    """The data block `element_id` holding {"map": page_map, "models": the run's networks} in the first of
    EMBEDDINGS whose block fits RUN_BUDGET_BYTES, else the last; the weights' dtype; whether the encoder is in it.

    The one rule of both pages: the exported explorer, and the report's live maps, which embed the generator alone
    (`encoder=False`: float32 where it fits, else float16, else int8).
    """
    choices = list(dict.fromkeys((dtype, with_encoder and encoder) for dtype, with_encoder in EMBEDDINGS))
    for dtype, with_encoder in choices:
        models = pagedata.models(run, dtype=dtype, encoder=with_encoder)
        block = webpage.json_block(element_id, {"map": page_map, "models": models})
        if len(block.encode()) <= RUN_BUDGET_BYTES:
            break
    return block, dtype, "encoder" in models


def export(
    runs: list[Run], data: Dataset, out: str | Path, *, log: Callable[[str], None] = lambda msg: None
) -> tuple[Path, list[ExportedRun]]:
    """Writes out/index.html for `runs`; returns its path and each run's share of it."""
    for run in runs:
        pagedata.check_run(run)
    blocks = [webpage.json_block("vaelab-runs", [pagedata.run_info(str(k), run) for k, run in enumerate(runs)])]
    exported = []
    for k, run in enumerate(runs):
        block, dtype, encoder = run_block(str(k), run, data)
        blocks.append(block)
        exported.append(ExportedRun(run.name, dtype, len(block.encode()), encoder, pagedata.is_vqvae(run)))
        if exported[-1].bytes > RUN_BUDGET_BYTES:
            log(
                f"vaelab explore: warning: {run.name} adds {exported[-1].bytes / 1e6:.1f} MB to the page even "
                "with its generator alone in int8; it will be slow to load"
            )
    path = Path(out) / PAGE
    write_text(path, explorer_page(blocks))  # a refusal of the file system is one line naming the file
    return path, exported
