"""The `vaelab` command: a thin layer over the Python API. Each subcommand parses, calls, prints.

One module per command or small group registers its subcommand and holds its `cmd_*` function: `data` (data,
data convert), `train` (presets, train), `latent` (encode, generate, interpolate), `evaluate` (evaluate,
train-prior), `report`, `sweep`, `explore`, `quality` (quality, export) and `kl`. `settings` lists the run settings
once, from which train's, report's and sweep's flags are built; `_args` holds the argument types they share.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from vaelab import _interrupt
from vaelab.cli._args import EXIT_USER_ERROR, Parser
from vaelab.cli._args import path as _path  # noqa: F401 (the path type: tests/test_cli_fuzz.py recognises it)
from vaelab.errors import Interrupted, VaelabError
from vaelab.training import distribute


def build_parser() -> argparse.ArgumentParser:
    """The `vaelab` command's parser, its subcommands in the order of `vaelab --help`."""
    from vaelab import __version__
    from vaelab.cli import data, evaluate, explore, kl, latent, quality, report, sweep, train

    parser = Parser(prog="vaelab", description="Train, explore and explain variational autoencoders on small images.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in (data, train, latent, evaluate, report, sweep, explore, quality, kl):
        command.register(sub)
    return parser


EXIT_BUG = 3  # an error vaelab did not foresee: a bug; the traceback is written to a file


def main(argv: Sequence[str] | None = None) -> int:
    """The `vaelab` command. Errors are one line on stderr and an exit status: 2 for a mistake the user can
    fix, 130 for Ctrl-C, 3 for a bug (its traceback goes to a file that the line names), 4 when another
    process of a multi-process run went away."""
    if argv is None:  # the real command line: Ctrl-C ends it with status 130 from here on, wherever it lands
        _interrupt.leave_on_interrupt()
    try:
        import vaelab  # noqa: F401  (chooses the default Keras backend before anything imports Keras)

        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    _interrupt.leave_at_once_on_second_interrupt(args.command, AFTER_INTERRUPT.get(args.command, ""))
    code = distribute.finish(_run(args, argv))
    if argv is None and code == Interrupted.exit_code:  # its line is printed; XLA may still run the step in flight,
        _interrupt.leave(line="")  # and the interpreter's teardown around it has crashed: leave without one
    return code


# What a command interrupted between its steps (writing its report, say) tells its user to do next
AFTER_INTERRUPT = {"report": "run the same `vaelab report` again to continue (finished runs are reused)"}
COMPUTES = ("train", "encode", "generate", "interpolate", "evaluate", "export", "report", "explore", "quality")


def _start(args: argparse.Namespace) -> None:
    """Process-wide settings, made by the command line rather than the library: the processes of a
    multi-process run join, the CPU splits into devices (both before JAX starts), malloc is tuned on a CPU."""
    from vaelab.training._malloc import tune_malloc

    if args.command == "train":
        if distribute.wants_processes(args.coordinator, args.num_processes, args.process_id):
            distribute.initialize(args.coordinator, args.num_processes, args.process_id, peer_timeout=args.peer_timeout)
        if isinstance(args.devices, int):
            distribute.use_cpu_devices(args.devices)
    if args.command in COMPUTES and distribute.on_cpu():
        tune_malloc()


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Runs the command; returns its exit status, having printed any error as one line."""
    try:
        _start(args)
        return args.func(args)
    except VaelabError as err:
        print(f"vaelab {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"vaelab {args.command}: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:  # the file system refused something vaelab did not expect to fail: the environment's
        where = f" ({err.filename})" if err.filename else ""
        print(
            f"vaelab {args.command}: error: {err.strerror or err}{where}; check the path and the disk", file=sys.stderr
        )
        return EXIT_USER_ERROR
    except Exception as err:  # the last resort: one line, the traceback in a file
        where = _write_traceback(err)
        what = (str(err).splitlines() or [""])[0][:200]
        print(f"vaelab {args.command}: internal error ({type(err).__name__}: {what}); this is a bug in vaelab, "
              f"the full traceback is in {where}", file=sys.stderr)  # fmt: skip
        return EXIT_BUG
    finally:
        if argv is None:  # the real command line: a late Ctrl-C must not turn into a traceback at exit
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_traceback(err: BaseException) -> str:
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(err))
    try:
        fd, path = tempfile.mkstemp(prefix="vaelab-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
    except OSError:
        return "nowhere (the temporary directory is not writable)"
