"""RabbitMQ: connections to a node or a cluster (``nodes``), topology, publisher, consumer flow control, the
sidecar's command gateway, the AMQP header codec,
the message contracts (``contracts``) and their AsyncAPI document."""

from s2s_daemon.messaging import contracts
from s2s_daemon.messaging._headers import RetryState, header_int, header_text, message_correlation, read_deadline
from s2s_daemon.messaging.asyncapi import build_asyncapi
from s2s_daemon.messaging.flow import ConsumerGate, DependencyHold
from s2s_daemon.messaging.gateway import CommandGateway
from s2s_daemon.messaging.middlewares import DEFAULT_MIDDLEWARES
from s2s_daemon.messaging.nodes import (
    ClusterRabbitBroker,
    FailoverConnection,
    NodeList,
    connect_failover,
    connect_first,
)
from s2s_daemon.messaging.publisher import AmqpPublisher
from s2s_daemon.messaging.topology import Topology

__all__ = [
    "DEFAULT_MIDDLEWARES",
    "AmqpPublisher",
    "ClusterRabbitBroker",
    "CommandGateway",
    "ConsumerGate",
    "DependencyHold",
    "FailoverConnection",
    "NodeList",
    "RetryState",
    "Topology",
    "build_asyncapi",
    "connect_failover",
    "connect_first",
    "contracts",
    "header_int",
    "header_text",
    "message_correlation",
    "read_deadline",
]
