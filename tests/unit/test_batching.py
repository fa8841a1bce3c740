"""Micro-batching of concurrent lookups."""

from __future__ import annotations

import asyncio

import pytest

from s2s_daemon.batching import GroupCommit, MicroBatcher


async def test_concurrent_gets_share_one_fetch_and_get_their_own_answer() -> None:
    """Lookups submitted in the same loop turn become one fetch; each caller gets its key's value or None."""
    calls: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, int]:
        calls.append(sorted(keys))
        return {k: len(k) for k in keys if k != "missing"}

    batcher: MicroBatcher[str, int] = MicroBatcher(fetch)
    results = await asyncio.gather(*(batcher.get(k) for k in ["a", "bb", "a", "missing"]))
    assert results == [1, 2, 1, None]
    assert calls == [["a", "bb", "missing"]]


async def test_batches_are_capped() -> None:
    """More keys than max_batch are split into several fetches."""
    sizes: list[int] = []

    async def fetch(keys: list[int]) -> dict[int, int]:
        sizes.append(len(keys))
        return {k: k for k in keys}

    batcher: MicroBatcher[int, int] = MicroBatcher(fetch, max_batch=3)
    assert await asyncio.gather(*(batcher.get(i) for i in range(7))) == list(range(7))
    assert sorted(sizes) == [1, 3, 3]


async def test_a_failed_fetch_fails_every_waiter_of_that_batch() -> None:
    """An error reaches each caller of the batch, and the next batch works again."""
    fail = True

    async def fetch(keys: list[str]) -> dict[str, str]:
        if fail:
            raise ConnectionError("store down")
        return {k: k for k in keys}

    batcher: MicroBatcher[str, str] = MicroBatcher(fetch)
    results = await asyncio.gather(batcher.get("x"), batcher.get("y"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    fail = False
    assert await batcher.get("z") == "z"
    fail = True
    with pytest.raises(ConnectionError):
        await batcher.get("w")


async def test_group_commit_answers_each_caller_with_its_own_result_or_error() -> None:
    """Items submitted in one loop turn are one call; a per-item exception reaches that caller only."""
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(run)
    results = await asyncio.gather(*(group.submit(i) for i in range(4)), return_exceptions=True)
    assert calls == [[0, 1, 2, 3]]
    assert [results[0], results[2]] == [0, 20]
    assert [str(r) for r in results[1::2]] == ["odd 1", "odd 3"]
    assert all(isinstance(r, ValueError) for r in results[1::2])


async def test_group_commit_failure_of_the_call_fails_every_caller_of_that_batch() -> None:
    """An exception of the batch call itself reaches every caller of that batch, and the next batch works."""
    fail = True

    async def run(items: list[str]) -> list[str | BaseException]:
        if fail:
            raise ConnectionError("store down")
        return list(items)

    group: GroupCommit[str, str] = GroupCommit(run)
    results = await asyncio.gather(group.submit("x"), group.submit("y"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    fail = False
    assert await group.submit("z") == "z"


async def test_group_commit_batches_grow_while_calls_are_in_flight() -> None:
    """With max_in_flight calls running, what is submitted meanwhile waits and goes out as one batch when a
    call finishes (the batch size follows the load, no timer)."""
    release = asyncio.Event()
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        await release.wait()
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(run, max_in_flight=1)
    first = asyncio.ensure_future(group.submit(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(group.submit(i)) for i in range(1, 5)]
    await asyncio.sleep(0.01)
    assert calls == [[0]], "the later items wait while the first call runs"
    release.set()
    assert await asyncio.gather(first, *later) == [0, 1, 2, 3, 4]
    assert calls == [[0], [1, 2, 3, 4]]
