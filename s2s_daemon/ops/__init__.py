"""Operator tools behind the CLI: outbox inspection and repair, dead-letter queue handling, webhook endpoints,
generated documents.

Only the CLI hooks are imported here: each tool loads its heavier modules when it runs.
"""

from s2s_daemon.ops.dlq_cli import add_dlq_parser, cmd_dlq
from s2s_daemon.ops.docs_cli import add_docs_parser, cmd_docs
from s2s_daemon.ops.outbox import add_outbox_parser, cmd_outbox
from s2s_daemon.ops.subscriptions_cli import add_subscriptions_parser, cmd_subscriptions

__all__ = [
    "add_dlq_parser",
    "add_docs_parser",
    "add_outbox_parser",
    "add_subscriptions_parser",
    "cmd_dlq",
    "cmd_docs",
    "cmd_outbox",
    "cmd_subscriptions",
]
