"""Micro-batching: concurrent single-item requests become one round trip, each caller still gets its own
answer (or exception) before it goes on.

No timer: a batch is flushed on the next turn of the event loop, so at low load a request waits for nothing
and under load everything submitted in the same turn shares one query. Used for the outbox lookups by key:
on nx-27017 one ``$in`` query of 100 keys costs about what 7 single lookups do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class MicroBatcher(Generic[K, R]):
    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, R]]], max_batch: int = 200) -> None:
        """``fetch(keys)`` returns a mapping; keys it leaves out resolve to None."""
        self._fetch = fetch
        self._max_batch = max_batch
        self._pending: dict[K, list[asyncio.Future[R | None]]] = {}
        self._scheduled = False

    async def get(self, key: K) -> R | None:
        future: asyncio.Future[R | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        keys = list(pending)
        for start in range(0, len(keys), self._max_batch):
            chunk = keys[start : start + self._max_batch]
            task = asyncio.get_running_loop().create_task(self._run({k: pending[k] for k in chunk}))
            task.add_done_callback(_consume_result)

    async def _run(self, waiting: dict[K, list[asyncio.Future[R | None]]]) -> None:
        try:
            found = await self._fetch(list(waiting))
        except BaseException as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(key))


def _consume_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # already delivered to the waiters; mark retrieved
