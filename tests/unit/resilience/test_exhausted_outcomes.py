"""How a call ends when retries run out: always a retryable failure (found by the chaos suite's poison mix)."""

from __future__ import annotations

from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.resilience.client import CallRefused, DownstreamClient, HttpRequest, HttpResponse
from s2s_daemon.settings import DownstreamSettings, RouteSettings


class Always500:
    def __init__(self) -> None:
        self.calls = 0

    async def send(self, request: HttpRequest, timeout: float) -> HttpResponse:
        self.calls += 1
        return HttpResponse(500, {}, b"")

    async def aclose(self) -> None:
        return None


async def test_budget_refusal_after_max_elapsed_is_a_retryable_failure() -> None:
    """A redelivered retry the budget refuses after max_elapsed ends the command as a retryable failure, so the
    pipeline dead-letters it (retries-exhausted) besides the failed reply, instead of a failed reply alone."""
    settings = DownstreamSettings(
        base_url="http://failing",
        retry_budget={"budget_percent": 0.0, "min_retry_concurrency": 0},
        routes={"r": RouteSettings(path="/r")},
    )
    transport = Always500()
    client = DownstreamClient("failing", settings, Metrics(), transport)
    outcome = await client.call(
        RouteSettings(path="/r"), {}, {}, previous_attempts=1, previous_elapsed=settings.retry.max_elapsed + 1
    )
    assert transport.calls == 0
    assert outcome.refused is CallRefused.BUDGET_EXHAUSTED
    assert outcome.message == CallRefused.BUDGET_EXHAUSTED.value
    assert not outcome.ok
    assert outcome.redeliver_after is None
    assert outcome.retryable, "an exhausted retryable failure is dead-lettered, not only answered"
