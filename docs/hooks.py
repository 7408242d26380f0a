"""mkdocs hooks: the pages made from a single source elsewhere, at build time (mkdocs.yml lists this file).

- index.md is README.md, its links into docs/ made relative to the site;
- kl-divergence.md is the package's resource, src/vaelab/resources/kl-divergence.md, the text the report embeds;
- cli.md gets every command's `--help`, from `vaelab.cli.build_parser()`, where its marker line stands.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).parents[1]
CLI_MARKER = "<!-- vaelab-cli-reference: docs/hooks.py puts every command's --help here -->"
HELP_COLUMNS = "100"  # argparse wraps to $COLUMNS: a fixed width, so the page does not depend on the terminal


def on_files(files, config):
    readme = (ROOT / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")
    kl = importlib.resources.files("vaelab").joinpath("resources/kl-divergence.md").read_text(encoding="utf-8")
    for name, text in (("index.md", readme), ("kl-divergence.md", kl)):
        if files.get_file_from_path(name) is not None:
            raise SystemExit(f"docs/{name} is made from its source at build time; remove the copy in docs/")
        files.append(File.generated(config, name, content=text))
    return files


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER not in markdown:
        return markdown
    return markdown.replace(CLI_MARKER, command_reference())


def command_reference() -> str:
    """Every command's help, as `vaelab COMMAND --help` prints it, one section each."""
    from vaelab.cli import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        parser = build_parser()
        sections = [_section("vaelab", parser)]
        sections += [_section(name, p) for name, p in _commands(parser, "vaelab")]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n\n".join(sections)


def _commands(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _commands(sub, f"{prefix} {name}")


def _section(name: str, parser: argparse.ArgumentParser) -> str:
    return f"### `{name}`\n\n```text\n{parser.format_help().rstrip()}\n```"
