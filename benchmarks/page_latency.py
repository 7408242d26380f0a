"""Decoding in the page: how long a visitor waits for the first image, and for each hover, in Chromium.

    python benchmarks/page_latency.py RUN [RUN ...] [--loads 5] [--hovers 500] [--report report/index.html]

For each run, the exported explorer page holding only that run (`vaelab explore RUN --export`) is
opened from file:// with the network blocked, `--loads` times:

- first decode: from the start of navigation to the first decoded image painted (the page marks it;
  this includes reading the page, parsing its data and decoding the weights);
- hover: one pointer position handled as the map handles a pointer move (map redrawn, point decoded,
  image painted), timed inside the page over `--hovers` random positions on the map;
- the page's decoder against the Keras generator (float32 weights) on 1000 prior draws: the largest
  difference in any pixel, which is the cost of float16 weights where the page holds them.

With `--report`, also the report page: when its first and its last live map showed a decoded image.

Prints Markdown tables. Needs Chromium at /usr/bin/chromium and Playwright (the test extras).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from _common import table

from vaelab.run import machine

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

HOVERS = """(n) => {
  const live = vaelabExplorer.live, canvas = document.getElementById("map");
  const times = [];
  for (let k = 0; k < n; k++) {
    const [x, y] = [Math.random() * canvas.width, Math.random() * canvas.height];
    const t = performance.now();
    live.hoverAt(x, y);
    times.push(performance.now() - t);
  }
  return times;
}"""


def measure(browser, url: str, loads: int, hovers: int) -> tuple[list[float], list[float]]:
    first, hover = [], []
    for _ in range(loads):
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.route("**/*", lambda r: r.continue_() if r.request.url == url else r.abort())
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=60000)
        first.append(page.evaluate("performance.getEntriesByName('vaelab-first-decode')[0].startTime"))
        hover += page.evaluate(HOVERS, hovers)
        page.close()
    return first, hover


def report_first_decodes(browser, url: str, loads: int) -> tuple[list[float], list[float]]:
    """ms from navigation to the first and to the last live map's first decoded image, per page load."""
    first, last = [], []
    for _ in range(loads):
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.route("**/*", lambda r: r.continue_() if r.request.url == url else r.abort())
        page.goto(url)
        page.wait_for_function("window.vaelabReport !== undefined", timeout=60000)
        marks = page.evaluate("performance.getEntriesByName('vaelab-first-decode').map((e) => e.startTime)")
        first.append(min(marks))
        last.append(max(marks))
        page.close()
    return first, last


def largest_difference(browser, url: str, run, points: int = 1000) -> float:
    z = np.random.default_rng(0).standard_normal((points, run.config.model.latent_dim)).astype(np.float32)
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=60000)
    got = page.evaluate("z => z.map((p) => Array.from(vaelabExplorer.live.decode(p)))", z.tolist())
    page.close()
    expected = np.asarray(run.generator.predict(z, verbose=0)).reshape(points, -1)
    return float(np.abs(np.array(got) - expected).max())


def main() -> None:
    from playwright.sync_api import sync_playwright

    from vaelab.data import fetch_mnist
    from vaelab.explore import load_runs
    from vaelab.explore.export import export

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--hovers", type=int, default=500)
    parser.add_argument("--report", type=Path, help="a report's index.html, to time its live maps too")
    args = parser.parse_args()

    data = fetch_mnist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        version = browser.version
        for k, run in enumerate(load_runs(args.runs)):
            path, (exported,) = export([run], data, Path(tmp) / str(k))
            url = path.as_uri()
            first, hover = measure(browser, url, args.loads, args.hovers)
            p50, p95 = np.percentile(hover, [50, 95])
            rows.append(
                [
                    f"{run.name} ({run.config.preset})",
                    f"{exported.bytes / 1e6:.2f} MB, {exported.dtype}",
                    f"{path.stat().st_size / 1e6:.2f} MB",
                    f"{statistics.median(first):.0f} ({min(first):.0f}–{max(first):.0f})",
                    f"{p50:.2f}",
                    f"{p95:.2f}",
                    f"{largest_difference(browser, url, run):.1e}",
                ]
            )
        if args.report:
            report = report_first_decodes(browser, args.report.resolve().as_uri(), args.loads)
        browser.close()
    print(f"machine: {machine()}; Chromium {version}, headless; {args.loads} page loads, {args.hovers} hovers each\n")
    header = ["run", "run's share of the page", "page", "first decode ms, median (range)", "hover p50 ms",
              "hover p95 ms", "largest pixel difference from Keras (float32)"]  # fmt: skip
    print(table(header, rows))
    if args.report:
        first, last = (f"{statistics.median(ms):.0f} ({min(ms):.0f}–{max(ms):.0f})" for ms in report)
        size = f"{args.report.stat().st_size / 1e6:.2f} MB"
        print()
        print(
            table(
                ["report", "size", "first map decoded, ms", "last map decoded, ms"],
                [[str(args.report), size, first, last]],
            )
        )


if __name__ == "__main__":
    main()
