"""The load side of a scenario, written with pika (not our code): a paced publisher and an observer that
records every reply and every dead letter, each in a thread of its own with its own connection.

Both survive the faults the scenarios inject: on a broken connection they reconnect and go on. The publisher
never re-sends a command whose publish broke off (Jepsen's semantics): such a command is *indeterminate*,
and it is *recovered* if a reply or a dead letter for it shows up anyway. Replies go to a durable quorum queue
of the harness, so none is lost while the observer itself is disconnected.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pika
import pika.exceptions

from s2s_daemon.messaging import header_text
from s2s_daemon.messaging.contracts import H_ATTEMPT, H_REASON

__all__ = [
    "CHAOS_ID",
    "Command",
    "Journal",
    "Observer",
    "Publisher",
    "Worker",
    "declare_reply_queue",
    "good_commands",
]

CHAOS_ID = "x-chaos-id"  # header on every command; dead-lettered copies keep it
_BROKEN = (pika.exceptions.AMQPError, OSError, AssertionError)  # pika raises AssertionError on a torn channel


@dataclass(frozen=True, slots=True)
class Command:
    id: str  # unique per command; the idempotency key of well-formed ones
    routing_key: str
    body: bytes
    kind: str = "good"  # good | invalid-json | schema-violation | missing-key | too-large | over-broker-limit | ...
    key: str | None = None  # AMQP message_id: the idempotency key; None sends none
    headers: dict[str, Any] = field(default_factory=dict)


def good_commands(n: int, tag: str, routing_key: str = "service-a.create-resource") -> list[Command]:
    run = uuid.uuid4().hex[:6]
    out = []
    for i in range(n):
        cid = f"{tag}-{run}-{i:06d}"
        out.append(Command(cid, routing_key, orjson.dumps({"name": f"{tag}{i}"}), key=cid))
    return out


@dataclass(slots=True)
class Reply:
    at: float
    status: str
    error_kind: str | None
    message_id: str | None
    attempts: int | None = None  # downstream calls the daemon made for the command (the reply's ``attempts``)


@dataclass(slots=True)
class DeadLetter:
    at: float
    reason: str | None
    deaths: dict[str, int]  # broker dead-lettering (x-death) counts by reason
    attempt: int  # x-s2s-attempt: delayed redeliveries the daemon made


@dataclass
class Record:
    command: Command
    first_attempt: float | None = None
    confirmed_at: float | None = None
    indeterminate: bool = False
    error: str | None = None  # why the publish broke off (e.g. the broker refused it), when it did


class Journal:
    """Everything the harness saw, by command id. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.replies: dict[str, list[Reply]] = {}
        self.dead: dict[str, list[DeadLetter]] = {}
        self.stray = 0  # replies or dead letters that match no command of ours
        self.publish_errors: list[str] = []
        self._answered: set[str] = set()

    def add(self, commands: Iterable[Command]) -> None:
        with self._lock:
            for c in commands:
                self.records[c.id] = Record(c)

    def attempt(self, cid: str) -> None:
        with self._lock:
            self.records[cid].first_attempt = time.monotonic()

    def confirmed(self, cid: str) -> None:
        with self._lock:
            self.records[cid].confirmed_at = time.monotonic()

    def broke(self, cid: str, error: BaseException) -> None:
        with self._lock:
            text = f"{type(error).__name__}: {error}"[:200]
            self.records[cid].indeterminate = True
            self.records[cid].error = text
            self.publish_errors.append(text)

    def reply(self, cid: str | None, reply: Reply, redelivered: bool) -> None:
        with self._lock:
            if cid is None or cid not in self.records:
                self.stray += 1
                return
            seen = self.replies.setdefault(cid, [])
            # a reply handed to us again after our own connection dropped is the same reply, not a duplicate
            if redelivered and any(r.message_id == reply.message_id for r in seen):
                return
            seen.append(reply)
            self._answered.add(cid)

    def dead_letter(self, cid: str | None, dead: DeadLetter, redelivered: bool) -> None:
        with self._lock:
            if cid is None or cid not in self.records:
                self.stray += 1
                return
            seen = self.dead.setdefault(cid, [])
            if redelivered and seen:
                return
            seen.append(dead)
            self._answered.add(cid)

    # progress (read from the scenario thread) --------------------------------------------------
    @property
    def answered(self) -> int:
        """Commands with a reply or a dead letter."""
        with self._lock:
            return len(self._answered)

    @property
    def replied(self) -> int:
        with self._lock:
            return len(self.replies)

    @property
    def confirmed_count(self) -> int:
        with self._lock:
            return sum(1 for r in self.records.values() if r.confirmed_at is not None)

    def settled(self) -> bool:
        """Every command published or given up, and every confirmed one answered."""
        with self._lock:
            for cid, r in self.records.items():
                if r.first_attempt is None:
                    return False
                if r.confirmed_at is not None and cid not in self._answered:
                    return False
            return True


Urls = str | list[str]  # one node, or every node of a cluster (pika tries them in order)


def _parameters(urls: Urls) -> list[pika.URLParameters]:
    out = []
    for url in [urls] if isinstance(urls, str) else urls:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 120
        out.append(params)
    return out


def declare_reply_queue(url: Urls, name: str) -> None:
    """A durable quorum queue for replies: they outlive the observer's connection and a broker restart."""
    connection = pika.BlockingConnection(_parameters(url))
    try:
        connection.channel().queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        connection.close()


class Worker(threading.Thread):
    """A harness thread: stoppable, counts its reconnects, keeps the error that ended it (a harness bug)."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()
        self.reconnects = 0
        self.error: BaseException | None = None

    def stop(self) -> None:
        self.stopping.set()


class Publisher(Worker):
    """Publishes ``commands`` at ``rate`` per second (0: as fast as confirms allow), with publisher confirms."""

    def __init__(
        self,
        url: Urls,
        exchange: str,
        reply_queue: str,
        commands: list[Command],
        journal: Journal,
        rate: float = 0.0,
    ) -> None:
        super().__init__("chaos-publisher")
        self.url = url
        self.exchange = exchange
        self.reply_queue = reply_queue
        self.commands = commands
        self.journal = journal
        self.rate = rate
        journal.add(commands)

    def run(self) -> None:
        connection: pika.BlockingConnection | None = None
        channel: Any = None
        started = time.monotonic()
        try:
            for i, command in enumerate(self.commands):
                if self.rate > 0:
                    wait = started + i / self.rate - time.monotonic()
                    if wait > 0 and self.stopping.wait(wait):
                        return
                while channel is None:
                    if self.stopping.is_set():
                        return
                    try:
                        connection = pika.BlockingConnection(_parameters(self.url))
                        channel = connection.channel()
                        channel.confirm_delivery()
                    except _BROKEN:
                        connection = channel = None
                        self.reconnects += 1
                        self.stopping.wait(0.25)
                self.journal.attempt(command.id)
                try:
                    channel.basic_publish(
                        self.exchange,
                        command.routing_key,
                        command.body,
                        pika.BasicProperties(
                            message_id=command.key,
                            correlation_id=command.id,
                            reply_to=self.reply_queue,
                            content_type="application/json",
                            delivery_mode=2,
                            headers={CHAOS_ID: command.id, **command.headers},
                        ),
                    )
                except pika.exceptions.NackError as exc:
                    self.journal.broke(command.id, exc)
                except _BROKEN as exc:
                    self.journal.broke(command.id, exc)
                    with contextlib.suppress(Exception):
                        assert connection is not None
                        connection.close()
                    connection = channel = None
                else:
                    self.journal.confirmed(command.id)
        except BaseException as exc:  # a harness bug: surface it, do not hang the scenario
            self.error = exc
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()


class Observer(Worker):
    """Consumes one queue, the harness's reply queue (``dead=False``) or the daemon's DLQ (``dead=True``),
    recording what arrives; acks after recording. One connection per queue: a 20 MiB dead letter must not
    queue up the replies behind it in the harness's own socket."""

    def __init__(self, url: Urls, queue: str, journal: Journal, *, dead: bool = False) -> None:
        super().__init__(f"chaos-observer-{'dlq' if dead else 'replies'}")
        self.url = url
        self.queue = queue
        self.journal = journal
        self.callback = self._on_dead if dead else self._on_reply

    def run(self) -> None:
        while not self.stopping.is_set():
            connection = None
            try:
                connection = pika.BlockingConnection(_parameters(self.url))
                channel = connection.channel()
                # small: what the broker pushed before a fault is all the harness can still see during it
                channel.basic_qos(prefetch_count=50)
                channel.basic_consume(self.queue, self.callback)
                while not self.stopping.is_set():
                    connection.process_data_events(time_limit=0.2)
            except _BROKEN:
                self.reconnects += 1
                self.stopping.wait(0.25)
            except BaseException as exc:  # a harness bug: surface it
                self.error = exc
                return
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()

    def _on_reply(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = {}
        error = data.get("error") or {}
        cid = props.correlation_id or data.get("command_id")
        attempts = data.get("attempts")
        reply = Reply(
            time.monotonic(),
            str(data.get("status")),
            error.get("kind"),
            props.message_id,
            attempts if isinstance(attempts, int) else None,
        )
        self.journal.reply(cid, reply, bool(method.redelivered))
        channel.basic_ack(method.delivery_tag)

    def _on_dead(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        headers = props.headers or {}
        cid = header_text(headers.get(CHAOS_ID)) or props.correlation_id
        deaths: dict[str, int] = {}
        for death in headers.get("x-death") or []:
            reason = header_text(death.get("reason")) or "?"
            deaths[reason] = deaths.get(reason, 0) + int(death.get("count", 1))
        attempt = headers.get(H_ATTEMPT, 1)
        dead = DeadLetter(
            time.monotonic(),
            header_text(headers.get(H_REASON)) or header_text(headers.get("x-first-death-reason")),
            deaths,
            int(attempt) if isinstance(attempt, int | str) and str(attempt).isdigit() else 1,
        )
        self.journal.dead_letter(cid, dead, bool(method.redelivered))
        channel.basic_ack(method.delivery_tag)
