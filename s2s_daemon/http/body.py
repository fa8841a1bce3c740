"""Request bodies read with a size limit: refused on ``Content-Length`` before reading, and while streaming.

A sender that lies about (or omits) its length is cut off as soon as the bytes received pass the limit, so
an oversized body is never buffered whole.
"""

from __future__ import annotations

from starlette.requests import Request

from s2s_daemon.errors import S2SError

__all__ = ["BodyTooLarge", "InvalidContentLength", "is_json_media_type", "read_limited"]


class BodyTooLarge(S2SError):
    """The body is larger than ``limit`` bytes (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.limit = limit


class InvalidContentLength(S2SError):
    """``Content-Length`` is not a non-negative integer (HTTP 400)."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            raise InvalidContentLength("content-length is not a number")
        if int(declared) > limit:
            raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))
