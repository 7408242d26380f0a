"""Markdown -> one self-contained HTML page: figures inlined, maths rendered to SVG, no network needed.

Maths (`$...$` inline, `$$...$$` on its own line) is typeset with Matplotlib's mathtext in
Computer Modern, so the page needs neither a TeX installation nor a script from the web.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import markdown
import matplotlib
from matplotlib.figure import Figure

DISPLAY_MATH = re.compile(r"^\$\$(.+?)\$\$\s*$", re.MULTILINE)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)([^$\n]+?)\$")
IMAGE = re.compile(r'<img alt="([^"]*)" src="([^":]+)"')

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
code { background: #f3f3f3; padding: .1em .3em; border-radius: 3px; font-size: .92em; }
"""


def render_math(tex: str, display: bool) -> str:
    """`tex` typeset as an <img> holding an SVG (the TeX source stays as its alt text)."""
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


def markdown_to_html(text: str, *, base_dir: Path, title: str) -> str:
    """Converts the report's Markdown to a standalone HTML page; image paths are read from `base_dir`."""
    rendered: list[str] = []

    def stash(fragment: str) -> str:
        rendered.append(fragment)
        return f"@@MATH{len(rendered) - 1}@@"

    text = DISPLAY_MATH.sub(lambda m: "\n" + stash(render_math(m.group(1).strip(), True)) + "\n", text)
    text = INLINE_MATH.sub(lambda m: stash(render_math(m.group(1).strip(), False)), text)
    body = markdown.markdown(text, extensions=["tables", "fenced_code"], output_format="html")
    body = re.sub(r"<p>(@@MATH\d+@@)</p>", r"\1", body)  # a display formula is a block, not a paragraph
    body = re.sub(r"@@MATH(\d+)@@", lambda m: rendered[int(m.group(1))], body)
    body = IMAGE.sub(lambda m: f'<img alt="{m.group(1)}" src="{_data_uri(base_dir / m.group(2))}"', body)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _data_uri(path: Path) -> str:
    kind = {".png": "image/png", ".svg": "image/svg+xml"}[path.suffix]
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
