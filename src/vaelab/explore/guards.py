"""The explorer server's defences and limits, in one place (the README quotes these constants).

- Host check: a request is answered only if its `Host` header names this server as it was started
  (localhost, 127.0.0.1 or [::1], or the `--host` given; with the port), so that a web page
  elsewhere cannot reach the API by DNS rebinding. Others get 421 and one line.
- Security headers on every response: a Content-Security-Policy that allows the page's own files and
  its own API only, `X-Content-Type-Options: nosniff`, and no framing (`frame-ancestors 'none'`,
  `X-Frame-Options: DENY`).
- Slow or idle clients are disconnected, each on its own deadlines: the request line and headers
  must arrive within HEADER_READ_SECONDS of the connection's opening or of the previous response,
  the body within BODY_READ_SECONDS of the headers' end; an idle keep-alive connection is closed
  after KEEP_ALIVE_SECONDS.
- Slow clients cannot starve the others: at most MAX_CONNECTIONS connections are open at once, and
  a connection beyond them closes the one that has waited longest for its request to arrive (a
  slow or idle client; never one whose request is being answered). Only when all of them are being
  answered does the newcomer get 503. At most MAX_CONCURRENCY requests are answered at once
  (beyond: 503).
- Request line and headers up to MAX_HEADER_BYTES (beyond: 431, however they arrive); request bodies
  up to MAX_BODY_BYTES, or more where the runs' images are larger (`body_limit`; beyond: 413).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this
HEADER_READ_SECONDS = 5  # to send the request line and headers: a browser sends them in one packet
BODY_READ_SECONDS = 10  # to send a body after its headers: the page's largest is a few kB, an encode's 72 kB
MAX_CONNECTIONS = 32  # connections open at once; a browser opens at most 6 per server
MAX_CONCURRENCY = 32  # requests answered at once
MAX_HEADER_BYTES = 16 * 1024  # request line and headers; browsers send well under 2 kB here
MAX_BODY_BYTES = 64 * 1024  # the largest valid request (256 points of 50 dimensions) is far smaller
PIXEL_BYTES = 24  # a pixel value in an encode request, at most: "1.2345678901234567e-05, "
SHUTDOWN_SECONDS = 5  # Ctrl-C waits this long for requests in flight

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def body_limit(pixel_values: int) -> int:
    """The request body limit for runs whose images hold at most `pixel_values` numbers: MAX_BODY_BYTES, or
    room for one such image to encode (a 32x32 colour image needs 72 kB), whichever is larger."""
    return max(MAX_BODY_BYTES, PIXEL_BYTES * pixel_values + 1024)


@dataclass(frozen=True)
class AllowedHosts:
    """The `Host` header values a server answers: one of its names, with its port (bare for port 80)."""

    names: frozenset[str]  # lower case, IPv6 addresses in brackets
    port: int
    any_address: bool = False  # also any IP address (a server bound to every interface)

    @classmethod
    def for_server(cls, host: str, port: int) -> AllowedHosts:
        """Loopback names and `host`; bound to every interface (0.0.0.0 or ::), the machine's names and
        any IP address too: an address typed by the user cannot be the result of a DNS rebinding."""
        if host in WILDCARD_HOSTS:
            names = {socket.gethostname().lower(), socket.getfqdn().lower()}
            return cls(frozenset(LOOPBACK_NAMES) | names, port, any_address=True)
        return cls(frozenset({*LOOPBACK_NAMES, _bracketed(host.lower())}), port)

    def accepts(self, header: str) -> bool:
        split = _split_host(header.lower())
        if split is None:
            return False
        name, port = split
        if port not in ({str(self.port), None} if self.port == 80 else {str(self.port)}):
            return False
        return name in self.names or (self.any_address and _is_address(name.strip("[]")))

    def __str__(self) -> str:
        names = sorted(self.names) + (["any IP address"] if self.any_address else [])
        return ", ".join(names) + f" (port {self.port})"


def _split_host(header: str) -> tuple[str, str | None] | None:
    """A Host header -> (name, port or None); None when it is malformed."""
    if header.startswith("["):  # an IPv6 address
        name, bracket, rest = header.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        return name + "]", rest[1:] if rest else None
    name, colon, port = header.rpartition(":")
    return (name, port) if colon else (header, None)


def _bracketed(host: str) -> str:
    """An IPv6 address as it appears in a Host header: in brackets."""
    return f"[{host}]" if _is_address(host) and ":" in host else host


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


async def plain_error(send, status: int, message: str) -> None:
    """Answers with `status` and {"detail": message}, without calling the app."""
    body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HostCheck:
    """ASGI middleware: a request whose Host header is not one of `allowed` gets 421 and one line."""

    def __init__(self, app, allowed: AllowedHosts):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if not self.allowed.accepts(host):
            return await plain_error(send, 421, f"this server answers to {self.allowed}, not to Host {host[:100]!r}")
        return await self.app(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every response (the app's, and the other guards' refusals)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """ASGI middleware: a request body over `limit` bytes is refused with 413 before it is read whole."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await plain_error(send, 413, f"request body over {self.limit} bytes")
        seen = 0
        refused = False

        async def limited_receive():
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit and not refused:
                refused = True
                await plain_error(send, 413, f"request body over {self.limit} bytes")
            return {"type": "http.disconnect"} if refused else message

        async def guarded_send(message):
            if not refused:  # once refused, the app's own reply is dropped
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


class RequestLimit:
    """ASGI middleware: at most `limit` requests answered at once; beyond, 503 and one line."""

    def __init__(self, app, limit: int = MAX_CONCURRENCY):
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            return await plain_error(send, 503, f"over {self.limit} requests at once; try again")
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def _busy(scope, receive, send):
    """The answer of a connection beyond MAX_CONNECTIONS when every other one is being answered."""
    await plain_error(send, 503, f"over {MAX_CONNECTIONS} connections at once, all busy; try again")


def _raw_response(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP response, written before (or instead of) the request's own: for refusals below the app."""
    body = json.dumps({"detail": message}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *(f"{k.decode()}: {v.decode()}" for k, v in SECURITY_HEADERS)]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class SlowClientGuard(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus per-client deadlines, a connection limit that evicts the slowest
    client, and a header limit however the headers arrive (uvicorn has none of the three).

    Each connection is either waiting for a request (its header or body deadline armed: from its
    opening, or from its previous response) or having one answered. A new connection beyond
    `max_connections` closes the waiting one whose wait began first; with none waiting, its own request
    is answered 503. So clients that trickle bytes hold their connections until someone needs one, and
    HEADER_READ_SECONDS or BODY_READ_SECONDS at most.
    """

    header_seconds: float = HEADER_READ_SECONDS
    body_seconds: float = BODY_READ_SECONDS
    max_connections: int = MAX_CONNECTIONS
    max_header_bytes: int = MAX_HEADER_BYTES

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._read_deadline = None
        self._head = b""  # what has arrived of the request line and headers
        self._arm(self.header_seconds)
        open_ = [c for c in self.connections if c is not self and not c.transport.is_closing()]
        if len(open_) >= self.max_connections:
            self._make_room(open_)

    def _make_room(self, others: list) -> None:
        """Closes the connection that has waited longest for its request; with none waiting, answers 503."""
        waiting = [c for c in others if getattr(c, "_read_deadline", None) is not None]
        if waiting:
            oldest = min(waiting, key=lambda c: c._waiting_since)
            oldest._cancel()
            oldest.transport.close()
        elif len(others) >= 2 * self.max_connections:  # a flood: no room to even read a request
            self.transport.close()
        else:
            self.app = _busy

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and not self._within_header_limit(data):
            self._cancel()
            too_long = f"request line and headers over {self.max_header_bytes} bytes"
            self.transport.write(_raw_response(431, "Request Header Fields Too Large", too_long))
            self.transport.close()
            return
        before = self.conn.their_state
        super().data_received(data)
        if before is h11.IDLE and self.conn.their_state is h11.SEND_BODY:
            self._arm(self.body_seconds)  # the headers are in: the body's own deadline
        self._disarm_when_read()

    def _within_header_limit(self, data: bytes) -> bool:
        """Whether the request's head, as far as it has arrived, is within `max_header_bytes`."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        size = end + 4 if end >= 0 else len(self._head)
        if end >= 0 or size > self.max_header_bytes:
            self._head = b""
        return size <= self.max_header_bytes

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._head = b""
            self._arm(self.header_seconds)
            self._disarm_when_read()  # a pipelined request may already be complete

    def connection_lost(self, exc) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._waiting_since = self.loop.time()
        self._read_deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm_when_read(self) -> None:
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._cancel()

    def _cancel(self) -> None:
        if getattr(self, "_read_deadline", None) is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
