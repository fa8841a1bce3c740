"""ConsumerGate holds (a dependency every command needs is down) combined with the breaker, and DependencyHold's
probe loop, against a recording stand-in for FastStream's subscriber and its aio-pika queue."""

from __future__ import annotations

import asyncio
from typing import Any

from s2s_daemon.messaging.flow import ConsumerGate, DependencyHold
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.resilience.breaker import CircuitBreaker
from s2s_daemon.settings import BreakerSettings
from tests.unit.resilience.test_breaker import FakeClock


class FakeChannel:
    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    async def set_qos(self, prefetch_count: int) -> None:
        self.log.append(("qos", prefetch_count))


class FakeQueue:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.channel = FakeChannel(self.log)
        self._tags = 0

    async def cancel(self, tag: str) -> None:
        self.log.append(("cancel", tag))

    async def consume(self, callback: Any, arguments: Any = None) -> str:
        self._tags += 1
        self.log.append(("consume", f"tag{self._tags}"))
        return f"tag{self._tags}"


class FakeSubscriber:
    def __init__(self) -> None:
        self._queue_obj = FakeQueue()
        self._consumer_tag: str | None = "tag0"
        self.consume_args: dict[str, Any] = {}

    async def consume(self, msg: Any) -> None:  # pragma: no cover - never delivered here
        pass


def _gate(wait_in_open: float = 5.0) -> tuple[ConsumerGate, FakeSubscriber, CircuitBreaker, FakeClock]:
    clock = FakeClock()
    settings = BreakerSettings(window_size=4, minimum_calls=2, wait_in_open=wait_in_open, permitted_half_open_calls=2)
    breaker = CircuitBreaker("svc", settings, clock)
    subscriber = FakeSubscriber()
    return ConsumerGate("svc", subscriber, breaker, 50, Metrics()), subscriber, breaker, clock


async def test_a_hold_pauses_and_its_release_resumes_with_full_prefetch() -> None:
    gate, sub, _, _ = _gate()
    await gate.hold("redis")
    assert gate.paused
    assert sub._consumer_tag is None
    await gate.release("redis")
    assert not gate.paused
    assert sub._queue_obj.log == [("cancel", "tag0"), ("qos", 50), ("consume", "tag1")]


async def test_the_breaker_closing_does_not_resume_a_held_gate() -> None:
    gate, _sub, breaker, _ = _gate()
    await gate.hold("redis")
    breaker.force_open()
    breaker.force_closed()
    await gate._apply(breaker.state)  # what the transition listener runs
    assert gate.paused, "still held"
    await gate.release("redis")
    assert not gate.paused


async def test_two_holds_need_two_releases() -> None:
    gate, _, _, _ = _gate()
    await gate.hold("redis")
    await gate.hold("other")
    await gate.release("redis")
    assert gate.paused
    await gate.release("other")
    assert not gate.paused


async def test_release_while_the_breaker_waits_in_open_leaves_the_gate_to_the_breaker() -> None:
    """Released during the open wait: still paused, and the probes' resume is scheduled for when it ends."""
    gate, _sub, breaker, _clock = _gate(wait_in_open=5.0)
    await gate.hold("redis")
    breaker.force_open()
    await gate.release("redis")
    assert gate.paused
    assert gate._resume is not None
    assert not gate._resume.done()
    await gate.close()


async def test_release_after_the_open_wait_resumes_with_probe_prefetch() -> None:
    gate, sub, breaker, clock = _gate(wait_in_open=5.0)
    await gate.hold("redis")
    breaker.force_open()
    clock.advance(6.0)
    await gate.release("redis")
    assert not gate.paused
    assert ("qos", 2) in sub._queue_obj.log


async def test_dependency_hold_pauses_every_gate_until_the_probe_answers() -> None:
    """Gates registered after the hold was made (as the daemon does) are held too."""
    gates: dict[str, ConsumerGate] = {}
    answers = iter([ConnectionError("down"), ConnectionError("down"), None])

    async def probe() -> None:
        answer = next(answers)
        if answer is not None:
            raise answer

    hold = DependencyHold("redis", gates, probe, interval=0.01)
    gates.update(a=_gate()[0], b=_gate()[0])
    hold.report_down()
    hold.report_down()  # a second report while holding starts nothing new
    await asyncio.sleep(0.005)
    assert all(g.paused for g in gates.values())
    for _ in range(200):
        if not hold.holding:
            break
        await asyncio.sleep(0.01)
    assert not hold.holding
    assert not any(g.paused for g in gates.values())
    await hold.close()
