"""The transactional outbox: the collection and its records, the durable writer, the relay that publishes."""

from s2s_daemon.outbox.batching import MicroBatcher
from s2s_daemon.outbox.documents import (
    OutboxDocument,
    OutboxStatus,
    command_key,
    count_in_status,
    status_count_pipeline,
    webhook_key,
)
from s2s_daemon.outbox.relay import Relay
from s2s_daemon.outbox.writer import Handoff, OutboxWriter, WriteResult

__all__ = [
    "Handoff",
    "MicroBatcher",
    "OutboxDocument",
    "OutboxStatus",
    "OutboxWriter",
    "Relay",
    "WriteResult",
    "command_key",
    "count_in_status",
    "status_count_pipeline",
    "webhook_key",
]
