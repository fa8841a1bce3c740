"""Background jobs of the console: a replay or purge walks the whole DLQ, so it runs as a task the page polls.

One job runs at a time per process: two passes over one DLQ would take each other's messages and break the
order a pass keeps (see ``ops/dlq.py``). Reads of the DLQ wait for nothing: they answer 409 while a job runs.
A job reports progress (messages scanned of the depth at its start) and, when done, the operation's report.
On shutdown a running job is asked to stop after the batch in hand (the CLI's Ctrl-C), then awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from s2s_daemon.clock import now_ms
from s2s_daemon.observability.logging import get_logger

__all__ = ["Job", "JobBody", "JobRunner", "JobsBusy"]

log = get_logger("s2s.http.console")

JobState = Literal["running", "succeeded", "failed"]
# (progress(scanned, depth), stop) -> the report as JSON
JobBody = Callable[[Callable[[int, int], None], asyncio.Event], Awaitable[dict[str, Any]]]
_KEPT = 20
_STOP_WAIT_S = 30.0


class JobsBusy(Exception):
    def __init__(self, job: Job) -> None:
        super().__init__(f"{job.kind} job {job.id} is running")
        self.job = job


@dataclass(slots=True)
class Job:
    id: str
    kind: str
    who: str
    started_at: int
    state: JobState = "running"
    scanned: int = 0
    depth: int | None = None
    finished_at: int | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "scanned": self.scanned,
            "depth": self.depth,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "report": self.report,
            "error": self.error,
        }


class JobRunner:
    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self.running: Job | None = None

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def submit(self, kind: str, who: str, body: JobBody) -> Job:
        """Start ``body`` as a job; JobsBusy while another one runs."""
        if self.running is not None:
            raise JobsBusy(self.running)
        job = Job(uuid.uuid4().hex[:12], kind, who, now_ms())
        self._jobs[job.id] = job
        while len(self._jobs) > _KEPT:
            self._jobs.popitem(last=False)
        self.running = job
        self._task = asyncio.create_task(self._run(job, body), name=f"s2s-console-{kind}")
        return job

    async def _run(self, job: Job, body: JobBody) -> None:
        def progress(scanned: int, depth: int) -> None:
            job.scanned, job.depth = scanned, depth

        try:
            job.report = await body(progress, job.stop)
            job.state = "succeeded"
        except Exception as exc:
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished_at = now_ms()
            self.running = None
            log.warning(
                "console.job_finished", job=job.id, kind=job.kind, who=job.who, state=job.state, error=job.error
            )

    async def stop(self) -> None:
        if self._task is None or self.running is None:
            return
        self.running.stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), _STOP_WAIT_S)
        if not self._task.done():
            self._task.cancel()
