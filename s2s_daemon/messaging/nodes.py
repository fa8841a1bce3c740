"""AMQP connections to one RabbitMQ node or to any node of a cluster, with failover.

aio-pika's ``RobustConnection`` (and FastStream's ``RabbitBroker``, built on it) reconnects to the one URL it
was given, and its first connect fails if that node is down (aio-pika#141, open since 2018; the round-robin
PR aio-pika#680 was closed unmerged). Two pieces close the gap:

* ``FailoverConnection``: a ``RobustConnection`` that moves to the next node of its list each time its
  connection closes or a connection attempt fails. aio-pika reports both through ``_on_connection_close``
  (a failed attempt calls it with the error before raising), so the robust reconnect loop, which reads
  ``self.url`` on every attempt, tries the nodes in turn; channels and consumers are restored by aio-pika on
  whichever node answers.
* the first connect tries every node once (``connect_failover``, ``ClusterRabbitBroker._connect``) and fails,
  naming every node and its error, only when none answers.

Node order: a random rotation of the list per connection (``shuffle``), so that replicas spread over the
nodes, then round-robin. A single URL behaves exactly like aio-pika's own robust connection.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPConnectionError
from faststream.rabbit import RabbitBroker
from yarl import URL

from s2s_daemon.observability.logging import get_logger, redact_url

__all__ = [
    "ClusterRabbitBroker",
    "FailoverConnection",
    "NodeList",
    "connect_failover",
    "connect_first",
]

log = get_logger("s2s.amqp")


class NodeList:
    """The broker URLs of one cluster (or one node), in the order a new connection tries them."""

    def __init__(self, urls: Sequence[str], *, shuffle: bool = True, reconnect_interval: float | None = None) -> None:
        """``reconnect_interval``: seconds between a robust connection's attempts (each to the next node), put in
        every URL's query, where aio-pika reads it; None keeps aio-pika's default (5 s)."""
        if not urls:
            raise ValueError("at least one RabbitMQ URL is needed")
        if reconnect_interval is not None:
            urls = [str(URL(u).update_query(reconnect_interval=reconnect_interval)) for u in urls]
        self.urls = tuple(urls)
        self.shuffle = shuffle

    def start_order(self) -> list[str]:
        """Every node once, starting at a random one when shuffling (then in list order, wrapping round)."""
        start = random.randrange(len(self.urls)) if self.shuffle else 0
        return [*self.urls[start:], *self.urls[:start]]

    def connection_class(self) -> type[FailoverConnection]:
        """A ``FailoverConnection`` subclass bound to these nodes (aio-pika builds connections from a class)."""
        nodes = tuple(URL(u) for u in self.urls)
        return cast("type[FailoverConnection]", type("FailoverConnection", (FailoverConnection,), {"NODES": nodes}))


def _same_node(a: URL, b: URL) -> bool:
    return (a.scheme, a.host, a.port, a.path) == (b.scheme, b.host, b.port, b.path)


class FailoverConnection(RobustConnection):
    """A robust connection that reconnects to the next node of ``NODES`` (set by ``NodeList.connection_class``)."""

    NODES: ClassVar[tuple[URL, ...]] = ()

    def __init__(self, url: URL, loop: Any = None, **kwargs: Any) -> None:
        super().__init__(url, loop, **kwargs)
        # the URL we start on carries the options aio-pika and FastStream put in its query: every node gets them
        options = self.url.query
        nodes = self.NODES or (self.url,)
        self._nodes = tuple(node.update_query(options) for node in nodes)
        self._index = next((i for i, node in enumerate(nodes) if _same_node(node, self.url)), 0)
        self.url = self._nodes[self._index]
        self.failovers = 0

    async def _on_connection_close(self, closing: Any) -> None:
        if len(self._nodes) > 1 and not (self._close_called or self.is_closed):
            previous = self.url
            self._index = (self._index + 1) % len(self._nodes)
            self.url = self._nodes[self._index]
            self.failovers += 1
            log.warning("amqp.failover", previous=redact_url(str(previous)), next=redact_url(str(self.url)))
        await super()._on_connection_close(closing)


def _failed(errors: list[str]) -> AMQPConnectionError:
    return AMQPConnectionError("no RabbitMQ node answered: " + "; ".join(errors))


async def connect_failover(
    nodes: NodeList, *, timeout: float = 5.0, client_properties: dict[str, Any] | None = None
) -> AbstractRobustConnection:
    """A robust connection to the first node that answers, failing over to the others afterwards."""
    errors = []
    connection_class = nodes.connection_class()
    for url in nodes.start_order():
        try:
            return await aio_pika.connect_robust(
                url, timeout=timeout, client_properties=client_properties, connection_class=connection_class
            )
        except CONNECTION_EXCEPTIONS as exc:
            errors.append(f"{redact_url(url)}: {type(exc).__name__}: {exc}")
    raise _failed(errors)


async def connect_first(nodes: NodeList, *, timeout: float = 5.0) -> AbstractConnection:
    """A plain (not robust) connection to the first node that answers: for short-lived tools."""
    errors = []
    for url in nodes.start_order():
        try:
            return await aio_pika.connect(url, timeout=timeout)
        except CONNECTION_EXCEPTIONS as exc:
            errors.append(f"{redact_url(url)}: {type(exc).__name__}: {exc}")
    raise _failed(errors)


class ClusterRabbitBroker(RabbitBroker):
    """FastStream's ``RabbitBroker`` over a ``FailoverConnection``: the first connect tries every node, later
    reconnects move through the nodes. Subscribers and publishers are FastStream's own, untouched."""

    def __init__(self, nodes: NodeList, *, connection_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(nodes.urls[0], **kwargs)
        self.nodes = nodes
        # what FastStream put in the URL's query goes to every node, with the name the broker shows for the
        # connection (aiormq reads it from ``?name=``; FastStream's client_properties do not set it)
        built = URL(self._connection_kwargs["url"])
        self._options = built.update_query(name=connection_name).query if connection_name else built.query

    async def _connect(self) -> RobustConnection:
        errors = []
        self._connection_kwargs["connection_class"] = self.nodes.connection_class()
        for url in self.nodes.start_order():
            self._connection_kwargs["url"] = str(URL(url).update_query(self._options))
            try:
                return await super()._connect()
            except CONNECTION_EXCEPTIONS as exc:
                errors.append(f"{redact_url(url)}: {type(exc).__name__}: {exc}")
        raise _failed(errors)
