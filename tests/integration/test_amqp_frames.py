"""AMQP frames queued in one loop turn go out in one socket write, on a real RabbitMQ: every confirmed publish
arrives once, in order, with its body, and acks joined the same way settle every delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aio_pika
import pytest

from s2s_daemon.messaging import frames

pytestmark = pytest.mark.integration

URL = "amqp://guest:guest@127.0.0.1:5672/"
COUNT = 300


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Sizes of the socket writes aiormq makes (it writes through ``asyncio.StreamWriter``)."""
    sizes: list[int] = []
    write = asyncio.StreamWriter.write

    def counted(self: asyncio.StreamWriter, data: Any) -> None:
        sizes.append(len(data))
        write(self, data)

    monkeypatch.setattr(asyncio.StreamWriter, "write", counted)
    original = frames.FrameGenerator.__anext__
    yield sizes
    frames.FrameGenerator.__anext__ = original  # type: ignore[method-assign]
    frames.Connection.FRAME_BUFFER_SIZE = frames.ORIGINAL_QUEUE_FRAMES


async def publish_and_consume(queue_name: str) -> list[bytes]:
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(queue_name, exclusive=True)
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(f"m{n}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue_name,
                )
                for n in range(COUNT)
            )
        )
        await channel.set_qos(prefetch_count=COUNT)
        received: list[bytes] = []
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(message.body)
            await message.ack()
            if len(received) == COUNT:
                done.set()

        await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 30)
        await channel.close()
        check = await connection.channel()
        left = await check.declare_queue(queue_name, passive=True)
        assert left.declaration_result.message_count == 0  # every ack reached the broker
        return received


async def test_joined_writes_deliver_every_publish_once_in_order(run_id: str, writes: list[int]) -> None:
    assert frames.install()
    assert frames.installed()
    received = await publish_and_consume(f"{run_id}.frames")
    assert received == [f"m{n}".encode() for n in range(COUNT)]
    # 300 publishes and 300 acks, plus the handshake and the declarations: one write each when not joined.
    # One channel sends one publish at a time (aiormq holds its lock until the write drained), so what joins
    # here is acks with publishes and acks with acks.
    assert len(writes) < 2 * COUNT, f"{len(writes)} socket writes for {2 * COUNT} queued frames"


async def test_publishes_handed_over_without_waiting_go_out_in_a_few_writes(run_id: str, writes: list[int]) -> None:
    """The relay's way of publishing (``wait=False``: the sender waits for its confirm, not for the write): with
    aiormq's queue of 10 frames each sender waited for room while holding the channel's lock, one write per
    publish; with the larger queue the whole batch is joined into a few writes, and every publish is confirmed
    and delivered once."""
    assert frames.install()
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"{run_id}.nowait", exclusive=True)
        raw = await channel.get_underlay_channel()
        before = len(writes)
        await asyncio.gather(
            *(
                raw.basic_publish(f"m{n}".encode(), routing_key=queue.name, wait=False)  # type: ignore[call-arg]
                for n in range(COUNT)
            )
        )
        assert len(writes) - before < COUNT / 10, f"{len(writes) - before} socket writes for {COUNT} publishes"
        received: list[bytes] = []
        async with queue.iterator(timeout=10) as messages:
            async for message in messages:
                received.append(message.body)
                await message.ack()
                if len(received) == COUNT:
                    break
    assert sorted(received) == sorted(f"m{n}".encode() for n in range(COUNT))
