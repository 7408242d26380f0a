"""The `vaelab` command's first lines: Ctrl-C is handled before the command line's imports (JAX, Keras).

The console script and `python -m vaelab` both start here, so that a Ctrl-C in the first second ends
the command with status 130 and one line (vaelab._interrupt) instead of a traceback from an import.
"""

from __future__ import annotations

from vaelab import _interrupt, _lean_imports


def main() -> int:
    """The `vaelab` command: installs the Ctrl-C handler, then imports and runs the command line."""
    _interrupt.leave_on_interrupt()
    _lean_imports.skip_keras_extras()
    from vaelab.cli import main as run_command_line

    return run_command_line()
