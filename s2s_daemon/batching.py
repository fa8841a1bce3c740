"""Group commit: concurrent single-item requests become one round trip, each caller still gets its own answer
(or exception) before it goes on.

No timer: a batch is flushed on the next turn of the event loop, so at low load a request waits for nothing
and under load everything submitted in the same turn shares one call. With ``max_in_flight`` batch calls
running, the next batch waits for one of them to finish and takes everything submitted meanwhile (group
commit as databases do it: the batches grow with the load, never with a timer). ``GroupCommit`` runs any batch call that
answers per item: the outbox inserts (one ``insert_many(ordered=False)``) and the Redis claims and completions
(one pipeline). ``MicroBatcher`` is the lookup by key on top of it (on nx-27017 one ``$in`` query of 100 keys
costs about what 7 single lookups do). Used by the outbox and the idempotency store alike, so it sits in the
lowest layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

__all__ = ["GroupCommit", "MicroBatcher"]


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        max_batch: int = 200,
        max_in_flight: int = 2,
    ) -> None:
        """``run(items)`` answers item by item, in order: a result, or an exception raised to that caller alone.
        An exception ``run`` raises itself reaches every caller of the batch."""
        self._run_batch = run
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._scheduled = False

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._pending and self._in_flight < self._max_in_flight:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            self._in_flight += 1
            task = loop.create_task(self._run(batch))
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight -= 1
        if not task.cancelled():
            task.exception()  # already delivered to the waiters; mark retrieved
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._run_batch([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)


class MicroBatcher(Generic[K, R]):
    """Lookups by key: the keys asked for in one loop turn become one ``fetch``."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, R]]], max_batch: int = 200) -> None:
        """``fetch(keys)`` returns a mapping; keys it leaves out resolve to None."""
        self._fetch = fetch
        self._group: GroupCommit[K, R | None] = GroupCommit(self._lookup, max_batch)

    async def get(self, key: K) -> R | None:
        return await self._group.submit(key)

    async def _lookup(self, keys: list[K]) -> list[R | None]:
        found = await self._fetch(list(dict.fromkeys(keys)))  # each key once, in order
        return [found.get(key) for key in keys]
