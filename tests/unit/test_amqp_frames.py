"""Joining queued AMQP frames into one write: same bytes in the same order, every waiting sender released
only by the joined drain, a closing frame ends the join, the size cap holds."""

from __future__ import annotations

import asyncio

from aiormq.abc import ChannelFrame

from s2s_daemon.messaging import frames


def queue_of(*items: ChannelFrame) -> asyncio.Queue[ChannelFrame]:
    queue: asyncio.Queue[ChannelFrame] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    return queue


async def test_queued_frames_are_joined_in_order_and_released_by_one_drain() -> None:
    loop = asyncio.get_running_loop()
    waits = [loop.create_future(), None, loop.create_future()]
    first, *rest = [
        ChannelFrame(payload=bytes([n]) * 3, should_close=False, drain_future=w) for n, w in enumerate(waits)
    ]
    queue = queue_of(*rest)
    joined = frames.join_queued(first, queue)
    assert joined.payload == b"\x00\x00\x00\x01\x01\x01\x02\x02\x02"
    assert queue.empty()
    assert not joined.should_close
    assert joined.should_drain
    await asyncio.sleep(0)
    assert not any(w.done() for w in waits if w is not None)  # not before the joined write drained
    joined.drain()
    await asyncio.sleep(0)
    assert all(w.done() and w.result() is None for w in waits if w is not None)


async def test_a_cancelled_sender_is_skipped_and_a_failed_drain_fails_the_others() -> None:
    loop = asyncio.get_running_loop()
    gone, waiting = loop.create_future(), loop.create_future()
    gone.cancel()
    joined = frames.join_queued(
        ChannelFrame(payload=b"a", should_close=False, drain_future=gone),
        queue_of(ChannelFrame(payload=b"b", should_close=False, drain_future=waiting)),
    )
    assert joined.drain_future is not None
    joined.drain_future.set_exception(ConnectionResetError("peer gone"))
    await asyncio.sleep(0)
    assert isinstance(waiting.exception(), ConnectionResetError)


async def test_a_closing_frame_ends_the_join() -> None:
    closing = ChannelFrame(payload=b"close", should_close=True)
    after = ChannelFrame(payload=b"after", should_close=False)
    queue = queue_of(closing, after)
    joined = frames.join_queued(ChannelFrame(payload=b"ack", should_close=False), queue)
    assert joined.payload == b"ackclose"
    assert joined.should_close
    assert joined.drain_future is None
    assert queue.get_nowait() is after
    alone = frames.join_queued(closing, queue_of(after))
    assert alone is closing


async def test_joining_stops_at_the_size_cap() -> None:
    big = b"x" * (frames.MAX_BYTES // 2)
    queue = queue_of(*(ChannelFrame(payload=big, should_close=False) for _ in range(3)))
    joined = frames.join_queued(ChannelFrame(payload=big, should_close=False), queue)
    assert len(joined.payload) == frames.MAX_BYTES
    assert queue.qsize() == 2
    huge = ChannelFrame(payload=b"y" * frames.MAX_BYTES, should_close=False)
    assert frames.join_queued(huge, queue) is huge


async def test_nothing_queued_returns_the_frame_itself() -> None:
    frame = ChannelFrame(payload=b"a", should_close=False)
    assert frames.join_queued(frame, queue_of()) is frame
