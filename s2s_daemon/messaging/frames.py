"""One socket write for every AMQP frame queued in an event-loop turn, instead of one write per frame.

aiormq queues each outgoing method (a publish with its header and body, an ack, a confirm-select) as one
``ChannelFrame`` and its writer task calls ``StreamWriter.write`` once per queued item: one ``send()`` system
call per ack and per publish, 8-9% of the daemon's CPU under max load by py-spy. Under load many frames wait
in the queue by the time the writer task runs, so :func:`install` makes aiormq's frame iterator hand the
writer every frame already queued (up to :data:`MAX_BYTES`) joined into one. Nothing else changes:

* the bytes and their order on the wire are the same (the frames are concatenated in queue order);
* a frame whose sender waits for the write (``drain_future``) is released only after the joined write has
  been drained, exactly as when it was written alone;
* a frame that closes the connection (``Connection.CloseOk``) ends the joined frame, so the writer still
  stops right after it.

aiormq's connection queue holds only :data:`ORIGINAL_QUEUE_FRAMES` frames: a sender finding it full waits
while holding its channel's lock, so the relay's publishes (handed over without waiting for their writes) went
into the queue about one per loop turn and were written one by one. :func:`install` raises the bound to
:data:`QUEUE_FRAMES` for connections opened afterwards (``Connection.FRAME_BUFFER_SIZE``, the class attribute
aiormq reads when it creates the queue). What waits in the queue is bounded by its senders anyway: the relay
keeps at most four batches of publishes in flight, the consumers at most their prefetch of acks.

This replaces ``aiormq.connection.FrameGenerator.__anext__`` and that bound, nothing else. It is installed only for the
aiormq versions it was checked against (:data:`CHECKED`); with any other version :func:`install` leaves aiormq
alone and returns ``False`` (frames are then written one by one, as before).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from typing import Any

from aiormq.abc import ChannelFrame
from aiormq.connection import Connection, FrameGenerator

__all__ = ["CHECKED", "MAX_BYTES", "QUEUE_FRAMES", "install", "installed", "join_queued"]

CHECKED = ("7.2.",)
"""aiormq version prefixes whose writer and ``FrameGenerator`` this module was read against."""

MAX_BYTES = 256 * 1024
"""Stop joining once this many bytes are gathered (a frame already larger is written alone, as before)."""

QUEUE_FRAMES = 1024
"""Frames a connection's write queue holds once installed (aiormq's own bound is 10)."""

ORIGINAL_QUEUE_FRAMES = Connection.FRAME_BUFFER_SIZE

_ORIGINAL_ANEXT = FrameGenerator.__anext__


def join_queued(first: ChannelFrame, queue: asyncio.Queue[ChannelFrame]) -> ChannelFrame:
    """``first`` and the frames already waiting in ``queue``, joined into one ``ChannelFrame``."""
    if first.should_close or queue.empty() or len(first.payload) >= MAX_BYTES:
        return first
    frames = [first]
    size = len(first.payload)
    while size < MAX_BYTES and not queue.empty():
        frame = queue.get_nowait()
        queue.task_done()
        frames.append(frame)
        size += len(frame.payload)
        if frame.should_close:
            break
    if len(frames) == 1:
        return first
    waiting = [frame.drain_future for frame in frames if frame.drain_future is not None]
    drain_future: asyncio.Future[Any] | None = None
    if waiting:
        drain_future = asyncio.get_running_loop().create_future()
        drain_future.add_done_callback(lambda done: _release(done, waiting))
    return ChannelFrame(
        payload=b"".join(frame.payload for frame in frames),
        should_close=frames[-1].should_close,
        drain_future=drain_future,
    )


def _release(done: asyncio.Future[Any], waiting: list[asyncio.Future[Any]]) -> None:
    """Pass the joined frame's drain to every frame in it whose sender still waits."""
    for future in waiting:
        if future.done():
            continue
        if done.cancelled():
            future.cancel()
        elif done.exception() is not None:
            future.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            future.set_result(None)


async def _joined_anext(self: FrameGenerator) -> ChannelFrame:
    frame: ChannelFrame = await _ORIGINAL_ANEXT(self)
    return join_queued(frame, self.queue)


def installed() -> bool:
    """Whether aiormq's frame iterator currently joins queued frames (and its write queue is the larger one)."""
    return FrameGenerator.__anext__ is _joined_anext and Connection.FRAME_BUFFER_SIZE >= QUEUE_FRAMES


def install() -> bool:
    """Join queued frames into one write (idempotent); ``False`` when this aiormq version was not checked."""
    version = importlib.metadata.version("aiormq")
    if not version.startswith(CHECKED):
        return False
    FrameGenerator.__anext__ = _joined_anext  # type: ignore[method-assign]
    Connection.FRAME_BUFFER_SIZE = max(Connection.FRAME_BUFFER_SIZE, QUEUE_FRAMES)
    return True
