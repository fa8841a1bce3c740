"""A small fault-injecting TCP proxy (asyncio) between the daemon and a downstream.

toxiproxy and ``tc netem`` are not available here, so this stands in for them. Knobs, changeable at any time
from any thread:

* ``latency_ms`` / ``jitter_ms``: every chunk, either direction, waits this long (plus up to the jitter) before
  it is forwarded;
* ``reset_probability``: per request chunk from the client, the connection is reset (RST, SO_LINGER 0) with
  this probability: half the time before the request reaches the upstream (no effect), half the time after
  the upstream answered, instead of forwarding the answer (the effect happened, the client sees a reset);
* ``blackhole``: bytes from either side are swallowed; connections stay open and nothing answers.

``refuse()`` closes the listening socket and every open connection, so new connections are refused (as from a
downstream that is down); ``accept()`` listens on the same port again.

Run it in a thread of the harness (``ProxyThread``) or alone: ``python -m tests.harness.chaos.proxy LISTEN UPSTREAM``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["FaultProxy", "ProxyKnobs", "ProxyThread"]

_CHUNK = 65_536


@dataclass
class ProxyKnobs:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    reset_probability: float = 0.0
    blackhole: bool = False

    def set(self, **knobs: Any) -> None:
        """Replace every knob at once; the ones not given go back to their defaults."""
        unknown = set(knobs) - set(ProxyKnobs.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown proxy knobs: {sorted(unknown)}")
        fresh = ProxyKnobs(**knobs)
        self.__dict__.update(fresh.__dict__)


@dataclass
class ProxyStats:
    connections: int = 0
    resets_before: int = 0
    resets_after: int = 0
    swallowed_chunks: int = 0
    delayed_chunks: int = 0


@dataclass
class _Conn:
    reset_on_answer: bool = False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN."""
    if writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(
        self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1", port: int = 0, seed: int | None = None
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self.knobs = ProxyKnobs()
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def refuse(self) -> None:
        """Stop listening and drop every connection: connects are refused until ``listen``."""
        await self.stop()

    async def listen(self) -> None:
        """Listen again, on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._exchange(client_reader, client_writer)
        finally:
            self._handlers.discard(task)

    async def _exchange(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(client_writer)
            return
        conn = _Conn()
        pumps = [
            asyncio.create_task(self._pump(client_reader, up_writer, client_writer, conn, request=True)),
            asyncio.create_task(self._pump(up_reader, client_writer, client_writer, conn, request=False)),
        ]
        try:
            # HTTP/1.1 clients do not half-close: when one direction ends, the exchange is over
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for writer in (client_writer, up_writer):
                if not writer.transport.is_closing():
                    writer.close()  # FIN (after a reset the transport is already gone)
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        conn: _Conn,
        *,
        request: bool,
    ) -> None:
        try:
            while chunk := await reader.read(_CHUNK):
                knobs = self.knobs
                if knobs.blackhole:
                    self.stats.swallowed_chunks += 1
                    continue
                if knobs.latency_ms or knobs.jitter_ms:
                    self.stats.delayed_chunks += 1
                    await asyncio.sleep((knobs.latency_ms + self._rng.uniform(0, knobs.jitter_ms)) / 1000)
                if request and knobs.reset_probability and self._rng.random() < knobs.reset_probability:
                    if self._rng.random() < 0.5:
                        self.stats.resets_before += 1
                        _reset(client)
                        return
                    conn.reset_on_answer = True
                if not request and conn.reset_on_answer:
                    self.stats.resets_after += 1
                    _reset(client)
                    return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass


class ProxyThread:
    """A FaultProxy on its own event loop in a daemon thread; knobs are plain attributes, safe to set from here."""

    def __init__(self, upstream_host: str, upstream_port: int, seed: int | None = None) -> None:
        self.proxy = FaultProxy(upstream_host, upstream_port, seed=seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def set(self, **knobs: float | bool) -> None:
        self.proxy.knobs.set(**knobs)

    def start(self) -> ProxyThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self

    def refuse(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.refuse(), self._loop).result(10)

    def accept(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.listen(), self._loop).result(10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def main() -> None:  # pragma: no cover - manual use
    parser = argparse.ArgumentParser(description="fault-injecting TCP proxy")
    parser.add_argument("listen", type=int, help="port to listen on (127.0.0.1)")
    parser.add_argument("upstream", help="host:port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--reset-probability", type=float, default=0.0)
    parser.add_argument("--blackhole", action="store_true")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")

    async def serve() -> None:
        proxy = FaultProxy(host or "127.0.0.1", int(port), port=args.listen)
        proxy.knobs.set(
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            reset_probability=args.reset_probability,
            blackhole=args.blackhole,
        )
        await proxy.start()
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":  # pragma: no cover
    main()
