"""The fault-injecting TCP proxy against a tiny echo server (no other services)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tests.harness.chaos.proxy import FaultProxy, ProxyKnobs


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = await FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1], seed=1).start()
    yield proxy
    await proxy.stop()
    server.close()
    await server.wait_closed()


async def _roundtrip(port: int, timeout: float = 2.0) -> bytes:
    """Send b"ping", return what comes back; a reset raises ConnectionResetError (also when read as EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"ping")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(1024), timeout)
        if not data:
            raise ConnectionResetError("closed without an answer")
        return data
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.timeout(30)
async def test_passes_through_and_adds_latency(proxy: FaultProxy) -> None:
    """No knobs: bytes pass; 100 ms latency per chunk makes a round trip take >= 200 ms."""
    assert await _roundtrip(proxy.port) == b"ping"
    proxy.knobs.set(latency_ms=100)
    started = time.monotonic()
    assert await _roundtrip(proxy.port) == b"ping"
    assert time.monotonic() - started >= 0.2


@pytest.mark.timeout(30)
async def test_reset_probability_one_resets_every_exchange(proxy: FaultProxy) -> None:
    """With probability 1 every request ends in a reset (before or after the upstream answered)."""
    proxy.knobs.set(reset_probability=1.0)
    for _ in range(10):
        with pytest.raises(ConnectionResetError):
            await _roundtrip(proxy.port)
    assert proxy.stats.resets_before + proxy.stats.resets_after == 10
    assert proxy.stats.resets_before > 0
    assert proxy.stats.resets_after > 0


@pytest.mark.timeout(30)
async def test_blackhole_swallows_and_answers_nothing(proxy: FaultProxy) -> None:
    """Blackhole: the connection stays open and nothing comes back; off again, traffic flows."""
    proxy.knobs.set(blackhole=True)
    with pytest.raises(TimeoutError):
        await _roundtrip(proxy.port, timeout=0.5)
    assert proxy.stats.swallowed_chunks >= 1
    proxy.knobs.set()
    assert await _roundtrip(proxy.port) == b"ping"


def test_unknown_knob_is_refused() -> None:
    """A typo in a knob name fails loudly instead of injecting nothing."""
    with pytest.raises(ValueError, match="unknown proxy knobs"):
        ProxyKnobs().set(latncy_ms=5)
