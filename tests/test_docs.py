"""The documentation: the README's two commands, and the site (mkdocs.yml) building with every link checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RUN_THE_REPORT = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/vaelab report"
RUN_THE_TESTS = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"


def test_the_readmes_first_commands_install_and_run_the_report_then_the_tests_as_ci_does():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    assert blocks[:2] == [RUN_THE_REPORT, RUN_THE_TESTS]
    assert (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith(RUN_THE_TESTS)


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    """Every page, link and anchor resolves, the API reference renders from the docstrings, and the command
    reference comes from the parser (mkdocs --strict turns every warning into a failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # no advertisement in the output
    )
    assert done.returncode == 0, done.stderr[-4000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "usage: vaelab train" in cli and "usage: vaelab data convert" in cli
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "load_dataset" in api and "doc-object" in api
    kl = (tmp_path / "site" / "kl-divergence" / "index.html").read_text(encoding="utf-8")
    assert "The KL divergence of two normal distributions" in kl
