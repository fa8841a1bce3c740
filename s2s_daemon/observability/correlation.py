"""Correlation IDs and W3C trace context carried from AMQP and HTTP into logs, downstream calls and replies."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass

__all__ = ["TraceContext", "clean_id", "new_correlation_id"]

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SAFE_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII without spaces, bounded


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    parent_id: str
    flags: str = "01"

    @classmethod
    def parse(cls, header: str | None) -> TraceContext | None:
        """Parse a W3C ``traceparent``; None for absent or malformed ones (the spec says: start a new trace)."""
        if not header:
            return None
        match = _TRACEPARENT.match(header.strip().lower())
        if match is None:
            return None
        version, trace_id, parent_id, flags = match.groups()
        if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
            return None
        return cls(trace_id, parent_id, flags)

    @classmethod
    def new(cls) -> TraceContext:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceContext:
        """A new span id in the same trace: what we send downstream as our own ``traceparent``."""
        return TraceContext(self.trace_id, secrets.token_hex(8), self.flags)

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"


def clean_id(value: object) -> str | None:
    """A usable id from a header/property value already decoded to text, or None; junk is refused, not truncated."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if _SAFE_ID.match(value) else None


def new_correlation_id() -> str:
    return uuid.uuid4().hex
