"""Markdown -> one self-contained HTML page: figures inlined, maths rendered to SVG, no network needed.

Maths (`$...$` inline, `$$...$$` on its own line) is typeset with Matplotlib's mathtext in
Computer Modern, so the page needs neither a TeX installation nor a script from the web.

Live latent maps: where the Markdown holds LIVE_MARKER for a run, the page gets that run's map
decoding in the browser (the explorer's scripts, static/nn.js and latentmap.js, with its generator's
weights embedded), shown only when scripts run; the static figures stay for print and scripts off.
The page's Content-Security-Policy forbids every connection (vaelab.explore.webpage).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import re
from pathlib import Path

import markdown
import markdown.extensions.tables
import matplotlib
from matplotlib.figure import Figure

from vaelab.explore import webpage

DISPLAY_MATH = re.compile(r"^\$\$(.+?)\$\$\s*$", re.MULTILINE)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)([^$\n]+?)\$")
IMAGE = re.compile(r'<img alt="([^"]*)" src="([^":]+)"')
LIVE_MARKER = "<!-- live latent map: {name} -->"  # in report.md; replaced by the live map in index.html
LIVE_SCRIPTS = ("nn.js", "latentmap.js", "report.js")

STYLE = """
body { font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b;
       max-width: 1100px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.9em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.45em; margin-top: 2.2em; border-bottom: 1px solid #e5e5e5; padding-bottom: .2em; }
h3 { font-size: 1.15em; margin-top: 1.6em; }
img { max-width: 100%; height: auto; }
img.math-inline { vertical-align: middle; }
div.math-display { text-align: center; margin: 1em 0; overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #d0d0d0; padding: .3em .7em; }
th { background: #f4f4f4; }
.hint { color: #555; font-size: .9em; }
code { background: #f3f3f3; padding: .1em .3em; border-radius: 3px; font-size: .92em; }
.live { border: 1px solid #d8d8d8; border-radius: 6px; padding: .8em 1em; background: #fcfcfc; margin: 1em 0; }
.live[hidden] { display: none; }
.live h4 { margin: 0 0 .5em; }
.live-row { display: flex; gap: 1em; align-items: flex-start; flex-wrap: wrap; }
.live-map { border: 1px solid #ccc; cursor: crosshair; background: #fff; touch-action: none; }
.legend { list-style: none; padding: 0; margin: 0; font-size: .9em; }
.legend li { display: flex; align-items: center; gap: .4em; }
.legend .swatch { width: .9em; height: .9em; border-radius: 50%; display: inline-block; }
canvas.digit { image-rendering: pixelated; border: 1px solid #ccc; background: #fff; object-fit: contain; }
.live-decoded { width: 112px; height: 112px; }
.live-strip { display: flex; gap: 4px; flex-wrap: wrap; min-height: 60px; margin-top: .6em; }
.live-strip canvas { width: 56px; height: 56px; }
.coords { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; color: #333; margin-top: .3em; }
@media print { .live { display: none; } }
"""


@functools.lru_cache(maxsize=1024)
def render_math(tex: str, display: bool) -> str:
    """`tex` typeset as an <img> holding an SVG (the TeX source stays as its alt text). The same formula gives the same
    bytes, so each is typeset once per process (Matplotlib's mathtext takes about 0.1 s a formula)."""
    with matplotlib.rc_context({"mathtext.fontset": "cm", "svg.hashsalt": "vaelab", "svg.fonttype": "path"}):
        fig = Figure()
        fig.text(0, 0, f"${tex}$", fontsize=17 if display else 15)
        buf = io.BytesIO()
        fig.savefig(
            buf,
            format="svg",
            bbox_inches="tight",
            pad_inches=0.02,
            transparent=True,
            metadata={"Date": None, "Creator": None},
        )
    svg = base64.b64encode(buf.getvalue()).decode("ascii")
    cls = "math-display" if display else "math-inline"
    img = f'<img class="{cls}" alt="{html.escape(tex)}" src="data:image/svg+xml;base64,{svg}">'
    return f'<div class="math-display">{img}</div>' if display else img


def live_map(name: str, block: str) -> str:
    """The live latent map of run `name`: hidden until the script shows it; `block` is its JSON data block holding
    the map (explore.pagedata.latent_map) and the generator (explore.export.fitting_block)."""
    return f"""<div class="live" hidden>
<h4>Live: the latent map decoded in this page</h4>
<p class="hint">Move over the map: the image decoded at that point appears beside it. Click two points for
a 10-step interpolation. Wheel: zoom; drag: pan; double-click: reset.</p>
<div class="live-row">
<canvas class="live-map" width="560" height="440" aria-label="live latent map of {html.escape(name)}"></canvas>
<ul class="legend"></ul>
<div><canvas class="digit live-decoded"></canvas><div class="coords live-z">–</div></div>
</div>
<div class="live-strip"></div>
<div class="coords live-strip-info"></div>
{block}
</div>"""


def markdown_to_html(text: str, *, base_dir: Path, title: str, live: dict[str, str] | None = None) -> str:
    """Converts the report's Markdown to a standalone HTML page; image paths are read from `base_dir`.

    `live` maps a run name to the data block of its live latent map (`live_map`), put where LIVE_MARKER names it.
    """
    rendered: list[str] = []

    def stash(fragment: str) -> str:
        rendered.append(fragment)
        return f"@@MATH{len(rendered) - 1}@@"

    text = DISPLAY_MATH.sub(lambda m: "\n" + stash(render_math(m.group(1).strip(), True)) + "\n", text)
    text = INLINE_MATH.sub(lambda m: stash(render_math(m.group(1).strip(), False)), text)
    tables = markdown.extensions.tables.TableExtension(use_align_attribute=True)  # no style attributes: CSP
    body = markdown.markdown(text, extensions=[tables, "fenced_code"], output_format="html")
    body = re.sub(r"<p>(@@MATH\d+@@)</p>", r"\1", body)  # a display formula is a block, not a paragraph
    body = re.sub(r"@@MATH(\d+)@@", lambda m: rendered[int(m.group(1))], body)
    body = IMAGE.sub(lambda m: f'<img alt="{m.group(1)}" src="{_data_uri(base_dir / m.group(2))}"', body)
    for name, block in (live or {}).items():
        body = body.replace(LIVE_MARKER.format(name=name), live_map(name, block))
    scripts = [webpage.asset(name) for name in LIVE_SCRIPTS] if live else []
    return webpage.standalone_page(title=title, body=body, styles=[STYLE], scripts=scripts)


def _data_uri(path: Path) -> str:
    kind = {".png": "image/png", ".svg": "image/svg+xml"}[path.suffix]
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
