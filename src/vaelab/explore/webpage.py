"""One self-contained HTML page: styles, scripts and data inline, and a policy that forbids any connection.

The report and the exported explorer are such pages. Each carries a Content-Security-Policy in a
meta tag: nothing may be fetched or connected to (`default-src 'none'`, `connect-src 'none'`), images
only from `data:` URIs, and only the page's own inline scripts and styles run, each allowed by its
SHA-256 hash (no 'unsafe-inline'). JSON data travels in `<script type="application/json">`
blocks, which browsers never execute.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from typing import Any

# `frame-ancestors` cannot be set from a meta tag (browsers ignore it there, with a console error); the
# served explorer sends it as a header.
POLICY = "default-src 'none'; img-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
NO_FAVICON = '<link rel="icon" href="data:,">'  # else a browser asks the server for /favicon.ico


def asset(name: str) -> str:
    """A file of the pages' shared static assets (vaelab/explore/static): scripts, styles, page markup."""
    return resources.files("vaelab.explore").joinpath("static", name).read_text(encoding="utf-8")


def source_hash(text: str) -> str:
    """The CSP source expression allowing exactly this inline script or style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(styles: list[str], scripts: list[str]) -> str:
    """POLICY, plus the hashes of the page's inline styles and scripts."""
    policy = POLICY
    if scripts:
        policy += "; script-src " + " ".join(source_hash(s) for s in scripts)
    if styles:
        policy += "; style-src " + " ".join(source_hash(s) for s in styles)
    return policy


def json_block(element_id: str, value: Any) -> str:
    """`value` as a JSON data block the page's scripts read with JSON.parse (never executed)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    text = text.replace("<", "\\u003c")  # no "</script>" or "<!--" can end the block early
    return f'<script type="application/json" id="{html.escape(element_id)}">{text}</script>'


def standalone_page(*, title: str, body: str, styles: list[str], scripts: list[str], lang: str = "en") -> str:
    """A complete HTML page: `body` (markup and data blocks), then `scripts` inline, in order."""
    for text, tag in [(s, "style") for s in styles] + [(s, "script") for s in scripts]:
        if f"</{tag}" in text.lower():
            raise ValueError(f"an inline {tag} may not contain </{tag}")
    policy = content_security_policy(styles, scripts)
    style_tags = "".join(f"<style>{s}</style>\n" for s in styles)
    script_tags = "".join(f"<script>{s}</script>\n" for s in scripts)
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(policy, quote=False)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{NO_FAVICON}\n<title>{html.escape(title)}</title>\n{style_tags}</head>\n<body>\n{body}\n{script_tags}"
        "</body>\n</html>\n"
    )
