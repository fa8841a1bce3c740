"""Payload fingerprints: the same command body gives the same fingerprint whatever its key order."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def fingerprint(routing_key: str, body: Any) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(routing_key.encode() + b"\0" + canonical, digest_size=16).hexdigest()
