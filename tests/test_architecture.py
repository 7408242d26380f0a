"""The package's shape: imports go down the layers that pyproject.toml's [tool.importlinter] names, in no circle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_imports_keep_to_the_layers_and_make_no_circle():
    lint_imports = Path(sys.executable).with_name("lint-imports")  # installed with the test extra, beside python
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # On failure lint-imports names each import that breaks a contract, with its file's line.
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
