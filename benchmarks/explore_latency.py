"""Latency of the explorer's API, as the page sees it: real HTTP to a `vaelab explore` server.

    python benchmarks/explore_latency.py RUN [RUN ...] [--requests 500]

For each run: decode one point (what hovering sends), decode a 10-point interpolation, encode a
drawn digit; prints a Markdown table of p50 / p95 / p99 in milliseconds. The target for decoding a
point is p95 <= 20 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from _common import table

from vaelab.run import machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(conn: http.client.HTTPConnection, path: str, body: dict) -> float:
    payload = json.dumps(body)
    started = time.perf_counter()
    conn.request("POST", path, payload, {"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise SystemExit(f"{path}: HTTP {response.status}")
    return elapsed * 1000


def percentiles(ms: list[float]) -> list[str]:
    q = np.percentile(ms, [50, 95, 99])
    return [f"{v:.1f}" for v in q]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "explore", *map(str, args.runs), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(600):
            try:
                conn.request("GET", "/api/runs")
                runs = json.loads(conn.getresponse().read())
                break
            except OSError:
                conn.close()
                time.sleep(0.2)
        else:
            raise SystemExit("the explorer did not start")
        rng = np.random.default_rng(0)
        rows = []
        for run in runs:
            dim, base = run["latent_dim"], f"/api/runs/{run['id']}"
            for _ in range(20):  # warm-up
                timed(conn, base + "/decode", {"points": [[0.0] * dim]})
            one = [
                timed(conn, base + "/decode", {"points": [rng.normal(size=dim).tolist()]}) for _ in range(args.requests)
            ]
            ten = [
                timed(
                    conn,
                    base + "/interpolate",
                    {"start": rng.normal(size=dim).tolist(), "end": rng.normal(size=dim).tolist(), "steps": 10},
                )
                for _ in range(args.requests // 5)
            ]
            enc = [
                timed(conn, base + "/encode", {"pixels": rng.random(784).tolist()}) for _ in range(args.requests // 5)
            ]
            for what, ms in (("decode 1 point", one), ("interpolate 10 steps", ten), ("encode a drawing", enc)):
                rows.append(
                    [
                        f"{run['name']} ({run['preset']})",
                        what,
                        str(len(ms)),
                        *percentiles(ms),
                        f"{statistics.mean(ms):.1f}",
                    ]
                )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"machine: {machine()}; HTTP/1.1 keep-alive to 127.0.0.1, one request at a time\n")
    print(table(["run", "request", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms"], rows))


if __name__ == "__main__":
    main()
