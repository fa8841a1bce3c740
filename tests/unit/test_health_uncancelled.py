"""Health checks never cancel the call they time (found by the chaos suite: a cancelled pymongo call can corrupt
the client's lock on Python 3.11 and wedge every later MongoDB call)."""

from __future__ import annotations

import asyncio

from s2s_daemon.http.health import backlog_check, ping_check, wait_uncancelled


class SlowCall:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cancelled = False
        self.finished = False

    async def __call__(self) -> int:
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True
        return 7


async def test_a_timed_out_ping_fails_the_check_and_runs_on() -> None:
    """A ping slower than the check's timeout fails the check; the ping itself is left to finish, not cancelled."""
    ping = SlowCall(0.2)
    result = await ping_check(ping, timeout=0.05)
    assert result.status == "fail"
    assert "no answer within" in (result.output or "")
    await asyncio.sleep(0.3)
    assert ping.finished
    assert not ping.cancelled


async def test_a_timed_out_backlog_count_is_not_cancelled() -> None:
    """The outbox backlog count is abandoned on timeout (warn), not cancelled."""
    count = SlowCall(0.2)
    result = await backlog_check(count, warn_above=10, timeout=0.05)()
    assert result.status == "warn"
    await asyncio.sleep(0.3)
    assert count.finished
    assert not count.cancelled


async def test_cancelling_the_waiter_leaves_the_call_alone() -> None:
    """Even when the caller itself is cancelled (an outer timeout), the call goes on to its end."""
    call = SlowCall(0.2)
    waiter = asyncio.ensure_future(wait_uncancelled(call(), 5.0))
    await asyncio.sleep(0.05)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.sleep(0.3)
    assert call.finished
    assert not call.cancelled


async def test_an_abandoned_failure_is_not_reported_as_unretrieved() -> None:
    """A call that fails after it was abandoned leaves no 'exception was never retrieved' behind."""

    async def fails_late() -> None:
        await asyncio.sleep(0.1)
        raise ConnectionError("late")

    result = await ping_check(fails_late, timeout=0.01)
    assert result.status == "fail"
    await asyncio.sleep(0.2)  # filterwarnings=error would turn an unretrieved exception into a failure at gc
