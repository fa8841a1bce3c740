"""The sidecar's AMQP side: publish HTTP-submitted commands with confirms and collect their replies.

One robust aio-pika connection per daemon process (failing over between the nodes of a cluster, ``nodes``),
separate from FastStream's consumers, with:

* a confirm channel: ``publish_command`` returns only after the broker confirmed the persistent message;
* one long-lived reply queue, exclusive and auto-delete, named after the process (``<prefix>.sidecar.<owner>.
  replies``): callers that wait register a future under (correlation id, command id) before publishing, and
  the consumer resolves it. Keying on the command id too keeps two commands that share a caller's
  correlation id apart. A reply nobody waits for (the caller gave up) is dropped;
* a probe channel for passive queue declarations (queue depth on the status page). A passive declare of a
  missing queue closes its channel, so probes never share one with publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.messaging import contracts as c
from s2s_daemon.messaging.nodes import NodeList, connect_failover
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.observability.correlation import TraceContext
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.tracing import NO_TRACING, SpanKind, Tracing

__all__ = ["CommandGateway"]

log = get_logger("s2s.gateway")

_WaitKey = tuple[str, str]


class CommandGateway:
    def __init__(
        self,
        nodes: NodeList | str,
        topology: Topology,
        owner: str,
        app_id: str,
        publish_timeout: float = 5.0,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._nodes = NodeList([nodes]) if isinstance(nodes, str) else nodes
        self._tracing = tracing
        self._topology = topology
        self._app_id = app_id
        self._publish_timeout = publish_timeout
        self.reply_queue_name = topology.reply_queue_name(owner)
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._probe: AbstractRobustChannel | None = None
        self._probe_lock = asyncio.Lock()
        self._reply_queue: AbstractQueue | None = None
        self._waiting: dict[_WaitKey, asyncio.Future[dict[str, Any]]] = {}

    async def start(self) -> None:
        try:
            self._connection = await asyncio.wait_for(
                connect_failover(self._nodes, client_properties={"connection_name": f"{self._app_id} sidecar"}),
                5.0 * len(self._nodes.urls),
            )
            channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await channel.get_exchange(self._topology.commands_exchange_name, ensure=False)
            self._reply_queue = await channel.declare_queue(self.reply_queue_name, exclusive=True, auto_delete=True)
            await self._reply_queue.consume(self._on_reply, no_ack=True)
        except Exception as exc:
            await self.stop()
            raise DependencyUnavailable("rabbitmq", f"sidecar gateway: {type(exc).__name__}: {exc}") from exc

    async def stop(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    # commands ----------------------------------------------------------------------------------
    def expect_reply(self, correlation_id: str, command_id: str) -> asyncio.Future[dict[str, Any]]:
        """Register interest in a reply; call before publishing, and ``forget`` when done waiting."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[(correlation_id, command_id)] = future
        return future

    def forget(self, correlation_id: str, command_id: str) -> None:
        future = self._waiting.pop((correlation_id, command_id), None)
        if future is not None and not future.done():
            future.cancel()

    async def publish_command(
        self,
        body: bytes,
        routing_key: str,
        *,
        command_id: str,
        correlation_id: str,
        trace: TraceContext,
        want_reply: bool,
    ) -> None:
        """Persistent, confirmed; raises DependencyUnavailable when the broker did not confirm in time.
        ``trace``, the caller's context, is sent onward in the ``traceparent`` and ``tracestate`` headers: as the
        context of a producer span (tracing on), else with a new span id."""
        if self._exchange is None:
            raise DependencyUnavailable("rabbitmq", "sidecar gateway not started")
        exchange = self._topology.commands_exchange_name
        with self._tracing.span(
            f"publish {exchange}",
            SpanKind.PRODUCER,
            {
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "messaging.destination.name": exchange,
                "messaging.rabbitmq.destination.routing_key": routing_key,
                "messaging.message.id": command_id,
                "messaging.message.conversation_id": correlation_id,
                "messaging.message.body.size": len(body),
            }
            if self._tracing.enabled
            else None,
        ) as span:
            onward = span.context or trace.child()
            await self._publish(body, routing_key, command_id, correlation_id, onward, want_reply)

    async def _publish(
        self, body: bytes, routing_key: str, command_id: str, correlation_id: str, trace: TraceContext, want_reply: bool
    ) -> None:
        assert self._exchange is not None
        message = aio_pika.Message(
            body,
            message_id=command_id,
            correlation_id=correlation_id,
            reply_to=self.reply_queue_name if want_reply else None,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            app_id=self._app_id,
            headers={
                c.H_IDEMPOTENCY_KEY: command_id,
                c.H_CORRELATION_ID: correlation_id,
                **trace.headers(),
            },
        )
        try:
            await self._exchange.publish(message, routing_key, mandatory=False, timeout=self._publish_timeout)
        except Exception as exc:
            raise DependencyUnavailable("rabbitmq", f"command publish not confirmed: {type(exc).__name__}") from exc

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            body = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            log.warning("gateway.reply_not_json", correlation_id=message.correlation_id)
            return
        command_id = body.get("command_id") if isinstance(body, dict) else None
        future = self._waiting.get((message.correlation_id or "", str(command_id)))
        if future is None or future.done():
            log.debug("gateway.reply_unclaimed", correlation_id=message.correlation_id, command_id=command_id)
            return
        future.set_result(body)

    # probes ------------------------------------------------------------------------------------
    async def queue_depth(self, name: str) -> int | None:
        """Messages ready in ``name`` (passive declare), or None when it cannot be told."""
        if self._connection is None:
            return None
        async with self._probe_lock:
            try:
                if self._probe is None or self._probe.is_closed:
                    self._probe = await self._connection.channel(publisher_confirms=False)
                queue = await self._probe.declare_queue(name, passive=True, robust=False, timeout=2.0)
            except Exception as exc:
                log.debug("gateway.queue_probe_failed", queue=name, error=f"{type(exc).__name__}: {exc}")
                # A robust channel would reopen itself after the broker closed it; close it for good instead,
                # so failed probes never leave channels behind.
                if self._probe is not None:
                    with contextlib.suppress(Exception):
                        await self._probe.close()
                self._probe = None
                return None
        return int(queue.declaration_result.message_count or 0)

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed
