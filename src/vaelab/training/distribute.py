"""Where training runs: one device, several devices of this process, or several processes (hosts).

Several devices train data-parallel with Keras' distribution API on the JAX backend
(`keras.distribution.DataParallel`): every device holds the whole network and takes an equal slice
of every batch; the batch size (100) is the global batch, and the loss is the mean over all of it,
so the mathematics are those of one device (`tests/test_distribute.py` checks the losses agree).

Several processes, on one machine or many, join with `initialize(coordinator, num_processes,
process_id)` (the command line's `--coordinator HOST:PORT --num-processes N --process-id I`)
before anything else uses JAX. It calls `jax.distributed.initialize`, which
`keras.distribution.initialize` also calls, directly: Keras' function cannot pass the timeouts below.
Each process feeds its own slice of every global batch; process 0 writes the run directory;
all of them read it to resume. On a CPU the processes exchange gradients with gloo over TCP.

When a process dies the others stop, non-zero, rather than wait forever:
- a process that is killed or crashes closes its connections; the others fail at their next
  collective operation (within one training step) and leave with one line (`ProcessLost`, exit 4);
  when it was process 0, which runs JAX's coordination service, JAX may end them first (exit 134);
- a process (or machine) that goes silent without closing them is declared dead by JAX's
  coordination service after `peer_timeout` seconds without a heartbeat (default
  `PEER_TIMEOUT_S`); JAX then ends every other process itself (SIGABRT, exit status 134, with its
  own log lines).
Processes wait `JOIN_TIMEOUT_S` for each other at the start, and at the end of a run each waits up to
`SHUTDOWN_TIMEOUT_S` for the others to finish.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from vaelab.errors import VaelabError

# Seconds without a heartbeat before a process counts as dead (JAX's default: 100). Heartbeats come from
# a thread of their own, so a long compilation does not miss them; a minute lets a network hiccup pass
# without killing a long run, and a hung run does not hold every machine for long.
PEER_TIMEOUT_S = 60
JOIN_TIMEOUT_S = 300  # how long processes wait for each other to start (JAX's default)
SHUTDOWN_TIMEOUT_S = 300  # how long a finished process waits for the others at the end (JAX's default)
STOP_CHECK_STEPS = 100  # processes agree on Ctrl-C every this many steps: one collective (~5 ms here) each
ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")


class ProcessLost(VaelabError):
    """Another process of a multi-process run stopped or died, so this one stops too."""

    exit_code = 4

    def __init__(self, detail: str, run: str = "RUN"):
        self.detail = detail
        super().__init__(
            f"lost contact with another process of this run ({detail}); every process stops: read the other "
            f"processes' output, then start them all again with `vaelab train --resume {run}`"
        )


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    peer_timeout: int = PEER_TIMEOUT_S,
) -> None:
    """Joins this process to a multi-process run; call it once, before anything uses JAX.

    Unset arguments come from Keras' variables (KERAS_DISTRIBUTION_JOB_ADDRESSES, whose first
    address is the coordinator, KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID),
    then from JAX's own detection (JAX_COORDINATOR_ADDRESS, Slurm, Open MPI).
    """
    _require_jax("several processes")
    import jax
    from jax._src import xla_bridge

    if coordinator is None and os.environ.get(ENV[0]):
        coordinator = os.environ[ENV[0]].split(",")[0].strip()
    num_processes = num_processes if num_processes is not None else _env_int(ENV[1])
    process_id = process_id if process_id is not None else _env_int(ENV[2])
    if peer_timeout < 1:
        raise VaelabError(f"--peer-timeout must be at least 1 second, got {peer_timeout}")
    if jax.distributed.is_initialized():
        return
    if xla_bridge.backends_are_initialized():
        raise VaelabError("JAX started before the processes joined; call vaelab.training.distribute.initialize first")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator,
            num_processes,
            process_id,
            initialization_timeout=JOIN_TIMEOUT_S,
            heartbeat_timeout_seconds=peer_timeout,
            shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S,
        )
    except (ValueError, TypeError, RuntimeError) as err:
        raise VaelabError(
            f"could not join the other processes ({_first_line(err)}); start every process with the same "
            "--coordinator HOST:PORT and --num-processes N, each with its own --process-id 0..N-1"
        ) from None
    except Exception as err:  # JAX's runtime errors (a timeout, a refused connection) have no public type
        raise VaelabError(
            f"could not join the other processes at {coordinator} within {JOIN_TIMEOUT_S} s ({_first_line(err)}); "
            "check that process 0 runs there and that the port is open"
        ) from None


def wants_processes(coordinator: str | None, num_processes: int | None, process_id: int | None) -> bool:
    """Whether the command line or the environment asks for a multi-process run."""
    given = (coordinator, num_processes, process_id)
    return any(v is not None for v in given) or any(os.environ.get(k) for k in (*ENV, "JAX_COORDINATOR_ADDRESS"))


def finish(exit_code: int) -> int:
    """Ends a multi-process run's process: on success, waits for the others; on failure, leaves at once.

    Leaving at once (`os._exit`) skips JAX's shutdown barrier, which would otherwise wait for the
    failed process and then abort with a page of logs instead of the one line already printed.
    """
    if "jax" not in sys.modules:
        return exit_code
    import jax

    if not jax.distributed.is_initialized():
        return exit_code
    if exit_code == 0:
        try:
            jax.distributed.shutdown()
            return 0
        except Exception as err:
            print(f"vaelab: error: the other processes did not finish ({_first_line(err)})", file=sys.stderr)
            exit_code = ProcessLost.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def use_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` XLA devices, if JAX has not started yet and XLA_FLAGS does not say otherwise.

    A process-wide setting: the command line makes it for `--devices N`; in Python, call it first.
    On a CPU this brings no speed (the devices share one thread pool; benchmarks/README.md), but it
    runs the same data-parallel program as several GPUs would, so it can be checked on any machine.
    """
    if count <= 1 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import jax
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized() and jax.config.jax_num_cpu_devices < count:
        jax.config.update("jax_num_cpu_devices", count)


@dataclass(frozen=True)
class Layout:
    """The devices one training uses: `local` devices in each of `processes` processes, in process order."""

    devices: tuple[str, ...] = ()  # Keras device names ("cpu:0", "gpu:1"), all processes'; () for one device
    local: int = 1
    processes: int = 1
    process_id: int = 0
    platform: str = "cpu"

    @property
    def replicas(self) -> int:
        """How many devices share every batch."""
        return self.local * self.processes

    @property
    def writer(self) -> bool:
        """Whether this process writes the run directory (process 0 does; the others only read it)."""
        return self.process_id == 0

    @property
    def part(self) -> tuple[int, int]:
        """This process's slice of every batch: the `process_id`-th of `processes` equal slices."""
        return self.process_id, self.processes

    def scope(self) -> contextlib.AbstractContextManager:
        """The Keras distribution to build, load and train the networks under (nothing for one device)."""
        if self.replicas == 1:
            return contextlib.nullcontext()
        import keras

        # The data are already split between processes (each feeds its slice), so Keras must not split them again.
        return keras.distribution.DataParallel(devices=list(self.devices), auto_shard_dataset=False).scope()

    def check_batch(self, batch_size: int) -> None:
        """A batch must split evenly over the devices: one line saying what to change if it does not."""
        if batch_size % self.replicas:
            raise VaelabError(
                f"a batch of {batch_size} does not split evenly over {self.replicas} devices; "
                f"choose a --batch-size that is a multiple of {self.replicas}, or another number of devices"
            )

    def check_count(self, what: str, count: int, batch_size: int, option: str) -> None:
        """The last, partial batch of `count` images must split evenly too (it does when `count` divides)."""
        last = count % batch_size
        if last % self.replicas:
            fit = count - last % self.replicas
            raise VaelabError(
                f"the {count} {what} images leave a last batch of {last}, which does not split evenly over "
                f"{self.replicas} devices; pass {option} {fit}"
            )

    def stop_everywhere(self, here: bool) -> bool:
        """Whether any process wants to stop; every process must call it at the same step."""
        if self.processes == 1:
            return here
        from jax.experimental import multihost_utils

        with translated_errors(self):
            return bool(multihost_utils.process_allgather(int(here)).max())

    def check_same(self, what: str, text: str) -> None:
        """Checks that every process has the same `what` (its text's hash); one line naming those that differ."""
        if self.processes == 1:
            return
        import numpy as np
        from jax.experimental import multihost_utils

        digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], dtype=np.int64)[0]
        with translated_errors(self):
            found = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
        others = [str(i) for i, d in enumerate(found) if d != found[0]]
        if others:
            raise VaelabError(
                f"process {', '.join(others)} has another {what} than process 0; start every process with the "
                "same command line (only --process-id differs) and the same data"
            )

    def record(self) -> dict:
        """What a run's config.json says about where it trained (seconds per epoch depend on it)."""
        return {"platform": self.platform, "processes": self.processes, "devices_per_process": self.local}


ONE_DEVICE = Layout()  # one process, one device: no distribution at all


def layout(devices: int | str = 1) -> Layout:
    """The devices to train on: `devices` of this process's devices (an integer, or "all"), in every process."""
    if devices != "all" and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise VaelabError(f"devices must be an integer >= 1 or 'all', got {devices!r}")
    if devices == 1 and not _jax_processes():
        return Layout(platform=_platform())
    _require_jax(f"{devices} devices")
    import jax

    local = jax.local_devices()
    count = len(local) if devices == "all" else devices
    if count > len(local):
        names = ", ".join(f"{d.platform}:{d.id}" for d in local)
        cpu = " (on a CPU: vaelab.training.distribute.use_cpu_devices before JAX starts; the command line does it)"
        raise VaelabError(
            f"asked for {count} devices, but this process has {len(local)} ({names}); "
            f"pass --devices {len(local)} or --devices all{cpu if local[0].platform == 'cpu' else ''}"
        )
    chosen = []
    for p in range(jax.process_count()):
        mine = sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
        chosen += [f"{d.platform}:{d.id}" for d in mine[:count]]
    result = Layout(tuple(chosen), count, jax.process_count(), jax.process_index(), local[0].platform)
    result.check_same("number of devices", str(count))
    return result


def process() -> tuple[int, int]:
    """This process's number and the number of processes (0 and 1 outside a multi-process run)."""
    if not _jax_processes():
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def on_cpu() -> bool:
    """Whether the Keras backend computes on the CPU (then the CPU-only tunings apply)."""
    return _platform() == "cpu"


def _platform() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend()
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return "cpu"


def _jax_processes() -> bool:
    """Whether this process is part of a multi-process JAX run."""
    if "jax" not in sys.modules:
        return False
    import jax

    return jax.distributed.is_initialized()


def _require_jax(what: str) -> None:
    import keras

    if keras.backend.backend() != "jax":
        raise VaelabError(
            f"training on {what} needs the JAX backend, and Keras runs on {keras.backend.backend()}; "
            "set KERAS_BACKEND=jax, or train on one device"
        )


def lost(err: BaseException, run: str = "RUN") -> ProcessLost | None:
    """The `ProcessLost` that `err` means, when it says that another process went away; else None."""
    text = _first_line(err)
    signs = ("Gloo", "gloo", "Connection reset", "heartbeat", "coordination service", "UNAVAILABLE", "DEADLINE")
    if not any(sign in text for sign in signs):
        return None
    if "Gloo" in text:  # "Error dispatching computation: ... Gloo all-reduce failed: [file:line] Read error ..."
        text = re.sub(r"\[[^\]]*\.cc:\d+\] ", "", text[text.index("Gloo") :])
    return ProcessLost(text[:160], run)


@contextlib.contextmanager
def translated_errors(layout: Layout, run: str = "RUN") -> Iterator[None]:
    """Turns the errors of a collective whose peer went away into `ProcessLost` (multi-process runs only)."""
    try:
        yield
    except ProcessLost as err:
        if run == "RUN":
            raise
        raise ProcessLost(err.detail, run) from None  # an inner collective's, which did not know the run's name
    except VaelabError:
        raise
    except Exception as err:
        if layout.processes == 1 or (found := lost(err, run)) is None:
            raise
        raise found from None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise VaelabError(f"{name} must be an integer, got {value!r}") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:1000]
