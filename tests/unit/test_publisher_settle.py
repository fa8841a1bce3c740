"""The relay's publish of one record: the event and the reply both go out with their confirms in flight at
once; any failure fails the record, a lost connection as ``DependencyUnavailable``; a cancelled publish takes
the reply with it. The sender here is a recorder of ``send`` calls (the real one is in
tests/integration/test_command_flow.py, test_relay_broker_outage.py and test_publisher_properties.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from faststream.rabbit import RabbitBroker

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.messaging.publisher import AmqpPublisher
from s2s_daemon.messaging.topology import Topology
from tests.outboxdocs import outbox_record


class Sender:
    def __init__(self, fail: dict[str, BaseException] | None = None, hold: tuple[str, ...] = ()) -> None:
        self.fail = fail or {}
        self.hold = hold
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []

    async def send(self, body: bytes, *, exchange: str, **_: Any) -> None:
        what = "reply" if exchange == "" else "event"
        self.started.append(what)
        try:
            await asyncio.sleep(3600 if what in self.hold else 0)
        except asyncio.CancelledError:
            self.cancelled.append(what)
            raise
        if what in self.fail:
            raise self.fail[what]
        self.finished.append(what)


def publisher(broker: Sender) -> AmqpPublisher:
    topology = Topology("s2s", ("service-a",), 5, (1, 5, 30))
    return AmqpPublisher(cast(RabbitBroker, None), topology, "s2s-daemon", sender=broker)


async def test_event_and_reply_both_published_event_first() -> None:
    broker = Sender()
    await publisher(broker).publish_outbox_document(outbox_record("k1", reply_to="amq.gen-x"))
    assert broker.started == ["event", "reply"]
    assert sorted(broker.finished) == ["event", "reply"]


async def test_without_a_reply_only_the_event() -> None:
    broker = Sender()
    await publisher(broker).publish_outbox_document(outbox_record("k2"))
    assert broker.finished == ["event"]


@pytest.mark.parametrize("failing", ["event", "reply"])
async def test_either_failure_fails_the_record_after_both_settled(failing: str) -> None:
    broker = Sender(fail={failing: ValueError("nope")})
    with pytest.raises(ValueError, match="nope"):
        await publisher(broker).publish_outbox_document(outbox_record("k3", reply_to="amq.gen-x"))
    assert broker.finished == [w for w in ("event", "reply") if w != failing]


async def test_a_lost_connection_is_dependency_unavailable() -> None:
    broker = Sender(fail={"event": ConnectionResetError("gone")})
    with pytest.raises(DependencyUnavailable):
        await publisher(broker).publish_outbox_document(outbox_record("k4", reply_to="amq.gen-x"))


async def test_cancelling_the_record_cancels_the_reply_too() -> None:
    broker = Sender(hold=("event", "reply"))
    task = asyncio.create_task(publisher(broker).publish_outbox_document(outbox_record("k5", reply_to="amq.gen-x")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert broker.started == ["event", "reply"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert sorted(broker.cancelled) == ["event", "reply"]
    assert broker.finished == []
