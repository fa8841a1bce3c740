"""A private redis-server on a free port, for tests that pause or kill Redis (never the shared one on 6379):
the chaos harness's ``PrivateRedis``, stopped when the test ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.harness.chaos.services import PrivateRedis

__all__ = ["PrivateRedis", "private_redis"]


@contextlib.contextmanager
def private_redis(data_dir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(data_dir).start()
    try:
        yield server
    finally:
        server.stop()
