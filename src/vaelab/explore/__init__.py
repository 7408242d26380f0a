"""The interactive latent-space explorer (`vaelab explore`): served, or exported as one static page."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vaelab import _interrupt
from vaelab.errors import VaelabError

if TYPE_CHECKING:
    import uvicorn

    from vaelab.data import Dataset
    from vaelab.run import Run


def load_runs(runs: list[Run | str | os.PathLike[str]]) -> list[Run]:
    """Runs given as Run objects or run directories, each checked to hold what the pages read.

    A damaged run is a one-line VaelabError naming the file, at start-up, never an error page later
    (load_run checks every run file; pagedata.check_run what the pages read besides).
    """
    from vaelab.explore.pagedata import check_run
    from vaelab.run import Run, load_run

    loaded = [run if isinstance(run, Run) else load_run(run) for run in runs]
    for run in loaded:
        check_run(run)
    return loaded


def load_data(
    runs: list[Run],
    dataset: str | Dataset | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """The data the runs were trained on (all of them on the same), or `dataset` holding the same arrays:
    a name to load, or a Dataset already in memory (one made in Python, which no name loads)."""
    if len({run.info.get("data_sha256") for run in runs}) > 1:
        raise VaelabError("the runs were trained on different datasets; explore them one dataset at a time")
    if dataset is None or isinstance(dataset, str):
        return runs[0].load_data(dataset, data_dir)
    if dataset.sha256 != runs[0].info.get("data_sha256", dataset.sha256):
        raise VaelabError(f"{runs[0].path} was trained on other data than {dataset.title}; pass the run's own")
    return dataset


@dataclass
class Server:
    """An explorer serving in a background thread (`serve(..., background=True)`): its `url`, and `stop()`."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 30) -> None:
        """Stops serving and waits for the server's thread to end."""
        self.server.should_exit = True
        self.thread.join(timeout)


def serve(
    runs: list[Run | str | os.PathLike[str]],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    dataset: str | Dataset | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    background: bool = False,
) -> Server | None:
    """Loads the runs (Run objects or run directories) and serves the explorer on http://host:port.

    The runs must share one dataset (their own, or `dataset`, which must hold the same arrays: a name,
    or a Dataset in memory).

    In the foreground (the command), until Ctrl-C. With `background`, in a thread, and returns at once
    with a `Server` whose `.url` to open and `.stop()`; this works from inside a running event loop
    (a Jupyter notebook), since the server runs its own loop in its thread. Port 0 picks a free port.
    """
    import uvicorn

    from vaelab.explore import guards
    from vaelab.explore.server import create_app

    if not 0 <= port <= 65535:
        raise VaelabError(f"--port must be between 0 (any free port) and 65535, got {port}")
    # Loading compiles the networks: a Ctrl-C then stops after it, not inside JAX (vaelab._interrupt).
    with _interrupt.stop_at_step_boundary():
        loaded = load_runs(runs)
        data = load_data(loaded, dataset, data_dir)
        sock = _bind(host, port)
        try:
            port = sock.getsockname()[1]
            app = create_app(loaded, data, allowed_hosts=guards.AllowedHosts.for_server(host, port))
            _interrupt.check("interrupted before the explorer started")
        except BaseException:
            sock.close()
            raise
    config = uvicorn.Config(
        app,
        http=guards.SlowClientGuard,
        log_level="warning",
        timeout_keep_alive=guards.KEEP_ALIVE_SECONDS,
        limit_concurrency=None,  # guards.SlowClientGuard bounds the connections, guards.RequestLimit the requests
        h11_max_incomplete_event_size=guards.MAX_HEADER_BYTES,
        timeout_graceful_shutdown=guards.SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)
    url = f"http://{_url_host(host)}:{port}/"
    if not _is_loopback(host):
        print(
            f"vaelab explore: warning: listening on {host}, so other machines can reach this server; "
            "it has no authentication",
            file=sys.stderr,
        )
    if background:
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="vaelab-explore", daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            thread.join(0.02)
        return Server(url, server, thread)
    _run_until_ctrl_c(
        server, sock, f"vaelab explore: serving {', '.join(r.name for r in loaded)} at {url} (Ctrl-C stops)"
    )
    return None


def _run_until_ctrl_c(server, sock: socket.socket, line: str) -> None:
    """Runs uvicorn in the foreground; Ctrl-C stops it and then raises KeyboardInterrupt.

    uvicorn installs its own Ctrl-C handler only once its event loop runs. Python's default handler
    would raise KeyboardInterrupt inside asyncio's start-up before that, which can leave the server
    running; this one asks uvicorn to stop instead, which it checks as it starts.
    """
    stopped = []

    def stop(signum, frame):
        stopped.append(signum)
        server.should_exit = True

    previous = signal.signal(signal.SIGINT, stop)
    print(line, flush=True)  # once Ctrl-C stops the server, as it says
    try:
        server.run(sockets=[sock])  # uvicorn passes a Ctrl-C it caught on to this handler as it returns
    finally:
        signal.signal(signal.SIGINT, previous)
    if stopped:
        raise KeyboardInterrupt


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or a one-line error saying why not."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise VaelabError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --port") from None
    except (UnicodeError, ValueError, TypeError):  # a name no resolver can take: NUL, undecodable bytes
        sock.close()
        raise VaelabError(f"--host {host!r} is not a host name or an address; give one such as 127.0.0.1") from None
    return sock
