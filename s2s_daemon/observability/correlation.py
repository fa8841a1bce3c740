"""Correlation IDs and W3C trace context carried from AMQP and HTTP into logs, downstream calls and replies.

``TraceContext`` follows W3C Trace Context Level 1: a ``traceparent`` that is not valid (uppercase hex, an
all-zero id, version ``ff``, malformed) starts a new trace; a higher version is read by the version-00 rules
on its first 55 characters; ``tracestate`` is kept as received and forwarded beside the ``traceparent`` it came
with, or dropped alone when it is not valid (the ``traceparent`` still counts).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass

__all__ = ["H_TRACEPARENT", "H_TRACESTATE", "TraceContext", "clean_id", "new_correlation_id", "valid_tracestate"]

H_TRACEPARENT = "traceparent"
H_TRACESTATE = "tracestate"

# version, trace-id, parent-id, trace-flags: lowercase hex only (the spec's HEXDIGLC); matched as a prefix,
# the length rules of the version decide what may follow.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_VERSION_00_LENGTH = 55
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16
_OWS = " \t"
# One tracestate list-member (spec 3.3.1): a simple or multi-tenant key, '=', a value of printable ASCII
# without ',' and '=' that does not end in a space.
_TRACESTATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_TRACESTATE_MAX_MEMBERS = 32
_SAFE_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII without spaces, bounded


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    parent_id: str
    flags: str = "01"
    tracestate: str | None = None  # the caller's, as received; None when it sent none (or an invalid one)

    @classmethod
    def parse(cls, traceparent: str | None, tracestate: str | None = None) -> TraceContext | None:
        """The context of a W3C ``traceparent`` (and its ``tracestate``); None when the traceparent is absent or
        not valid: the spec says start a new trace then, and never read the tracestate."""
        if not traceparent:
            return None
        header = traceparent.strip(_OWS)
        match = _TRACEPARENT.match(header)
        if match is None:
            return None
        version, trace_id, parent_id, flags = match.groups()
        if version == "00":
            if len(header) != _VERSION_00_LENGTH:
                return None
        elif version == "ff" or (len(header) > _VERSION_00_LENGTH and header[_VERSION_00_LENGTH] != "-"):
            return None
        else:  # read as version 00, which defines the sampled flag only
            flags = _sampled_only(flags)
        if trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_PARENT_ID:
            return None
        return cls(trace_id, parent_id, flags, valid_tracestate(tracestate) if tracestate else None)

    @classmethod
    def new(cls) -> TraceContext:
        ids = os.urandom(24).hex()  # trace id and parent id from one read of the system's random source
        return cls(ids[:32], ids[32:])

    @property
    def sampled(self) -> bool:
        return _sampled_only(self.flags) == "01"

    def child(self) -> TraceContext:
        """A new span id in the same trace: what we send downstream as our own ``traceparent``. Only the sampled
        flag is carried (version 00 defines no other); the tracestate passes through unchanged."""
        return TraceContext(self.trace_id, secrets.token_hex(8), _sampled_only(self.flags), self.tracestate)

    @property
    def header(self) -> str:
        """The ``traceparent`` value (version 00, whatever version it was read from)."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"

    def headers(self) -> dict[str, str]:
        """``traceparent``, and ``tracestate`` when there is one: the headers to forward this context in."""
        if self.tracestate is None:
            return {H_TRACEPARENT: self.header}
        return {H_TRACEPARENT: self.header, H_TRACESTATE: self.tracestate}


def _sampled_only(flags: str) -> str:
    return "01" if int(flags, 16) & 1 else "00"


def valid_tracestate(value: str) -> str | None:
    """``value`` unchanged when it is a valid ``tracestate`` with at least one list-member, else None.

    Valid: comma-separated list-members (blank ones allowed, as when several headers were joined), at most 32,
    each key once.
    """
    keys: set[str] = set()
    for item in value.split(","):
        member = item.strip(_OWS)
        if not member:
            continue
        match = _TRACESTATE_MEMBER.fullmatch(member)
        if match is None or match.group(1) in keys or len(keys) == _TRACESTATE_MAX_MEMBERS:
            return None
        keys.add(match.group(1))
    return value if keys else None


def clean_id(value: object) -> str | None:
    """A usable id from a header/property value already decoded to text, or None; junk is refused, not truncated."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if _SAFE_ID.match(value) else None


def new_correlation_id() -> str:
    """A random UUID in 32 hex digits, as ``uuid.uuid4().hex`` (version 4, RFC 4122 variant) without building a
    ``UUID``: a new one for nearly every webhook delivery, and the object cost ~2 us of ~3."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()
