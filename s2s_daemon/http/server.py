"""Serve an ASGI app with uvicorn inside the daemon's event loop (signals stay the daemon's).

The app's lifespan runs: startup before the first request is served (a failure there fails ``start()`` with
the app's own exception), shutdown after the last connection closed.

HTTP/1.1 is parsed by httptools (llhttp, in C), not h11: under webhook load h11's pure-Python parsing and
response framing were ~18% of the daemon's CPU. h11 bounded a request's head (request line and headers) to
16 KiB; ``_HttpToolsProtocol`` keeps that bound, which uvicorn's httptools protocol does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# h11's default bound on an incomplete event (uvicorn's ``h11_max_incomplete_event_size``), kept for the head.
MAX_HEAD_BYTES = 16 * 1024
_INVALID_REQUEST = "Invalid HTTP request received."  # uvicorn's own answer to a request it cannot parse


class RequestHeadTooLarge(Exception):
    """Raised inside the parser's callback: httptools turns it into the parse error uvicorn answers with 400."""


class _HttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request head: a head larger than ``MAX_HEAD_BYTES``
    is answered 400 and the connection closed, as h11 did. Counted twice: the parsed request line and header
    fields exactly when the head completes, and the raw bytes received while it is incomplete (so an endless
    header is cut off after at most one more read, never buffered whole)."""

    _head_bytes = 0  # parsed url + header names and values of the current request
    _unparsed_head = 0  # raw bytes received since the current head began
    _in_body = False

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            super().data_received(data)
            return
        self._unparsed_head += len(data)
        super().data_received(data)
        if not self._in_body and self._unparsed_head > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.logger.warning(_INVALID_REQUEST)
            self.send_400_response(_INVALID_REQUEST)

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_bytes > MAX_HEAD_BYTES:
            raise RequestHeadTooLarge(f"request head larger than {MAX_HEAD_BYTES} bytes")
        self._in_body = True
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:  # the cycle of this request was created
            self.cycle.transport = _HeadWithBody(self.transport, self.cycle)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._in_body = False
        self._unparsed_head = 0
        super().on_message_complete()


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT and stops the sidecar itself, after draining.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn answers a failed lifespan startup with sys.exit(), which would escape the daemon's event
        # loop from inside a task; stop serving instead and let SidecarServer.start() raise the cause.
        try:
            await super().startup(sockets)
        except SystemExit:
            self.should_exit = True


class _HeadWithBody:
    """The transport as one response cycle writes to it: the response head is held back and goes out in one
    write with the first body bytes. uvicorn writes the head on ``http.response.start`` and the body on
    ``http.response.body``: two send() calls and two TCP segments per response, the syscalls ~3% of the
    daemon's CPU per webhook delivery. A head whose body does not follow in the same step goes out on the
    loop's next turn, or before a close."""

    __slots__ = ("_cycle", "_held", "_seen_head", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._held: bytes | None = None
        self._seen_head = False

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif not self._seen_head and self._cycle.response_started:  # the head (a 100 Continue comes before it)
            self._seen_head = True
            self._held = data
            asyncio.get_running_loop().call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class SidecarServer:
    def __init__(self, app: Any, host: str, port: int) -> None:
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host = host
        self.port = self._sock.getsockname()[1]
        self._app = app
        self._startup_error: BaseException | None = None
        config = uvicorn.Config(
            self._serve_app,
            interface="asgi3",
            http=_HttpToolsProtocol,
            log_config=None,
            access_log=False,
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="s2s-sidecar")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises a bind or serve error
                self._task = None
                self._sock.close()
                raise self._startup_error or RuntimeError("sidecar did not start")
            await asyncio.sleep(0.01)

    async def _serve_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._app(scope, receive, send)
        except BaseException as exc:
            if scope["type"] == "lifespan" and not self._server.started:
                self._startup_error = exc  # uvicorn only logs it; start() raises it
            raise

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        self._sock.close()
