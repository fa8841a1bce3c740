"""What every scenario does around its fault: publish, observe, mark fault windows, wait for quiescence,
count. A scenario is a function that builds a ``Stack``, drives a ``Load`` and injects faults in between."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.harness.chaos.counters import Counters, FaultWindow, count
from tests.harness.chaos.producer import Command, Journal, Observer, Publisher, Worker, declare_reply_queue
from tests.harness.chaos.stack import DaemonProcess, Stack

__all__ = ["Load", "ReadinessProbe", "ScenarioResult", "wait_until"]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass
class ScenarioResult:
    name: str
    title: str
    size: dict[str, Any]
    counters: Counters | None = None
    checks: dict[str, bool] = field(default_factory=dict)  # scenario-specific pass conditions
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.counters is not None
            and self.counters.lost == 0
            and self.counters.duplicate_effects == 0
            and all(self.checks.values())
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "passed": self.passed,
            "size": self.size,
            "counters": self.counters.as_dict() if self.counters else None,
            "checks": self.checks,
            "details": self.details,
            "seconds": round(self.seconds, 1),
            "error": self.error,
        }


class Load:
    """Publisher + observer against one stack, the fault windows, and the final count."""

    def __init__(
        self,
        stack: Stack,
        commands: list[Command],
        rate: float,
        side: list[Command] | None = None,
        after: Load | None = None,
    ) -> None:
        """``commands`` at ``rate`` per second; ``side`` (if any) from a second producer with its own connection,
        spread over the same time (the poison scenario's misbehaving producers). ``after``: a finished load this
        one continues (same journal and fault windows), so that the final count covers both."""
        self.stack = stack
        self.journal: Journal = after.journal if after is not None else Journal()
        url = stack.amqp_urls
        declare_reply_queue(url, stack.reply_queue)
        self.observers = [
            Observer(url, stack.reply_queue, self.journal),
            Observer(url, stack.dlq, self.journal, dead=True),
        ]
        self.publishers = [Publisher(url, stack.commands_exchange, stack.reply_queue, commands, self.journal, rate)]
        if side:
            side_rate = len(side) / (len(commands) / rate) if rate > 0 else 0.0
            self.publishers.append(
                Publisher(url, stack.commands_exchange, stack.reply_queue, side, self.journal, side_rate)
            )
        self.total = len(commands) + len(side or [])
        self.faults: list[FaultWindow] = list(after.faults) if after is not None else []
        self.started = 0.0
        self.counters: Counters | None = None  # set by whoever calls finish() and keeps the load

    def start(self) -> Load:
        self.started = time.monotonic()
        for thread in (*self.observers, *self.publishers):
            thread.start()
        return self

    def since_start(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def wait_answered(self, fraction: float, timeout: float) -> bool:
        """Block until ``fraction`` of the commands are answered (reply or DLQ); the fault trigger."""
        target = max(1, int(self.total * fraction))
        return wait_until(lambda: self.journal.answered >= target or self._threads_failed(), timeout, 0.05)

    @contextlib.contextmanager
    def fault(self, name: str) -> Iterator[None]:
        """Mark a fault window: from entering to leaving the block (leaving = healed)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.faults.append(FaultWindow(name, start, time.monotonic()))

    def quiesce(self, timeout: float, stall: float, settle: float = 3.0) -> dict[str, Any]:
        """Wait until every confirmed command is answered and the outbox has nothing left to publish (re-sent
        replies would show up late), then ``settle`` seconds more; give up when nothing moved for ``stall``
        seconds or after ``timeout``."""
        began = time.monotonic()
        last_progress, last_seen = began, None
        settled = drained = False
        while time.monotonic() - began < timeout and not self._threads_failed():
            if not settled:
                settled = self.journal.settled() and not any(p.is_alive() for p in self.publishers)
                seen: Any = self.journal.answered
            else:
                seen = self._backlog()
                drained = seen == 0
                if drained:
                    break
            if seen != last_seen:
                last_progress, last_seen = time.monotonic(), seen
            if time.monotonic() - last_progress > stall:
                break
            time.sleep(0.2 if not settled else 1.0)
        if settled:
            time.sleep(settle)
        return {"settled": settled, "outbox_drained": drained, "waited_s": round(time.monotonic() - began, 1)}

    def _backlog(self) -> int | None:
        try:
            counts = self.stack.outbox_counts()
        except Exception:  # the store may be restarting: no answer is no progress
            return None
        return counts["pending"] + counts["publishing"]

    def finish(self) -> Counters:
        threads: tuple[Worker, ...] = (*self.publishers, *self.observers)
        for thread in threads:
            thread.stop()
        for thread in threads:
            thread.join(30)
            if thread.error is not None:
                raise RuntimeError(f"{thread.name} failed: {thread.error!r}") from thread.error
        return count(self.journal, self.stack.demo.stats("a"), self.faults)

    def _threads_failed(self) -> bool:
        return any(t.error is not None for t in (*self.publishers, *self.observers))

    def details(self) -> dict[str, Any]:
        return {
            "publisher_reconnects": sum(p.reconnects for p in self.publishers),
            "observer_reconnects": sum(o.reconnects for o in self.observers),
            "publish_errors": sorted(set(self.journal.publish_errors))[:5],
            "stray_answers": self.journal.stray,
            "faults": [
                {"name": f.name, "at_s": round(f.start - self.started, 2), "seconds": round(f.end - f.start, 2)}
                for f in self.faults
            ],
        }


class ReadinessProbe(threading.Thread):
    """Polls GET /readyz of the given daemons every ``interval`` seconds: (monotonic time, status or None)."""

    def __init__(self, daemons: list[DaemonProcess], interval: float = 0.25) -> None:
        super().__init__(name="chaos-readiness", daemon=True)
        self.daemons = daemons
        self.interval = interval
        self.samples: list[tuple[float, str, int | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            for daemon in list(self.daemons):
                self.samples.append((time.monotonic(), daemon.name, daemon.readyz(timeout=1.0)))

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)

    def between(self, start: float, end: float) -> list[int | None]:
        return [code for t, _, code in self.samples if start <= t <= end]
