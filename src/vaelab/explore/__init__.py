"""The interactive latent-space explorer (`vaelab explore`)."""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

from vaelab.errors import VaelabError


def serve(
    run_dirs: list[Path], *, host: str = "127.0.0.1", port: int = 8000, dataset: str | None = None, data_dir=None
) -> None:
    """Loads the runs, then serves the explorer on http://host:port until Ctrl-C.

    The runs must share one dataset (their own, or `dataset`, which must hold the same arrays).
    """
    import uvicorn

    from vaelab.explore.server import create_app
    from vaelab.run import load_run

    runs = [load_run(path) for path in run_dirs]
    for run in runs:
        if run.epoch == 0:
            raise VaelabError(f"{run.path} has no completed epoch yet; train it first")
    datasets = {run.info.get("data_sha256") for run in runs}
    if len(datasets) > 1:
        raise VaelabError("the runs were trained on different datasets; explore them one dataset at a time")
    _check_port(host, port)
    app = create_app(runs, runs[0].load_data(dataset, data_dir))
    if not _is_loopback(host):
        print(
            f"vaelab explore: warning: listening on {host}, so other machines can reach this server; "
            "it has no authentication",
            file=sys.stderr,
        )
    print(
        f"vaelab explore: serving {', '.join(r.name for r in runs)} at http://{host}:{port}/ (Ctrl-C stops)", flush=True
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_port(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as err:
        raise VaelabError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --port") from None
