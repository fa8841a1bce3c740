"""Every exchange and queue the daemon uses, named from one prefix and declared at start.

```
<p>.commands  topic    producers publish "<downstream>.<action>"; alternate-exchange <p>.unrouted
<p>.unrouted  fanout   -> queue <p>.unrouted (the daemon moves these to the DLQ with reason "unroutable")
<p>.<ds>.commands       quorum queue bound "<ds>.#", x-delivery-limit, dead-letters to <p>.dlx
<p>.<ds>.delay.<n>s     quorum queues with x-message-ttl n s, dead-lettering back to <p>.<ds>.commands
<p>.dlx       fanout   -> quorum queue <p>.dlq
<p>.events    topic    "<routing key>.succeeded|failed", "webhook.<service>.<type>"
<p>.sidecar.<owner>.replies   the sidecar's reply queue for commands submitted over HTTP (one per process)
<p>.subscription.<name>       quorum queue of one webhook endpoint, bound to <p>.events with its patterns,
                              x-delivery-limit, dead-letters to <p>.dlx
<p>.subscription.<name>.delay.<n>s   its delay queues, dead-lettering back to <p>.subscription.<name>
```

No other module builds these names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

from s2s_daemon.settings import AmqpSettings


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    downstreams: tuple[str, ...]
    delivery_limit: int
    delay_ladder: tuple[int, ...]
    quorum_group_size: int | None = None
    # webhook endpoints: (name, routing-key patterns on the events exchange), and their delay queues' rungs
    subscriptions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    delivery_ladder: tuple[int, ...] = ()

    @classmethod
    def from_settings(
        cls,
        amqp: AmqpSettings,
        downstreams: tuple[str, ...],
        subscriptions: tuple[tuple[str, tuple[str, ...]], ...] = (),
        delivery_ladder: tuple[int, ...] = (),
    ) -> Topology:
        return cls(
            amqp.prefix,
            downstreams,
            amqp.delivery_limit,
            amqp.delay_ladder,
            quorum_group_size=amqp.quorum_initial_group_size,
            subscriptions=subscriptions,
            delivery_ladder=delivery_ladder,
        )

    @classmethod
    def of_prefix(cls, prefix: str) -> Topology:
        """The names under ``prefix``, for tools that address what a daemon declared (no downstreams known)."""
        return cls.from_settings(AmqpSettings(prefix=prefix), ())

    # names -------------------------------------------------------------------------------------
    @property
    def commands_exchange_name(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def events_exchange_name(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dlx_name(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dlq_name(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def unrouted_name(self) -> str:
        return f"{self.prefix}.unrouted"

    def command_queue_name(self, downstream: str) -> str:
        return f"{self.prefix}.{downstream}.commands"

    def delay_queue_name(self, downstream: str, seconds: int) -> str:
        return f"{self.prefix}.{downstream}.delay.{seconds}s"

    def subscription_queue_name(self, subscription: str) -> str:
        return f"{self.prefix}.subscription.{subscription}"

    def subscription_delay_queue_name(self, subscription: str, seconds: int) -> str:
        return f"{self.prefix}.subscription.{subscription}.delay.{seconds}s"

    def subscription_delay_rung(self, delay: float) -> int:
        """The smallest rung of the delivery ladder that waits at least ``delay`` seconds (the top rung caps it)."""
        wanted = max(1, math.ceil(delay))
        return next((rung for rung in self.delivery_ladder if rung >= wanted), self.delivery_ladder[-1])

    def reply_queue_name(self, owner: str) -> str:
        return f"{self.prefix}.sidecar.{owner}.replies"

    def delay_rung(self, delay: float) -> int:
        """The smallest rung that waits at least ``delay`` seconds (the top rung caps it)."""
        wanted = max(1, math.ceil(delay))
        for rung in self.delay_ladder:
            if rung >= wanted:
                return rung
        return self.delay_ladder[-1]

    # declarations ------------------------------------------------------------------------------
    @property
    def commands_exchange(self) -> RabbitExchange:
        return RabbitExchange(
            self.commands_exchange_name,
            type=ExchangeType.TOPIC,
            durable=True,
            arguments={"alternate-exchange": self.unrouted_name},
        )

    @property
    def events_exchange(self) -> RabbitExchange:
        return RabbitExchange(self.events_exchange_name, type=ExchangeType.TOPIC, durable=True)

    @property
    def dlx(self) -> RabbitExchange:
        return RabbitExchange(self.dlx_name, type=ExchangeType.FANOUT, durable=True)

    @property
    def unrouted_exchange(self) -> RabbitExchange:
        return RabbitExchange(self.unrouted_name, type=ExchangeType.FANOUT, durable=True)

    def _replicas(self) -> dict[str, Any]:
        """Unset: the broker places a replica on every cluster node (RabbitMQ 3.10 and later; a 3-node cluster
        gives 3, checked by the cluster chaos scenario)."""
        return {} if self.quorum_group_size is None else {"x-quorum-initial-group-size": self.quorum_group_size}

    @property
    def dlq(self) -> RabbitQueue:
        return RabbitQueue(
            self.dlq_name, queue_type=QueueType.QUORUM, durable=True, arguments=cast("Any", self._replicas())
        )

    @property
    def unrouted_queue(self) -> RabbitQueue:
        return RabbitQueue(
            self.unrouted_name, queue_type=QueueType.QUORUM, durable=True, arguments=cast("Any", self._replicas())
        )

    def command_queue(self, downstream: str) -> RabbitQueue:
        args: dict[str, Any] = {
            **self._replicas(),
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dlx_name,
        }
        return RabbitQueue(
            self.command_queue_name(downstream),
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=f"{downstream}.#",
            arguments=cast("Any", args),  # QuorumQueueArgs (a TypedDict) lacks some keys we set
        )

    def subscription_queue(self, subscription: str) -> RabbitQueue:
        args: dict[str, Any] = {
            **self._replicas(),
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dlx_name,
        }
        return RabbitQueue(
            self.subscription_queue_name(subscription),
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments=cast("Any", args),
        )

    def subscription_delay_queue(self, subscription: str, seconds: int) -> RabbitQueue:
        return self._delay_queue(
            self.subscription_delay_queue_name(subscription, seconds),
            self.subscription_queue_name(subscription),
            seconds,
        )

    def delay_queue(self, downstream: str, seconds: int) -> RabbitQueue:
        return self._delay_queue(
            self.delay_queue_name(downstream, seconds), self.command_queue_name(downstream), seconds
        )

    def _delay_queue(self, name: str, back_to: str, seconds: int) -> RabbitQueue:
        args: dict[str, Any] = {
            **self._replicas(),
            "x-message-ttl": seconds * 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": back_to,
            # at-least-once dead-lettering needs reject-publish overflow (RabbitMQ >= 3.10)
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        return RabbitQueue(
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments=cast("Any", args),
        )

    def all_queue_names(self) -> list[str]:
        names = [self.dlq_name, self.unrouted_name]
        for ds in self.downstreams:
            names.append(self.command_queue_name(ds))
            names.extend(self.delay_queue_name(ds, s) for s in self.delay_ladder)
        for name, _ in self.subscriptions:
            names.append(self.subscription_queue_name(name))
            names.extend(self.subscription_delay_queue_name(name, s) for s in self.delivery_ladder)
        return names

    def all_exchange_names(self) -> list[str]:
        return [self.commands_exchange_name, self.events_exchange_name, self.dlx_name, self.unrouted_name]

    async def declare(self, broker: RabbitBroker) -> None:
        """Declare everything; idempotent, fails loudly if an existing object has other arguments."""
        await broker.declare_exchange(self.unrouted_exchange)
        await broker.declare_exchange(self.commands_exchange)
        await broker.declare_exchange(self.events_exchange)
        dlx = await broker.declare_exchange(self.dlx)
        dlq = await broker.declare_queue(self.dlq)
        await dlq.bind(dlx, routing_key="")
        unrouted_ex = await broker.declare_exchange(self.unrouted_exchange)
        unrouted_q = await broker.declare_queue(self.unrouted_queue)
        await unrouted_q.bind(unrouted_ex, routing_key="")
        for ds in self.downstreams:
            await broker.declare_queue(self.command_queue(ds))
            for seconds in self.delay_ladder:
                await broker.declare_queue(self.delay_queue(ds, seconds))
        events = await broker.declare_exchange(self.events_exchange)
        for name, patterns in self.subscriptions:
            queue = await broker.declare_queue(self.subscription_queue(name))
            for pattern in patterns:
                await queue.bind(events, routing_key=pattern)
            for seconds in self.delivery_ladder:
                await broker.declare_queue(self.subscription_delay_queue(name, seconds))
