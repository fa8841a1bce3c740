"""The client's fixed layer order: deadline -> bulkhead -> breaker -> retry(timeout(call))."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from s2s_daemon.errors import ErrorKind
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.resilience.breaker import BreakerState
from s2s_daemon.resilience.client import CallRefused, DownstreamClient, HttpRequest, HttpResponse, TransportFailure
from s2s_daemon.settings import DownstreamSettings, RouteSettings

ROUTE = RouteSettings(path="/resource")


class FakeTransport:
    """Answers from a script of statuses (or exceptions); records every request and its timeout."""

    def __init__(self, script: list[int | Exception], gate: asyncio.Event | None = None) -> None:
        self.script = script
        self.gate = gate
        self.sent: list[tuple[HttpRequest, float]] = []

    async def send(self, request: HttpRequest, timeout: float) -> HttpResponse:
        self.sent.append((request, timeout))
        if self.gate is not None:
            await self.gate.wait()
        item = self.script.pop(0) if self.script else 200
        if isinstance(item, Exception):
            raise item
        return HttpResponse(item, {"content-type": "application/json"}, b"{}")

    async def aclose(self) -> None:
        return None


def _client(transport: FakeTransport, **overrides: object) -> DownstreamClient:
    settings = DownstreamSettings.model_validate(
        {
            "base_url": "http://downstream",
            "routes": {"r": {"path": "/resource"}},
            "retry": {"max_attempts": 3, "initial_delay": 0.0, "max_delay": 0.0, "in_process_max_wait": 1.0},
            **overrides,
        }
    )
    return DownstreamClient("svc", settings, Metrics(), transport, rng=random.Random(1))


async def test_deadline_is_checked_before_anything_else() -> None:
    """A passed deadline answers 'expired' without a bulkhead slot, a breaker permit or a call."""
    transport = FakeTransport([])
    client = _client(transport)
    outcome = await client.call(ROUTE, {"name": "x"}, {}, deadline_ms=int((time.time() - 1) * 1000))
    assert outcome.error_kind is ErrorKind.EXPIRED
    assert transport.sent == []
    assert client.breaker.metrics_snapshot().calls == 0


async def test_full_bulkhead_delays_instead_of_dropping() -> None:
    """With max_concurrency=1 the second call waits for the first, then runs; nothing is refused."""
    gate = asyncio.Event()
    transport = FakeTransport([200, 200], gate)
    client = _client(transport, max_concurrency=1)
    first = asyncio.create_task(client.call(ROUTE, {"name": "a"}, {}))
    second = asyncio.create_task(client.call(ROUTE, {"name": "b"}, {}))
    await asyncio.sleep(0.05)
    assert len(transport.sent) == 1, "the second call waits at the bulkhead"
    gate.set()
    results = await asyncio.gather(first, second)
    assert [r.ok for r in results] == [True, True]
    assert len(transport.sent) == 2


async def test_open_breaker_refuses_before_retry_and_call() -> None:
    """An open breaker parks the command: no HTTP attempt, a redelivery hint, no attempts counted."""
    transport = FakeTransport([])
    client = _client(transport)
    client.breaker.force_open()
    outcome = await client.call(ROUTE, {"name": "x"}, {})
    assert outcome.refused is CallRefused.BREAKER_OPEN
    assert outcome.message == CallRefused.BREAKER_OPEN.value
    assert outcome.redeliver_after is not None
    assert outcome.redeliver_after >= 1.0
    assert outcome.attempts == 0
    assert transport.sent == []


async def test_retry_runs_inside_one_breaker_admission_with_per_attempt_timeout() -> None:
    """Retries happen inside the breaker layer; every attempt gets the downstream timeout and reports to it."""
    transport = FakeTransport([503, TransportFailure("ConnectError: refused"), 200])
    client = _client(transport, timeout=0.7)
    outcome = await client.call(ROUTE, {"name": "x"}, {})
    assert outcome.ok
    assert outcome.attempts == 3
    assert [t for _, t in transport.sent] == [0.7, 0.7, 0.7]
    snapshot = client.breaker.metrics_snapshot()
    assert (snapshot.calls, snapshot.failures) == (3, 2)


async def test_breaker_opening_mid_retry_parks_the_command() -> None:
    """When attempts open the breaker, the next retry is refused and the command is parked, not failed."""
    transport = FakeTransport([503] * 10)
    client = _client(
        transport,
        retry={"max_attempts": 10, "initial_delay": 0.0, "max_delay": 0.0},
        retry_budget={"budget_percent": 100, "min_retry_concurrency": 10},
        breaker={"window_size": 2, "minimum_calls": 2, "wait_in_open": 5.0},
    )
    outcome = await client.call(ROUTE, {"name": "x"}, {})
    assert client.breaker.state is BreakerState.OPEN
    assert len(transport.sent) == 2
    assert outcome.redeliver_after is not None
    assert outcome.attempts == 2


async def test_timeout_of_an_attempt_respects_the_deadline() -> None:
    """An attempt never waits past the command's deadline: its timeout is the smaller of the two."""
    transport = FakeTransport([200])
    client = _client(transport, timeout=30.0)
    await client.call(ROUTE, {"name": "x"}, {}, deadline_ms=int((time.time() + 2) * 1000))
    [(_, timeout)] = transport.sent
    assert 0 < timeout <= 2.0


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_permanent_errors_are_not_retried(status: int) -> None:
    """4xx (other than 408/429) fail at once as 'rejected' and do not count against the breaker."""
    transport = FakeTransport([status])
    client = _client(transport)
    outcome = await client.call(ROUTE, {"name": "x"}, {})
    assert outcome.error_kind is ErrorKind.REJECTED
    assert outcome.redeliver_after is None
    assert len(transport.sent) == 1
    assert client.breaker.metrics_snapshot().calls == 0
