"""Serve an ASGI app with uvicorn inside the daemon's event loop (signals stay the daemon's).

The app's lifespan runs: startup before the first request is served (a failure there fails ``start()`` with
the app's own exception), shutdown after the last connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send


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
