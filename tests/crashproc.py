"""A daemon in its own process that SIGKILLs itself at an injection point (crash-consistency tests).

The points wrap real methods in the child process only; production code has no crash hooks.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

CRASH_POINTS = ("after-call", "after-write", "after-publish")


def _arm(cls: Any, attr: str, after: int) -> None:
    original = getattr(cls, attr)
    hits = 0

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal hits
        result = await original(self, *args, **kwargs)
        hits += 1
        if hits >= after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(cls, attr, wrapper)


def run_daemon(settings_values: dict[str, Any], crash_point: str | None, crash_after: int) -> None:
    """Process entry point: run until SIGTERM, or die by SIGKILL at ``crash_point`` after ``crash_after`` hits."""
    from s2s_daemon.app import Daemon
    from s2s_daemon.messaging.publisher import AmqpPublisher
    from s2s_daemon.observability.logging import configure_logging
    from s2s_daemon.outbox.writer import OutboxWriter
    from s2s_daemon.resilience.client import DownstreamClient
    from s2s_daemon.settings import load_settings

    if crash_point == "after-call":
        _arm(DownstreamClient, "call", crash_after)
    elif crash_point == "after-write":
        _arm(OutboxWriter, "write", crash_after)
    elif crash_point == "after-publish":
        _arm(AmqpPublisher, "publish_outbox_document", crash_after)
    elif crash_point is not None:
        raise ValueError(f"unknown crash point {crash_point!r}")
    configure_logging(os.environ.get("S2S_CHILD_LOG", "WARNING"), "json")
    asyncio.run(Daemon(load_settings(None, **settings_values)).run_until_signalled())
