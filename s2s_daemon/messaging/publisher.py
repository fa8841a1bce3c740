"""Every publish the daemon makes: persistent, with publisher confirms (FastStream's default channel
confirms; ``broker.publish`` returns after the broker confirmed).

The relay's replies and events, the daemon's busiest publishes, skip FastStream's and aio-pika's publish
layers: :class:`ConfirmedSender` hands each message to aiormq on the same confirming channel without waiting for
its frames to be written (aiormq holds the channel's lock until the write drained when asked to wait, so the
publishes of a relay batch went out one per event-loop turn), then waits for its confirm as before. The
message's properties are the ones FastStream sets (persistent, content type, correlation and message id,
timestamp, type, app id, headers).

With tracing on, the relay's reply and event are producer spans: children of the context the outbox record
kept (a command's consumer span), or, for a webhook's event, a new trace linked to the request's server span.
The published message carries the producer span's context.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias, cast

import orjson
from aio_pika.abc import AbstractIncomingMessage
from aiormq import Channel as AmqpChannel
from aiormq import spec
from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError
from faststream.exceptions import IncorrectState
from faststream.rabbit import RabbitBroker

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import DeadLetterReason, DependencyUnavailable
from s2s_daemon.messaging import contracts as c
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.observability.correlation import H_TRACEPARENT, H_TRACESTATE, TraceContext
from s2s_daemon.observability.tracing import NO_TRACING, SpanKind, Tracing

Properties: TypeAlias = spec.Basic.Properties  # pamqp's, as aiormq exports it


class Publishable(Protocol):
    """What the relay hands over: an outbox record (``outbox.OutboxRecord``; the outbox sits beside messaging,
    and this keeps the two from importing each other)."""

    @property
    def kind(self) -> str: ...
    @property
    def correlation_id(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def reply(self) -> dict[str, Any] | None: ...
    @property
    def event(self) -> dict[str, Any]: ...
    @property
    def event_id(self) -> str: ...
    @property
    def event_routing_key(self) -> str: ...


_HEADER_DETAIL_MAX = 500
# the connection (or its channel) is gone, or not there yet: the broker is unreachable, the message is not at fault
_BROKER_DOWN = (ChannelInvalidStateError, AMQPConnectionError, ConnectionError, IncorrectState)
_PERSISTENT = 2


class Sender(Protocol):
    """Publishes one message and returns once the broker confirmed it."""

    async def send(self, body: bytes, *, exchange: str, routing_key: str, properties: Properties) -> None: ...


class ConfirmedSender:
    """Publishes on the broker's default channel (publisher confirms on) through aiormq, without waiting for the
    frames to be written: only for the confirm. ``mandatory`` is off, as for every publish of the daemon."""

    def __init__(self, broker: RabbitBroker) -> None:
        self._broker = broker
        self._channel: AmqpChannel | None = None
        # an aiormq whose basic_publish has no ``wait`` waits for each write, as FastStream's publish did
        self._no_wait: dict[str, bool] = (
            {"wait": False} if "wait" in inspect.signature(AmqpChannel.basic_publish).parameters else {}
        )

    async def _confirming(self) -> AmqpChannel:
        channel = self._channel
        if channel is None or channel.is_closed:
            # FastStream's default channel (aio-pika restores it after a reconnect, with a new aiormq channel)
            robust = await self._broker.config.channel_manager.get_channel()
            channel = self._channel = cast(AmqpChannel, await robust.get_underlay_channel())
            if not channel.publisher_confirms:
                raise RuntimeError("the broker's default channel must have publisher confirms on")
        return channel

    async def send(self, body: bytes, *, exchange: str, routing_key: str, properties: Properties) -> None:
        channel = await self._confirming()
        await channel.basic_publish(
            body, exchange=exchange, routing_key=routing_key, properties=properties, mandatory=False, **self._no_wait
        )


async def _settled(publish: Awaitable[None]) -> Exception | None:
    """``None`` once ``publish`` is done, or the exception it raised (cancellation propagates)."""
    try:
        await publish
    except Exception as exc:
        return exc
    return None


class AmqpPublisher:
    def __init__(
        self,
        broker: RabbitBroker,
        topology: Topology,
        app_id: str,
        tracing: Tracing = NO_TRACING,
        sender: Sender | None = None,
    ) -> None:
        self._broker = broker
        self._sender: Sender = sender or ConfirmedSender(broker)
        self._tracing = tracing
        self._topology = topology
        self._app_id = app_id

    async def publish_outbox_document(self, record: Publishable) -> None:
        """The reply (if the command asked for one) and the event; raises unless both are confirmed
        (``DependencyUnavailable`` when the broker connection is down)."""
        headers = {c.H_CORRELATION_ID: record.correlation_id, **record.headers}
        event = self._traced(record, self._topology.events_exchange_name, headers, self._publish_event)
        if not record.reply_to or record.reply is None:
            results: list[BaseException | None] = [await _settled(event)]
        else:
            reply_to, reply = record.reply_to, record.reply
            # both confirms in flight at once (the reply in a task of its own, the event in this one); any
            # failure fails the document (it is retried whole)
            replying = asyncio.ensure_future(
                self._traced(
                    record, reply_to, headers, lambda r, h: self._publish_reply(r, reply_to, reply, h), "reply"
                )
            )
            try:
                first = await _settled(event)
            except BaseException:  # cancelled: the reply goes with it, as with gather
                replying.cancel()
                raise
            results = [first, await _settled(replying)]
        for result in results:
            if isinstance(result, _BROKER_DOWN):
                raise DependencyUnavailable("rabbitmq", f"{type(result).__name__}: {result}") from result
            if result is not None:
                raise result

    async def _traced(
        self,
        record: Publishable,
        destination: str,
        headers: dict[str, Any],
        publish: Callable[[Publishable, dict[str, Any]], Awaitable[None]],
        what: str = "event",
    ) -> None:
        """``publish`` inside a producer span (tracing on) whose context replaces the stored one in the headers."""
        if not self._tracing.enabled:
            await publish(record, headers)
            return
        stored = TraceContext.parse(record.headers.get(H_TRACEPARENT), record.headers.get(H_TRACESTATE))
        linked = record.kind != "command"
        with self._tracing.span(
            f"publish {destination}" if what == "event" else "publish (reply)",  # reply queues: per caller
            SpanKind.PRODUCER,
            {
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "messaging.destination.name": destination,
                "messaging.destination.temporary": destination.startswith("amq.gen-") or None,
                "messaging.rabbitmq.destination.routing_key": record.event_routing_key if what == "event" else None,
                "messaging.message.id": record.event_id,
                "messaging.message.conversation_id": record.correlation_id,
                "s2s.outbox.kind": record.kind,
                "s2s.outbox.message": what,
            },
            parent=None if linked else stored,
            root=True,
            links=[stored] if linked and stored is not None else (),
        ) as span:
            onward = span.context
            if onward is not None:  # the stored tracestate goes too: the span's context carries its own
                headers = {k: v for k, v in headers.items() if k not in (H_TRACEPARENT, H_TRACESTATE)}
                headers.update(onward.headers())
            await publish(record, headers)

    def _properties(
        self, record: Publishable, headers: dict[str, Any], content_type: str, message_type: str | None = None
    ) -> Properties:
        """What FastStream's publish gave the relay's messages: persistent, ids of the record, our app id."""
        return Properties(
            content_type=content_type,
            delivery_mode=_PERSISTENT,
            correlation_id=record.correlation_id,
            message_id=record.event_id,
            message_type=message_type,
            timestamp=datetime.now(UTC),
            app_id=self._app_id,
            headers=headers,
        )

    async def _publish_reply(
        self, record: Publishable, reply_to: str, reply: dict[str, Any], headers: dict[str, Any]
    ) -> None:
        # a vanished reply queue means the caller left; the event still goes out (mandatory off)
        properties = self._properties(record, headers, "application/json")
        await self._sender.send(orjson.dumps(reply), exchange="", routing_key=reply_to, properties=properties)

    async def _publish_event(self, record: Publishable, headers: dict[str, Any]) -> None:
        await self._sender.send(
            orjson.dumps(record.event),
            exchange=self._topology.events_exchange_name,
            routing_key=record.event_routing_key,
            properties=self._properties(record, headers, "application/cloudevents+json", record.event["type"]),
        )

    async def reply_direct(
        self,
        reply_to: str,
        correlation_id: str,
        body: dict[str, Any],
        headers: dict[str, str],
        message_id: str | None = None,
    ) -> None:
        """A reply that is not backed by an outbox record (re-sent duplicates, invalid commands).

        A re-sent stored reply passes the outbox record's event id, the message_id of the original reply. With
        tracing on it is a producer span under the current (consumer) span, whose context it carries.
        """
        with self._tracing.span(
            "publish (reply)",
            SpanKind.PRODUCER,
            {
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "messaging.destination.name": reply_to,
                "messaging.destination.temporary": reply_to.startswith("amq.gen-") or None,
                "messaging.message.id": message_id,
                "messaging.message.conversation_id": correlation_id,
                "s2s.outbox.message": "reply",
            }
            if self._tracing.enabled
            else None,
        ) as span:
            onward = span.context
            if onward is not None:
                headers = {k: v for k, v in headers.items() if k not in (H_TRACEPARENT, H_TRACESTATE)}
                headers.update(onward.headers())
            await self._broker.publish(
                orjson.dumps(body),
                exchange="",
                routing_key=reply_to,
                correlation_id=correlation_id,
                message_id=message_id,
                content_type="application/json",
                headers={c.H_CORRELATION_ID: correlation_id, **headers},
                persist=True,
                mandatory=False,
            )

    async def dead_letter(
        self,
        raw: AbstractIncomingMessage,
        reason: DeadLetterReason,
        detail: str,
        routing_key: str,
        extra_headers: dict[str, Any] | None = None,
    ) -> None:
        """Copy the message to the DLQ unchanged, plus headers saying why; the caller then acks it."""
        headers = dict(raw.headers or {})
        headers.update(
            {
                c.H_REASON: reason.value,
                c.H_DETAIL: detail[:_HEADER_DETAIL_MAX],
                c.H_ROUTING_KEY: routing_key,
                c.H_DEAD_AT: now_ms(),
                c.H_SOURCE_QUEUE: _source_queue(raw),
                **(extra_headers or {}),
            }
        )
        await self._copy(raw, self._topology.dlx_name, routing_key, headers)

    async def delay(
        self,
        raw: AbstractIncomingMessage,
        downstream: str,
        seconds: int,
        routing_key: str,
        attempt: int,
        extra_headers: dict[str, int] | None = None,
    ) -> str:
        """Park a copy in the delay queue that dead-letters back to the command queue after ``seconds``."""
        queue = self._topology.delay_queue_name(downstream, seconds)
        headers = dict(raw.headers or {})
        headers.update({c.H_ROUTING_KEY: routing_key, c.H_ATTEMPT: attempt, **(extra_headers or {})})
        await self._copy(raw, "", queue, headers)
        return queue

    async def park_delivery(
        self, raw: AbstractIncomingMessage, subscription: str, seconds: int, headers: dict[str, Any]
    ) -> str:
        """Park a copy of a webhook delivery in its endpoint's delay queue of ``seconds``."""
        queue = self._topology.subscription_delay_queue_name(subscription, seconds)
        await self._copy(raw, "", queue, {**(raw.headers or {}), **headers})
        return queue

    async def _copy(
        self, raw: AbstractIncomingMessage, exchange: str, routing_key: str, headers: dict[str, Any]
    ) -> None:
        await self._broker.publish(
            raw.body,
            exchange=exchange,
            routing_key=routing_key,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            reply_to=raw.reply_to,
            content_type=raw.content_type,
            content_encoding=raw.content_encoding,
            message_type=raw.type,
            priority=raw.priority,
            headers=headers,
            persist=True,
            mandatory=False,
        )


def _source_queue(raw: AbstractIncomingMessage) -> str:
    return str(getattr(raw, "routing_key", "") or "")
