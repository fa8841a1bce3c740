"""Idempotency records in Redis: ``in-flight`` with an owner token and a lease, then ``done``.

One string key per idempotency key, namespaced per downstream: ``in flight`` or ``done`` with the payload
fingerprint (the values and scripts are in ``_records.py``).

Every transition is one atomic Lua call that compares the owner token, so a worker whose lease expired
can never overwrite the record of the worker that took over. The owner token names one process: a process
that finds its own token (a delivery it parked after a failure) decides itself whether a task of its own is
still on it, instead of waiting for the lease to run out.

The calls made in one turn of the event loop (the claims and completions of concurrent commands) go out as one
pipeline without MULTI: one socket write and one read for all of them instead of one each, and every caller
still gets its own answer. Each call stays one atomic script; a pipeline only shares the round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from s2s_daemon.batching import GroupCommit
from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.idempotency import _records

_ScriptCall = tuple[Any, str, tuple[Any, ...]]  # (registered script, Redis key, arguments)


class ClaimState(StrEnum):
    CLAIMED = "claimed"  # we own it now: call the downstream
    OURS = "ours"  # this process already holds the lease (an earlier delivery here that did not finish)
    IN_FLIGHT = "in-flight"  # someone else holds a live lease
    DONE = "done"  # completed before


@dataclass(frozen=True, slots=True)
class Claim:
    state: ClaimState
    fingerprint: str | None  # the stored fingerprint for IN_FLIGHT/DONE
    token: str | None  # our in-flight value when CLAIMED

    def same_payload(self, fingerprint: str) -> bool:
        return self.fingerprint == fingerprint


class IdempotencyStore:
    def __init__(self, redis: Redis, prefix: str, lease_ms: int, done_ttl_ms: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lease_ms = lease_ms
        self._done_ttl_ms = done_ttl_ms
        self._claim = redis.register_script(_records.CLAIM)
        self._complete = redis.register_script(_records.COMPLETE)
        self._release = redis.register_script(_records.IF_EQUAL_DEL)
        self._extend = redis.register_script(_records.IF_EQUAL_PEXPIRE)
        self._calls: GroupCommit[_ScriptCall, Any] = GroupCommit(self._pipelined)

    def redis_key(self, namespace: str, key: str) -> str:
        return f"{self._prefix}{namespace}:{key}"

    async def claim(self, namespace: str, key: str, owner: str, fingerprint: str) -> Claim:
        token = _records.in_flight_value(owner, fingerprint)
        existing = await self._run(self._claim, namespace, key, token, self._lease_ms)
        if existing is None:
            return Claim(ClaimState.CLAIMED, fingerprint, token)
        if _records.text(existing) == "mine":
            return Claim(ClaimState.OURS, fingerprint, token)
        record = _records.parse_consumer_record(existing)
        return Claim(ClaimState.DONE if record.done else ClaimState.IN_FLIGHT, record.fingerprint, None)

    async def complete(self, namespace: str, key: str, token: str, fingerprint: str) -> bool:
        """in-flight (ours) -> done. False when the lease was lost to another worker."""
        done = _records.done_value(fingerprint)
        result = await self._run(self._complete, namespace, key, token, done, self._done_ttl_ms)
        return int(result) in (1, 2)

    async def release(self, namespace: str, key: str, token: str) -> None:
        """Give up our in-flight claim (nothing was called), so a redelivery can claim at once."""
        await self._run(self._release, namespace, key, token)

    async def extend(self, namespace: str, key: str, token: str) -> bool:
        return int(await self._run(self._extend, namespace, key, token, self._lease_ms)) == 1

    async def _run(self, script: Any, namespace: str, key: str, *args: Any) -> Any:
        """One script call on one key, sent with the others of this loop turn; Redis errors become
        DependencyUnavailable."""
        return await self._calls.submit((script, self.redis_key(namespace, key), args))

    async def _pipelined(self, calls: list[_ScriptCall]) -> list[Any]:
        if len(calls) == 1:  # alone in its turn (low load): a plain script call costs less than a pipeline
            script, key, args = calls[0]
            return [await _records.run_script(script, key, *args)]
        try:
            answers = await self._evalsha(calls)
            missing = [i for i, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
            if missing:  # a restarted or flushed Redis forgot the scripts: load them, run those calls again
                for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
                    script.sha = await self._redis.script_load(script.script)
                for i, answer in zip(missing, await self._evalsha([calls[i] for i in missing]), strict=True):
                    answers[i] = answer
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc
        return [
            DependencyUnavailable("redis", f"{type(answer).__name__}: {answer}")
            if isinstance(answer, BaseException)
            else answer
            for answer in answers
        ]

    async def _evalsha(self, calls: list[_ScriptCall]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for script, key, args in calls:
            pipe.evalsha(script.sha, 1, key, *args)
        return await pipe.execute(raise_on_error=False)
