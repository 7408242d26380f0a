"""Compiling the kernels on first use, into a cache keyed by everything the binary depends on.

The library is built with the system C++ compiler (`$CXX`, else `c++`, else `g++`) against the XLA
FFI headers that jaxlib ships, with the host's instruction set (`-march=native` on x86-64,
`-mcpu=native` on arm64), and kept in

    <cache>/<key>/libvaelab_kernels.so

where <cache> is `$VAELAB_KERNEL_CACHE`, else `$XDG_CACHE_HOME/vaelab/kernels` (by default
`~/.cache/vaelab/kernels`, beside the MNIST download), and <key> is a hash of the
sources, the flags, the compiler's version, jaxlib's version and the machine (its architecture and
CPU model and features, since the binary is specific to them). One process compiles while the others
that need the same library wait for it (a lock on <key>'s folder), and the compiler writes a temporary file
that is then renamed into place, so a process killed while compiling leaves no half-written library.

`VAELAB_KERNELS_SANITIZE=1` builds with AddressSanitizer and UndefinedBehaviorSanitizer instead
(a separate cache entry; the process must preload libasan, see tests/run_sanitized.sh). The same
flags build tests/kernels_sanitized.cc, which checks the kernels without XLA.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE_DIR = Path(__file__).parent
# every file the library is built from
SOURCES = (
    "conv_math.h",
    "conv_chunks.h",
    "conv_pool.h",
    "conv_layers.h",
    "dense_math.h",
    "optimizer_math.h",
    "dense_ffi.h",
    "vae_step.h",
    "vae_step_ffi.h",
    "conv_ffi.cc",
)
MAIN_SOURCE = "conv_ffi.cc"
LIBRARY = "libvaelab_kernels.so"
KINDS = ("conv_pool", "conv", "upconv", "dense")  # the layer kinds the library computes
HANDLERS = (  # the FFI handlers the library exports (conv_ffi.cc, dense_ffi.h), registered under the same names
    *(f"vaelab_{kind}_{part}" for kind in KINDS for part in ("forward", "weights", "input")),
    "vaelab_adam_update",
    "vaelab_rmsprop_update",
    "vaelab_vae_step",  # a dense VAE's whole training step (vae_step.h)
)
COMPILE_TIMEOUT_S = 600


class BuildError(Exception):
    """The kernels cannot be built or loaded here; the message says why, in one line."""


@dataclass(frozen=True)
class Build:
    """How the library is compiled here."""

    compiler: list[str]
    flags: list[str]
    compiler_version: str
    key: str

    def command(self, output: Path) -> list[str]:
        return [*self.compiler, *self.flags, str(SOURCE_DIR / MAIN_SOURCE), "-o", str(output)]


def cache_root() -> Path:
    """`$VAELAB_KERNEL_CACHE`, else `$XDG_CACHE_HOME/vaelab/kernels`, else `~/.cache/vaelab/kernels`.

    The user's cache, not vaelab's data directory: `VAELAB_DATA_DIR` may point at data (a dataset
    folder, a shared drive) where machine-specific binaries do not belong.
    """
    if os.environ.get("VAELAB_KERNEL_CACHE"):
        return Path(os.environ["VAELAB_KERNEL_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vaelab" / "kernels"


def find_compiler() -> list[str]:
    """`$CXX` (which may carry arguments), else the first of c++, g++, clang++ on PATH."""
    if os.environ.get("CXX"):
        return shlex.split(os.environ["CXX"])
    for name in ("c++", "g++", "clang++"):
        if path := shutil.which(name):
            return [path]
    raise BuildError("no C++ compiler found (install g++ or clang++, or set CXX)")


def sanitize() -> bool:
    return os.environ.get("VAELAB_KERNELS_SANITIZE", "0") not in ("", "0")


# AddressSanitizer and UndefinedBehaviorSanitizer, any finding fatal: the library's flags under
# VAELAB_KERNELS_SANITIZE=1, and the sanitized kernel test's (tests/kernels_sanitized.cc)
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")


def loop_flags() -> list[str]:
    """How the kernels' loops are compiled on this machine, whatever else the build does.

    `-fopenmp-simd` honours the sources' `#pragma omp simd` (which loop to vectorise) without an
    OpenMP runtime; `-march=native` (x86-64) or `-mcpu=native` (arm64) targets the host's CPU.
    """
    flags = ["-fopenmp-simd"]
    arch = platform.machine().lower()
    if arch in ("x86_64", "amd64"):
        flags.append("-march=native")
    elif arch in ("aarch64", "arm64"):
        flags.append("-mcpu=native")
    return flags


def compile_flags(include_dir: str) -> list[str]:
    flags = ["-std=c++17", "-O3", *loop_flags(), "-shared", "-fPIC", "-isystem", include_dir]
    if sanitize():
        flags += SANITIZE_FLAGS
    return flags


def machine_id() -> str:
    """The architecture and, where the OS tells, the CPU's model and feature flags."""
    parts = [platform.system(), platform.machine(), platform.processor()]
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text(errors="replace")
        wanted = ("model name", "flags", "Features", "CPU implementer", "CPU part")
        parts += sorted({line.strip() for line in info.splitlines() if line.split(":")[0].strip() in wanted})
    return "\n".join(parts)


def plan() -> Build:
    """The compiler, flags and cache key for this machine; BuildError if there is no compiler."""
    import jax
    import jaxlib

    compiler = find_compiler()
    try:
        done = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise BuildError(f"cannot run the C++ compiler {shlex.join(compiler)} ({err})") from None
    if done.returncode != 0:
        raise BuildError(f"the C++ compiler {shlex.join(compiler)} does not run (exit {done.returncode})")
    version = done.stdout.strip()
    flags = compile_flags(jax.ffi.include_dir())
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    for part in (shlex.join(compiler), version, shlex.join(flags), jaxlib.__version__, machine_id()):
        digest.update(part.encode() + b"\0")
    return Build(compiler, flags, version.splitlines()[0] if version else "?", digest.hexdigest()[:20])


def library_path(build: Build) -> Path:
    return cache_root() / build.key / LIBRARY


def ensure_built(build: Build, announce=None) -> tuple[Path, bool]:
    """The library's path, compiling it first if the cache lacks it; and whether it was compiled now.

    Processes that start at once (a sweep's points, two trainings) compile it once: the first holds the lock
    on the library's folder, the others wait for it and load what it wrote."""
    path = library_path(build)
    if path.exists():
        return path, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError as err:
        raise BuildError(f"cannot write the kernel cache {path.parent} ({err}); set VAELAB_KERNEL_CACHE") from None
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if announce:
                announce(f"vaelab: waiting for another process compiling the kernels into {path.parent}")
            fcntl.flock(folder, fcntl.LOCK_EX)  # released by the holder, or by the kernel when it dies
        except OSError:  # a file system without locks: each process compiles, the rename keeps the library whole
            pass
        if path.exists():  # compiled by the process that held the lock
            return path, False
        _compile(build, path, announce)
        return path, True
    finally:
        os.close(folder)  # and with it the lock


def _compile(build: Build, path: Path, announce) -> None:
    """Compiles the library into `path`: under a temporary name, renamed into place when whole."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{LIBRARY}.", suffix=".partial", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise BuildError(f"cannot write the kernel cache {path.parent} ({err}); set VAELAB_KERNEL_CACHE") from None
    if announce:
        announce(f"vaelab: compiling the kernels into {path.parent} (once per machine and version)")
    try:
        done = subprocess.run(build.command(Path(tmp)), capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()
            raise BuildError(f"compiling the kernels failed: {(errors or ['no message'])[0].strip()[:300]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except (OSError, subprocess.SubprocessError) as err:
        raise BuildError(f"compiling the kernels failed ({err})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def load(path: Path) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(str(path))
    except OSError as err:
        raise BuildError(f"cannot load {path} ({err})") from None
