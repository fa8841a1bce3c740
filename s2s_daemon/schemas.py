"""A route's body schema, compiled twice: jsonschema-rs answers "valid?" on the hot path, and the jsonschema
validator words the error of a body that is not, so producers get the same message they always got.

Checking a valid command with the Python validator was about 3% of the daemon's CPU under load; jsonschema-rs
(the Rust implementation, Draft 2020-12 like the validator the config check uses) does it for a fraction of
that. The two implement the same draft; where they would disagree on a body, the Python validator decides
(a body jsonschema-rs rejects but jsonschema accepts is accepted, as before).
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator

__all__ = ["BodySchema"]


class BodySchema:
    __slots__ = ("_fast", "_full")

    def __init__(self, schema: dict[str, Any]) -> None:
        self._full = Draft202012Validator(schema)
        self._fast = jsonschema_rs.Draft202012Validator(schema)

    def violation(self, instance: Any) -> str | None:
        """None when ``instance`` is valid; else ``<path>: <message>`` of its first error (by path)."""
        if self._fast.is_valid(instance):
            return None
        error = next(iter(sorted(self._full.iter_errors(instance), key=lambda e: e.path)), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        return f"{where}: {error.message}"
