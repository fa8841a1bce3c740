"""Probes of a dependency: time a ping, give up waiting without cancelling it.

Shared by the health endpoints (``http.health``) and the consumer flow control (``messaging.flow``, which
pings a dependency that went down until it answers again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["CheckResult", "Status", "ping_check", "wait_uncancelled"]

T = TypeVar("T")
Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: Status
    output: str | None = None
    observed_value: float | None = None
    observed_unit: str | None = None


async def wait_uncancelled(awaitable: Awaitable[T], timeout: float) -> T:
    """Wait at most ``timeout`` seconds for ``awaitable`` but never cancel it: on timeout it runs on, ended by its
    client's own timeouts (server selection, socket). Cancelling a pymongo call that waits for a server or a pooled
    connection can corrupt the client's internal lock on Python 3.11 (pymongo waits on its Condition through
    ``asyncio.wait_for``); every later MongoDB call then hangs. Found by the chaos suite: a replica whose health
    ping timed out wedged with 100 unacked commands."""
    task = asyncio.ensure_future(awaitable)
    task.add_done_callback(_retrieve)
    return await asyncio.wait_for(asyncio.shield(task), timeout)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned call's error is already reported as a failed check


async def ping_check(ping: Callable[[], Awaitable[Any]], timeout: float = 1.0) -> CheckResult:
    """Time a ping; fail with a short reason on error or timeout (a timed-out ping is abandoned, not cancelled)."""
    started = time.perf_counter()
    try:
        await wait_uncancelled(ping(), timeout)
    except TimeoutError:
        return CheckResult("fail", f"no answer within {timeout:g}s")
    except Exception as exc:
        return CheckResult("fail", f"{type(exc).__name__}: {exc}"[:200])
    return CheckResult("pass", observed_value=round((time.perf_counter() - started) * 1000, 2), observed_unit="ms")
