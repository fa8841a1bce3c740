"""RabbitMQ: topology, publisher, consumer flow control, the sidecar's command gateway, the AMQP header codec,
the message contracts (``contracts``) and their AsyncAPI document."""

from s2s_daemon.messaging import contracts
from s2s_daemon.messaging._headers import RetryState, header_int, header_text, message_correlation, read_deadline
from s2s_daemon.messaging.asyncapi import build_asyncapi
from s2s_daemon.messaging.flow import ConsumerGate, DependencyHold
from s2s_daemon.messaging.gateway import CommandGateway
from s2s_daemon.messaging.middlewares import DEFAULT_MIDDLEWARES
from s2s_daemon.messaging.publisher import AmqpPublisher
from s2s_daemon.messaging.topology import Topology

__all__ = [
    "DEFAULT_MIDDLEWARES",
    "AmqpPublisher",
    "CommandGateway",
    "ConsumerGate",
    "DependencyHold",
    "RetryState",
    "Topology",
    "build_asyncapi",
    "contracts",
    "header_int",
    "header_text",
    "message_correlation",
    "read_deadline",
]
