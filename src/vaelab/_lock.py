"""An exclusive lock on a directory, held by one process at a time: `with DirectoryLock(run_dir, "train"):`.

The lock is the operating system's (`flock(2)` on a `.lock` file inside the directory), so it dies
with its process: a run killed by SIGKILL never leaves a stale lock behind. The file also names the
holder (process id, host, what it is doing, since when), so a second writer can say who is in the way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from vaelab.errors import VaelabError

LOCK_FILE = ".lock"


class DirectoryLock:
    """Holds `directory/.lock` exclusively for the duration of a `with` block.

    Busy is an error at once, or after `wait` seconds of trying. Whoever holds the lock is the only
    writer, so on entry it removes the temporary files a killed writer may have left (`.*.partial*`).
    """

    def __init__(self, directory: str | os.PathLike[str], purpose: str, *, wait: float = 0.0):
        self.directory = Path(directory)
        self.purpose = purpose
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        path = self.directory / LOCK_FILE
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise VaelabError(f"cannot use {self.directory} ({err.strerror}); choose another directory") from None
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                holder = _describe(_read_holder(fd))
                os.close(fd)
                raise VaelabError(
                    f"{self.directory} is in use by {holder}; wait for it to finish, or stop it first"
                ) from None
            except OSError as err:  # a file system without locks (some network mounts)
                os.close(fd)
                raise VaelabError(f"cannot lock {path} ({err.strerror}); use a directory on a local disk") from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv[:4]),
        }
        with contextlib.suppress(OSError):  # the lock holds even if its note cannot be written (disk full)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        for partial in self.directory.glob(".*.partial*"):  # left by a writer that was killed
            with contextlib.suppress(OSError):
                partial.unlink()
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def is_locked(directory: str | os.PathLike[str]) -> bool:
    """Whether some process (this one included) holds `directory`'s lock right now."""
    try:
        fd = os.open(Path(directory) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another process"
    where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
    return f"process {holder['pid']}{where} ({holder.get('purpose', '?')} since {holder.get('since', '?')})"
