"""What a vaelab process pays before it does anything: the CPU seconds of its imports, each in a fresh process.

    python benchmarks/startup.py [--repeats 5]

Every `vaelab` command, a sweep's worker and each process the tests start imports NumPy, JAX and Keras first.
Each row runs its statement in a new interpreter `--repeats` times and gives the median and the range of the
process's CPU time (user + system, from the kernel's accounting of the finished child), the interpreter's own
start included. "Keras, as vaelab imports it" installs `vaelab._lean_imports` first, as `vaelab` and the sweep's
worker do; "Keras" is a plain `import keras`. The versions of the libraries that matter are printed above the table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import table

ROWS = {
    "Python alone": "pass",
    "NumPy": "import numpy",
    "ml_dtypes (JAX's number types)": "import ml_dtypes",
    "JAX": "import jax",
    "Keras": "import keras",
    "Keras, as vaelab imports it": "from vaelab import _lean_imports; _lean_imports.skip_keras_extras(); import keras",
    "`vaelab --help`": "import sys; sys.argv = ['vaelab', '--help']; from vaelab._entry import main; main()",
}
VERSIONS = ("numpy", "ml_dtypes", "jax", "keras", "matplotlib", "scikit-learn")


def child_cpu_seconds(statement: str) -> float:
    """CPU seconds (user + system) of a fresh interpreter running `statement`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-c", statement],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from vaelab.run import machine

    print(machine())
    print(", ".join(f"{name} {importlib.metadata.version(name)}" for name in VERSIONS))
    for statement in ROWS.values():  # warm the file cache and the bytecode of every row first
        child_cpu_seconds(statement)
    rows = []
    for name, statement in ROWS.items():
        times = [child_cpu_seconds(statement) for _ in range(args.repeats)]
        rows.append([name, f"{statistics.median(times):.2f}", f"{min(times):.2f}–{max(times):.2f}"])
    print(table(["imports", "CPU s (median)", "range"], rows))


if __name__ == "__main__":
    main()
