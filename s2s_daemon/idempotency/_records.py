"""The Redis side of the idempotency records: the Lua scripts and the one parser of a stored value.

A consumer's record (``store.py``), one string key per idempotency key:
  ``f|<owner>|<fingerprint>``  in flight, expires with the lease (PX)
  ``d|<fingerprint>``          done, expires after the done TTL (the outbox record holds the reply)
A submission's record (``submissions.py``) is the bare fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from s2s_daemon.errors import DependencyUnavailable

# Take the key unless it is set; answer the value found (false when we took it). ``mine``: our own token again.
CLAIM = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'mine'
end
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

TAKE = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# in flight (ours) -> done: 1; already done: 2; someone else's: 0
COMPLETE = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if v and string.sub(v, 1, 2) == 'd|' then return 2 end
return 0
"""

IF_EQUAL_DEL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

IF_EQUAL_PEXPIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def in_flight_value(owner: str, fingerprint: str) -> str:
    return f"f|{owner}|{fingerprint}"


def done_value(fingerprint: str) -> str:
    return f"d|{fingerprint}"


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    done: bool  # False: in flight
    fingerprint: str


def parse_consumer_record(value: bytes | str) -> ConsumerRecord:
    """A consumer's stored value (the owner may itself contain ``|``: the fingerprint is after the last)."""
    state, _, rest = text(value).partition("|")
    if state == "d":
        return ConsumerRecord(True, rest)
    return ConsumerRecord(False, rest.rpartition("|")[2])


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def run_script(script: Any, key: str, *args: Any) -> Any:
    """One script call on one key; Redis errors become DependencyUnavailable."""
    try:
        return await script(keys=[key], args=list(args))
    except (RedisError, OSError) as exc:
        raise DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc
