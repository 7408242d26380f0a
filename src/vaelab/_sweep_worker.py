"""One point of a local `vaelab sweep`, in its own process: `python -m vaelab._sweep_worker SPEC_JSON`.

A fresh Python per point, as `vaelab train` is (JAX must not be forked). Output goes to the point's
log; the exit status says how it went, as the `vaelab` command's does: 0 done, 2 a one-line error
(the log's last line), 130 interrupted (Ctrl-C stops at a step boundary), 3 a bug (traceback in the log).
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    if spec.get("cores"):  # before JAX loads: XLA sizes its thread pool from the cores it may use
        os.sched_setaffinity(0, spec["cores"])
    import vaelab  # noqa: F401  (chooses the Keras backend before anything imports Keras)
    from vaelab import _interrupt, _lean_imports

    _lean_imports.skip_keras_extras()
    from vaelab.errors import Interrupted, VaelabError
    from vaelab.sweep import run_point
    from vaelab.training._malloc import tune_malloc

    _interrupt.leave_at_once_on_second_interrupt()
    tune_malloc()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        with _interrupt.stop_at_step_boundary():
            run_point(spec, log)
    except Interrupted as err:
        log(f"vaelab sweep: {err}")
        return Interrupted.exit_code
    except VaelabError as err:
        log(f"error: {err}")
        return err.exit_code
    except Exception as err:
        traceback.print_exc()
        log(f"internal error ({type(err).__name__}: {str(err)[:200]}); this is a bug in vaelab")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
