"""Ctrl-C that stops work at a step boundary, never inside JAX/XLA.

Python's default SIGINT handler raises `KeyboardInterrupt` wherever the interpreter happens to be,
including inside JAX's compilation and garbage-collection hooks, which can leave XLA in a state
that crashes the process. Inside `stop_at_step_boundary()` the first Ctrl-C only sets a flag; the
training and evaluation loops call `check()` between steps and raise `Interrupted` there. A second
Ctrl-C leaves at once: in the command line with exit status 130 (files are written atomically, so
that loses nothing but the step in flight), in a notebook or other host through its own handler.

The command line is guarded from its first line too (`leave_on_interrupt`), before JAX is imported:
outside the step-boundary guard a Ctrl-C ends the command at once with status 130 and one line
(`leave`). It raises nothing: a `KeyboardInterrupt` raised there could land in JAX's import, an XLA
compilation or a callback from C (`_xla_gc_callback`, which prints "Exception ignored" and carries
on), and now and then the process then crashed as it exited (2 of 20 early Ctrl-Cs, SIGSEGV or
SIGABRT). Leaving with `os._exit` skips `finally` blocks and the interpreter's teardown; that loses
nothing a SIGKILL would not, since every file is written under a temporary name and renamed, and a
run stopped that way continues with `--resume`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

from vaelab.errors import Interrupted

_requested = threading.Event()
_depth = 0  # guards nest (the report trains inside its own guard); only the outermost installs the handler
_hard_exit = False  # set by the command line: a second Ctrl-C ends the process
_line = "vaelab: interrupted"  # what `leave` prints; the command line names its command once it knows it


def leave_on_interrupt() -> None:
    """For the command line, from its first line: a Ctrl-C outside `stop_at_step_boundary` ends the command
    at once with status 130 and one line, wherever it lands (see the module's docstring)."""
    signal.signal(signal.SIGINT, lambda signum, frame: leave())


def leave(line: str | None = None) -> NoReturn:
    """Ends the process now with Ctrl-C's status 130, after `line` on stderr (by default "vaelab COMMAND:
    interrupted", or "vaelab: interrupted" before the command is known; "" for none)."""
    line = _line if line is None else line
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if line:
        with contextlib.suppress(Exception):
            print(line, file=sys.stderr, flush=True)
    os._exit(Interrupted.exit_code)


def leave_at_once_on_second_interrupt(command: str | None = None, then: str = "") -> None:
    """For the command line: a second Ctrl-C exits with status 130 instead of raising somewhere in XLA; from
    here on `leave` names `command` in its line, and says `then`, what to do next, where the command has one."""
    global _hard_exit, _line
    _hard_exit = True
    if command:
        _line = f"vaelab {command}: interrupted" + (f"; {then}" if then else "")


def requested() -> bool:
    return _requested.is_set()


def check(message: str = "interrupted") -> None:
    """Raises `Interrupted(message)` if Ctrl-C was pressed since the guard began."""
    if _requested.is_set():
        raise Interrupted(message)


@contextlib.contextmanager
def stop_at_step_boundary() -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) requests a stop that `check()` turns into `Interrupted`.

    Outside the main thread signals cannot be caught, so the block changes nothing there. Blocks
    nest; the outermost one owns the handler.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        if _depth > 1:
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            if not _requested.is_set():
                _requested.set()
                print("\nvaelab: stopping after the current step (Ctrl-C again to leave at once)", file=sys.stderr)
                return
            if _hard_exit:
                leave()
            signal.signal(signal.SIGINT, previous)
            if callable(previous):
                previous(signum, frame)
            else:
                raise KeyboardInterrupt

        _requested.clear()
        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            _requested.clear()
    finally:
        _depth -= 1
