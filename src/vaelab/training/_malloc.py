"""glibc malloc settings for training: keep freed memory in the process instead of unmapping it.

XLA allocates and frees the same large temporary buffers on every training step. glibc's default
malloc serves each with a fresh mmap and returns it with munmap, so every step pays page faults
for memory it just had; on the 2-core machine of benchmarks/README.md that doubled the ConvNet's
time per epoch. The same settings as GLIBC_TUNABLES=glibc.malloc.mmap_max=0:...trim_threshold=...
:top_pad=..., applied at run time with mallopt(3).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
_done = False


def tune_malloc() -> bool:
    """Applies the settings once per process (glibc only; VAELAB_TUNE_MALLOC=0 turns it off)."""
    global _done
    if _done or os.environ.get("VAELAB_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, for one): nothing to tune
    ok = mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) and mallopt(M_TOP_PAD, 64 << 20)
    _done = bool(ok)
    return _done
