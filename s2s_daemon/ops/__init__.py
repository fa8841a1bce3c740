"""Operator tools behind the CLI: outbox inspection and repair, dead-letter queue handling."""

__all__: list[str] = []
