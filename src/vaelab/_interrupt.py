"""Ctrl-C that stops work at a step boundary, never inside JAX/XLA.

Python's default SIGINT handler raises `KeyboardInterrupt` wherever the interpreter happens to be,
including inside JAX's compilation and garbage-collection hooks, which can leave XLA in a state
that crashes the process. Inside `stop_at_step_boundary()` the first Ctrl-C only sets a flag; the
training and evaluation loops call `check()` between steps and raise `Interrupted` there. A second
Ctrl-C leaves at once: in the command line with exit status 130 (files are written atomically, so
that loses nothing but the step in flight), in a notebook or other host through its own handler.

The command line is guarded from its first line too (`leave_on_interrupt`), before JAX is imported:
outside the step-boundary guard a Ctrl-C raises `KeyboardInterrupt` as Python's own handler does (so
that `finally` blocks clean up on the way out), but it cannot be lost. Python prints an exception
raised inside a callback that C code runs (JAX's garbage-collection hook `_xla_gc_callback`) as
"Exception ignored" and carries on; such a lost Ctrl-C ends the process at once, and one that has
not ended it within LEAVE_SECONDS (swallowed somewhere else) ends it then, with status 130 either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from vaelab.errors import Interrupted

_requested = threading.Event()
_depth = 0  # guards nest (the report trains inside its own guard); only the outermost installs the handler
_hard_exit = False  # set by the command line: a second Ctrl-C ends the process
_early = threading.Event()  # a Ctrl-C arrived outside the guard (the command line's handler, leave_on_interrupt)
LEAVE_SECONDS = 3.0  # a Ctrl-C outside the guard ends the command by then, even where its exception was swallowed


def leave_on_interrupt() -> None:
    """For the command line, from its first line: a Ctrl-C outside `stop_at_step_boundary` ends the command with
    status 130 and one line, wherever it lands (see the module's docstring)."""

    def on_sigint(signum, frame):
        if not _early.is_set():
            _early.set()
            threading.Thread(target=_leave_after, args=(LEAVE_SECONDS,), name="vaelab-interrupt", daemon=True).start()
        raise KeyboardInterrupt

    def unraisable(hook_args, previous=sys.unraisablehook):
        if isinstance(hook_args.exc_value, KeyboardInterrupt):  # raised in a callback from C: lost otherwise
            _leave_after(0)
        previous(hook_args)

    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = unraisable


def interrupted_early() -> bool:
    """Whether a Ctrl-C arrived outside the guard: an error that follows it is its consequence, not a bug."""
    return _early.is_set()


def _leave_after(seconds: float) -> None:
    if seconds:
        time.sleep(seconds)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        print("vaelab: interrupted", file=sys.stderr, flush=True)
    os._exit(Interrupted.exit_code)


def leave_at_once_on_second_interrupt() -> None:
    """For the command line: a second Ctrl-C exits with status 130 instead of raising somewhere in XLA."""
    global _hard_exit
    _hard_exit = True


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
                print("vaelab: interrupted", file=sys.stderr, flush=True)
                os._exit(Interrupted.exit_code)
            signal.signal(signal.SIGINT, previous)
            if callable(previous):
                previous(signum, frame)
            else:
                raise KeyboardInterrupt

        _requested.clear()
        if _early.is_set():  # a Ctrl-C before the guard, whose KeyboardInterrupt something swallowed: stop now
            _requested.set()
        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            _requested.clear()
    finally:
        _depth -= 1
