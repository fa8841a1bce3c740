"""The transactional outbox: the typed record, its Beanie collection, the durable writer, the relay that publishes."""

from s2s_daemon.outbox.documents import OutboxDocument, count_in_status, status_count_pipeline
from s2s_daemon.outbox.record import OutboxRecord, OutboxStatus, command_key, webhook_key, webhook_routing_key
from s2s_daemon.outbox.relay import Relay
from s2s_daemon.outbox.writer import Handoff, OutboxWriter, WriteResult

__all__ = [
    "Handoff",
    "OutboxDocument",
    "OutboxRecord",
    "OutboxStatus",
    "OutboxWriter",
    "Relay",
    "WriteResult",
    "command_key",
    "count_in_status",
    "status_count_pipeline",
    "webhook_key",
    "webhook_routing_key",
]
