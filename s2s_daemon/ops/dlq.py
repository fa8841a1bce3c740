"""Dead letters an operator can see, repair and replay (``s2s-daemon dlq list|show|replay|purge``).

AMQP 0-9-1 cannot read a queue without taking its messages, so every operation is one **pass** over the DLQ:
count the ready messages (depth D), then take exactly D messages one at a time with ``basic.get`` (no auto-ack)
and settle each before taking the next:

* finish it: replay = re-publish to ``<prefix>.commands`` with the original routing key, properties and headers
  plus replay markers, wait for the publisher confirm, *then* ack the DLQ copy; purge = ack; or
* keep it: ``nack(requeue=True)``, which on a quorum queue (RabbitMQ 3.10) appends it to the **tail**.

Kept messages go to the tail in the order they were taken, so after D steps the DLQ holds them in their original
order; the pass is bounded by D, so it never meets a message twice (dead letters arriving meanwhile queue up
behind the originals and are not reached). ``list`` and ``show`` are passes that keep everything; a replay with
``--limit`` keeps walking after the limit so the order is restored. A pass costs one round trip per message
(~1,100 messages/s on the reference box); keep the DLQ small with ``purge``.

Why one at a time: RabbitMQ 3.10 does not keep the order of *many* returned messages. Holding messages and
closing the channel returns them to the head in map order (shuffled beyond ~10), and a burst of nacks is
settled as a set (shuffled beyond ~30); both measured while writing this. One outstanding kept message at a
time keeps the order. Moving kept messages to the tail by a confirmed re-publish would keep it too, but a
process killed between that publish and the ack would leave a duplicate in the DLQ. A broker that requeues
at the head instead would hand back the message just kept; the pass notices (same message, delivery count + 1)
and stops with an error rather than looping.

Interruptions: Ctrl-C or SIGTERM stop the pass after the batch in hand; nothing is lost or duplicated, but the
messages already walked past are now at the tail (the DLQ is rotated, the cyclic order unchanged). A SIGKILL or
a lost connection returns the messages held at that moment (at most ``batch`` being replayed and one being kept)
to the head; the rest is rotated as above. Replays: a message is acked only after its confirm, so a SIGKILL
between the two leaves it both re-published and in the DLQ, at most ``batch`` of them; such a copy carries the
same idempotency key, and the daemon answers it from its dedupe record without a second downstream call. An
edited copy's new key is derived from the original key and the new body (uuid5), so repeating the same edit
yields the same key and is deduplicated too.

Quorum queues count every pass as a delivery (``x-delivery-count``, stripped on replay). The DLQ is declared
without a delivery limit; a broker policy adding one would make repeated passes drop dead letters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import DeadLetterQueueError, DependencyUnavailable
from s2s_daemon.messaging import NodeList, Topology, connect_first, header_int, header_text
from s2s_daemon.messaging import contracts as c
from s2s_daemon.settings import Settings

# Headers a replay adds.
H_REPLAYED_AT = "x-s2s-replayed-at"  # epoch ms of the latest replay
H_REPLAY_COUNT = "x-s2s-replay-count"  # how many times this command came back from the DLQ
H_REPLAY_OF = "x-s2s-replay-of"  # on an edited copy: the idempotency key (or DLQ id) of the original

# Headers that describe a death, not the command: a replay drops them (the broker's and ours).
_DEATH_HEADERS = frozenset(
    {
        c.H_REASON,
        c.H_DETAIL,
        c.H_DEAD_AT,
        c.H_SOURCE_QUEUE,
        c.H_ATTEMPT,  # a replayed command starts with a fresh redelivery budget
        c.H_ROUTING_KEY,  # it is published with this routing key instead
        "x-death",
        "x-first-death-reason",
        "x-first-death-queue",
        "x-first-death-exchange",
        "x-last-death-reason",
        "x-last-death-queue",
        "x-last-death-exchange",
        "x-delivery-count",
    }
)
# Headers of a webhook delivery's retries: a replay drops them too.
_DELIVERY_HEADERS = frozenset({c.H_CALLS, c.H_FIRST_CALL_AT, c.H_NOT_BEFORE, c.H_SUBSCRIPTION})
# Headers that change while a message sits in the DLQ: not part of its content hash.
_VOLATILE_HEADERS = frozenset({"x-delivery-count"})
_EDIT_NS = uuid.UUID("3b0f6f55-6a4e-4c53-8a39-0d3c1f6e2a71")
FILTER_KEYS = ("id", "reason", "routing-key", "correlation-id")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

ProgressFn = Callable[[int, int], None]  # (scanned, depth)


# a dead letter, read ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message in the DLQ, with what an operator needs to know about it."""

    id: str
    reason: str
    detail: str | None
    routing_key: str
    attempts: int
    dead_lettered_at: int | None  # epoch ms
    correlation_id: str | None
    idempotency_key: str | None
    replay_count: int
    body: bytes
    headers: Mapping[str, Any]
    properties: Mapping[str, Any]
    subscription: str | None = None  # a webhook delivery: replayed to this subscription's queue

    @classmethod
    def from_message(cls, msg: AbstractIncomingMessage) -> DeadLetter:
        headers: dict[str, Any] = dict(msg.headers or {})
        x_death = headers.get("x-death")
        deaths = [d for d in x_death if isinstance(d, Mapping)] if isinstance(x_death, list) else []
        newest, oldest = (deaths[0], deaths[-1]) if deaths else ({}, {})
        original_keys = oldest.get("routing-keys")
        original_key = header_text(original_keys[0]) if isinstance(original_keys, list) and original_keys else None
        key = header_text(headers.get(c.H_IDEMPOTENCY_KEY)) or header_text(msg.message_id)
        return cls(
            id=header_text(msg.message_id) or key or content_id(msg.body, headers),
            reason=header_text(headers.get(c.H_REASON))
            or header_text(headers.get("x-first-death-reason"))
            or "unknown",
            detail=header_text(headers.get(c.H_DETAIL)),
            routing_key=(header_text(headers.get(c.H_ROUTING_KEY)) or original_key or msg.routing_key or ""),
            attempts=(
                header_int(headers.get(c.H_ATTEMPT)) or sum(header_int(d.get("count")) or 0 for d in deaths) or 1
            ),
            dead_lettered_at=header_int(headers.get(c.H_DEAD_AT))
            or _epoch_ms(newest.get("time"))
            or _epoch_ms(msg.timestamp),
            correlation_id=header_text(msg.correlation_id) or header_text(headers.get(c.H_CORRELATION_ID)),
            idempotency_key=key,
            replay_count=header_int(headers.get(H_REPLAY_COUNT)) or 0,
            subscription=header_text(headers.get(c.H_SUBSCRIPTION)),
            body=bytes(msg.body),
            headers=headers,
            properties={
                "message_id": msg.message_id,
                "correlation_id": msg.correlation_id,
                "reply_to": msg.reply_to,
                "content_type": msg.content_type,
                "content_encoding": msg.content_encoding,
                "type": msg.type,
                "priority": msg.priority,
                "timestamp": msg.timestamp,
                "app_id": msg.app_id,
            },
        )

    def age_seconds(self, at_ms: int | None = None) -> float | None:
        if self.dead_lettered_at is None:
            return None
        return max(0.0, ((at_ms or now_ms()) - self.dead_lettered_at) / 1000)

    def summary(self, at_ms: int | None = None) -> dict[str, Any]:
        """The row of ``dlq list`` (also its ``--json`` form)."""
        age = self.age_seconds(at_ms)
        return {
            "id": self.id,
            "reason": self.reason,
            "routing_key": self.routing_key,
            "subscription": self.subscription,
            "attempts": self.attempts,
            "age_seconds": None if age is None else round(age, 3),
            "correlation_id": self.correlation_id,
            "dead_lettered_at": self.dead_lettered_at,
            "replay_count": self.replay_count,
        }

    def describe(self, at_ms: int | None = None) -> dict[str, Any]:
        """Everything about the message (``dlq show``): summary, detail, properties, headers and body."""
        body: Any
        try:
            body = orjson.loads(self.body)
            encoding = "json"
        except orjson.JSONDecodeError:
            try:
                body, encoding = self.body.decode("utf-8"), "text"
            except UnicodeDecodeError:
                body, encoding = base64.b64encode(self.body).decode("ascii"), "base64"
        return {
            **self.summary(at_ms),
            "detail": self.detail,
            "idempotency_key": self.idempotency_key,
            "properties": {k: jsonable(v) for k, v in self.properties.items() if v is not None},
            "headers": jsonable(dict(self.headers)),
            "body_encoding": encoding,
            "body": body,
        }


def content_id(body: bytes, headers: Mapping[str, Any]) -> str:
    """Stable id of a message without message_id or idempotency key: a hash of its body and headers."""
    stable = {k: v for k, v in headers.items() if k not in _VOLATILE_HEADERS}
    digest = hashlib.sha256(body + b"\0" + orjson.dumps(jsonable(stable), option=orjson.OPT_SORT_KEYS))
    return "sha-" + digest.hexdigest()[:20]


def edited_key(original: str, body: bytes) -> str:
    """The new idempotency key of an edited copy: the same original and body always give the same key."""
    return str(uuid.uuid5(_EDIT_NS, original + "\n" + hashlib.sha256(body).hexdigest()))


# selecting ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters an operation touches: every filter key must match (values of one key: any of them).

    Patterns are shell-style (``service-a.*``). ``older_than`` (seconds) never matches a message whose age is
    unknown.
    """

    filters: tuple[tuple[str, str], ...] = ()
    older_than: float | None = None

    @classmethod
    def parse(cls, texts: Sequence[str], older_than: float | str | None = None) -> Selection:
        """``KEY=PATTERN`` texts and an age (seconds, or a duration such as ``7d``); ValueError names what is wrong."""
        if isinstance(older_than, str):
            older_than = parse_duration(older_than)
        filters = []
        for text in texts:
            key, sep, pattern = text.partition("=")
            key = key.strip().replace("_", "-")
            if not sep or key not in FILTER_KEYS or not pattern:
                raise ValueError(f"filter {text!r}: use KEY=PATTERN with KEY one of {', '.join(FILTER_KEYS)}")
            filters.append((key, pattern))
        return cls(tuple(filters), older_than)

    def matches(self, dl: DeadLetter, at_ms: int) -> bool:
        values = {"id": dl.id, "reason": dl.reason, "routing-key": dl.routing_key, "correlation-id": dl.correlation_id}
        wanted: dict[str, list[str]] = {}
        for key, pattern in self.filters:
            wanted.setdefault(key, []).append(pattern)
        for key, patterns in wanted.items():
            value = values[key]
            if value is None or not any(fnmatch.fnmatchcase(value, p) for p in patterns):
                return False
        if self.older_than is not None:
            age = dl.age_seconds(at_ms)
            if age is None or age < self.older_than:
                return False
        return True

    def pins_one_id(self) -> bool:
        ids = [p for k, p in self.filters if k == "id"]
        return len(ids) == 1 and not any(ch in ids[0] for ch in "*?[")


def parse_duration(text: str) -> float:
    """``90s``, ``12h``, ``7d``, ``1h30m``, ``2w`` -> seconds."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"duration {text!r}: use a number with s, m, h, d or w, e.g. 7d, 12h, 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


# reports -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Replayed:
    id: str
    routing_key: str
    idempotency_key: str | None
    new_key: bool  # an edited copy with a new idempotency key


@dataclass(slots=True)
class ReplayReport:
    depth: int = 0
    scanned: int = 0
    skipped: int = 0
    replayed: list[Replayed] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "scanned": self.scanned,
            "skipped": self.skipped,
            "replayed": len(self.replayed),
            "interrupted": self.interrupted,
            "error": self.error,
            "messages": [
                {"id": r.id, "routing_key": r.routing_key, "idempotency_key": r.idempotency_key, "new_key": r.new_key}
                for r in self.replayed
            ],
        }


@dataclass(slots=True)
class PurgeReport:
    depth: int = 0
    scanned: int = 0
    purged: int = 0
    kept: int = 0
    interrupted: bool = False
    dry_run: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "scanned": self.scanned,
            "purged": self.purged,
            "kept": self.kept,
            "interrupted": self.interrupted,
            "dry_run": self.dry_run,
        }


# the queue ----------------------------------------------------------------------------------------------
class _Pass:
    """Exactly ``depth`` messages taken from the head, one at a time; ``keep`` sends one to the tail."""

    def __init__(self, queue: AbstractQueue, depth: int) -> None:
        self._queue = queue
        self.depth = depth
        self.taken = 0
        self._last_kept: tuple[str | None, bytes, int] | None = None

    async def take(self) -> AbstractIncomingMessage | None:
        if self.taken >= self.depth:
            return None
        msg = await self._queue.get(no_ack=False, fail=False)
        if msg is None:  # someone else emptied the queue meanwhile
            return None
        self.taken += 1
        if self._last_kept is not None and self._last_kept == (msg.message_id, msg.body, _delivery_count(msg) - 1):
            await msg.nack(requeue=True)
            raise DeadLetterQueueError(
                "the broker put the message just kept back at the head of the DLQ instead of the tail; "
                "this tool needs tail requeueing (RabbitMQ 3.10 quorum queues) and stopped without changes"
            )
        return msg

    async def keep(self, msg: AbstractIncomingMessage) -> None:
        """Back to the tail. Awaited before the next ``take`` so kept messages keep their order."""
        self._last_kept = (msg.message_id, msg.body, _delivery_count(msg))
        await msg.nack(requeue=True)


class DeadLetterQueue:
    """The DLQ of one prefix. ``async with DeadLetterQueue(url, prefix) as dlq: await dlq.browse()``."""

    @classmethod
    def from_settings(cls, settings: Settings) -> DeadLetterQueue:
        return cls(settings.rabbitmq_nodes, settings.amqp.prefix)

    def __init__(self, urls: str | Sequence[str], prefix: str, *, connect_timeout: float = 10.0) -> None:
        """``urls``: one broker URL, or every node of a cluster (the first that answers is used)."""
        self.nodes = NodeList([urls] if isinstance(urls, str) else urls, shuffle=False)
        names = Topology.of_prefix(prefix)
        self.queue_name = names.dlq_name
        self.commands_exchange_name = names.commands_exchange_name
        self._names = names
        self._connect_timeout = connect_timeout
        self._connection: AbstractConnection | None = None

    async def __aenter__(self) -> DeadLetterQueue:
        try:
            self._connection = await connect_first(self.nodes, timeout=self._connect_timeout)
        except Exception as exc:
            raise DependencyUnavailable("rabbitmq", f"{type(exc).__name__}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def connection(self) -> AbstractConnection:
        if self._connection is None:
            raise RuntimeError("use `async with DeadLetterQueue(...)`")
        return self._connection

    async def depth(self) -> int:
        """Ready messages in the DLQ (unacked ones are not counted)."""
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(self.queue_name, passive=True)
        except aio_pika.exceptions.ChannelClosed as exc:
            raise DeadLetterQueueError(
                f"queue {self.queue_name!r} does not exist: is amqp.prefix right, and has the daemon run once?"
            ) from exc
        finally:
            await _close(channel)
        return int(queue.declaration_result.message_count or 0)

    @contextlib.asynccontextmanager
    async def _pass(self) -> AsyncIterator[_Pass]:
        depth = await self.depth()
        channel = await self.connection.channel()
        try:
            queue = await channel.get_queue(self.queue_name, ensure=False)
            yield _Pass(queue, depth)
        finally:
            await _close(channel)  # returns whatever an exception left unsettled

    async def browse(
        self, selection: Selection | None = None, limit: int | None = None, *, stop: asyncio.Event | None = None
    ) -> tuple[list[DeadLetter], int]:
        """Up to ``limit`` matching dead letters in queue order, and the depth; keeps every message."""
        selection = selection or Selection()
        at = now_ms()
        found: list[DeadLetter] = []
        async with self._pass() as p:
            while not (stop is not None and stop.is_set()) and (msg := await p.take()) is not None:
                if limit is None or len(found) < limit:
                    dl = DeadLetter.from_message(msg)
                    if selection.matches(dl, at):
                        found.append(dl)
                await p.keep(msg)
            return found, p.depth

    async def replay(
        self,
        selection: Selection | None = None,
        *,
        limit: int | None = None,
        body: bytes | None = None,
        batch: int = 50,
        stop: asyncio.Event | None = None,
        progress: ProgressFn | None = None,
    ) -> ReplayReport:
        """Re-publish matching dead letters to the commands exchange (a webhook delivery: straight to its
        subscription's queue, with the same ``webhook-id``); ack each only after its confirm.

        ``body`` replaces the body of exactly one message (``selection`` must pin one id) and gives the copy a
        new idempotency key. ``stop`` ends the pass after the batch in hand.
        """
        selection = selection or Selection()
        if body is not None:
            if not selection.pins_one_id():
                raise DeadLetterQueueError("an edited body needs exactly one message: filter id=ID")
            orjson.loads(body)  # raises JSONDecodeError (a ValueError) for a body that is not JSON
            limit = 1
        report = ReplayReport()
        at = now_ms()
        publisher = await self.connection.channel(publisher_confirms=True)
        try:
            try:
                exchange = await publisher.get_exchange(self.commands_exchange_name, ensure=True)
            except aio_pika.exceptions.ChannelClosed as exc:
                raise DeadLetterQueueError(f"exchange {self.commands_exchange_name!r} does not exist") from exc
            exchanges = (exchange, publisher.default_exchange)
            async with self._pass() as p:
                report.depth = p.depth
                pending: list[tuple[AbstractIncomingMessage, DeadLetter]] = []
                while True:
                    if stop is not None and stop.is_set():
                        report.interrupted = True
                        break
                    msg = await p.take()
                    if msg is None:
                        break
                    report.scanned += 1
                    dl = DeadLetter.from_message(msg)
                    room = limit is None or len(report.replayed) + len(pending) < limit
                    if room and report.error is None and selection.matches(dl, at):
                        pending.append((msg, dl))
                        if len(pending) >= batch:
                            await self._publish_batch(exchanges, pending, body, report, p)
                            pending = []
                    else:
                        await p.keep(msg)
                        report.skipped += 1
                    if progress is not None:
                        progress(report.scanned, p.depth)
                if pending:
                    await self._publish_batch(exchanges, pending, body, report, p)
        finally:
            await _close(publisher)
        return report

    async def _publish_batch(
        self,
        exchanges: tuple[AbstractExchange, AbstractExchange],  # the commands exchange, the default exchange
        batch: list[tuple[AbstractIncomingMessage, DeadLetter]],
        body: bytes | None,
        report: ReplayReport,
        p: _Pass,
    ) -> None:
        """Publish all (in order), wait for every confirm, ack the confirmed ones; keep the others in the DLQ."""
        outgoing = [replay_message(dl, body) for _, dl in batch]
        exchange, default_exchange = exchanges
        publishes = [
            default_exchange.publish(
                message, routing_key=self._names.subscription_queue_name(dl.subscription), mandatory=True
            )
            if dl.subscription
            else exchange.publish(message, routing_key=dl.routing_key, mandatory=True)
            for (_, dl), (message, _) in zip(batch, outgoing, strict=True)
        ]
        results = await asyncio.gather(*publishes, return_exceptions=True)
        for (msg, dl), (message, new_key), result in zip(batch, outgoing, results, strict=True):
            if isinstance(result, BaseException):
                report.error = report.error or f"{dl.id}: publish not confirmed: {type(result).__name__}: {result}"
                await p.keep(msg)
                report.skipped += 1
                continue
            await msg.ack()
            key = message.headers.get(c.H_IDEMPOTENCY_KEY) if new_key else dl.idempotency_key
            report.replayed.append(Replayed(dl.id, dl.routing_key, header_text(key), new_key))

    async def purge(
        self,
        selection: Selection,
        *,
        dry_run: bool = False,
        stop: asyncio.Event | None = None,
        progress: ProgressFn | None = None,
    ) -> PurgeReport:
        """Ack (delete) matching dead letters; ``dry_run`` only counts them."""
        report = PurgeReport(dry_run=dry_run)
        at = now_ms()
        async with self._pass() as p:
            report.depth = p.depth
            while True:
                if stop is not None and stop.is_set():
                    report.interrupted = True
                    break
                msg = await p.take()
                if msg is None:
                    break
                report.scanned += 1
                matched = selection.matches(DeadLetter.from_message(msg), at)
                if matched:
                    report.purged += 1
                else:
                    report.kept += 1
                if matched and not dry_run:
                    await msg.ack()
                else:
                    await p.keep(msg)
                if progress is not None:
                    progress(report.scanned, p.depth)
        return report


def replay_message(dl: DeadLetter, body: bytes | None = None) -> tuple[aio_pika.Message, bool]:
    """The command to re-publish: original properties and headers minus death headers, plus replay markers.

    Returns the message and whether it carries a new idempotency key (message_id and ``idempotency-key`` header,
    the original named in ``x-s2s-replay-of``). A key is new when ``body`` replaces the body, and when the dead
    letter had no key at all: aiormq would invent a random message_id on every publish (and the daemon would take
    it as the key), so we derive a stable one from its content id instead, and say so.
    """
    headers = {k: v for k, v in dl.headers.items() if k not in _DEATH_HEADERS}
    if dl.subscription:
        # a webhook delivery starts its retry schedule afresh, and keeps the event's routing key in a header
        headers = {k: v for k, v in headers.items() if k not in _DELIVERY_HEADERS}
        headers[c.H_ROUTING_KEY] = dl.routing_key
    headers[H_REPLAYED_AT] = now_ms()
    headers[H_REPLAY_COUNT] = dl.replay_count + 1
    props = dl.properties
    message_id = header_text(props.get("message_id")) or dl.idempotency_key
    new_key = body is not None or message_id is None
    if new_key:
        original = dl.idempotency_key or dl.id
        message_id = edited_key(original, body if body is not None else dl.body)
        headers[c.H_IDEMPOTENCY_KEY] = message_id
        headers[H_REPLAY_OF] = original
    message = aio_pika.Message(
        body if body is not None else dl.body,
        headers=headers,
        content_type="application/json" if body is not None else props.get("content_type"),
        content_encoding=None if body is not None else props.get("content_encoding"),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=props.get("priority"),
        correlation_id=props.get("correlation_id"),
        reply_to=props.get("reply_to"),
        message_id=message_id,
        timestamp=props.get("timestamp"),
        type=props.get("type"),
        app_id=props.get("app_id"),
    )
    return message, new_key


# operations: what `s2s-daemon dlq` and the console's endpoints call --------------------------------------
@dataclass(frozen=True, slots=True)
class Listing:
    """``dlq list``: the matching dead letters' rows (``DeadLetter.summary``), the depth and the queue."""

    queue: str
    depth: int
    rows: list[dict[str, Any]]


async def list_dead_letters(dlq: DeadLetterQueue, selection: Selection, limit: int | None) -> Listing:
    found, depth = await dlq.browse(selection, limit)
    at = now_ms()
    return Listing(dlq.queue_name, depth, [d.summary(at) for d in found])


async def show_dead_letter(dlq: DeadLetterQueue, dead_letter_id: str) -> list[dict[str, Any]]:
    """``dlq show``: everything about the dead letters with this id (usually one; none when it is not there)."""
    found, _ = await dlq.browse(Selection((("id", dead_letter_id),)))
    at = now_ms()
    return [d.describe(at) for d in found]


def edited_body(raw: bytes) -> bytes:
    """A replacement body for ``replay``: it must be JSON (ValueError saying why not)."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the new body is not JSON: {exc}") from None
    return raw


# values from headers -------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """AMQP field values (datetimes, bytes, decimals, nested tables) as JSON-friendly values."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    return value


def _delivery_count(msg: AbstractIncomingMessage) -> int:
    return header_int((msg.headers or {}).get("x-delivery-count")) or 0


def _epoch_ms(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return None


async def _close(channel: AbstractChannel) -> None:
    if not channel.is_closed:
        with contextlib.suppress(Exception):
            await channel.close()
