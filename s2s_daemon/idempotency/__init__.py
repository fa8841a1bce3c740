"""Idempotency records in Redis: command claims (``store``), HTTP submissions (``submissions``), fingerprints, and
the one factory of the daemon's Redis client (``connection``: a URL or Sentinel)."""

from s2s_daemon.idempotency.connection import RedisConnector
from s2s_daemon.idempotency.fingerprint import fingerprint
from s2s_daemon.idempotency.store import Claim, ClaimState, IdempotencyStore
from s2s_daemon.idempotency.submissions import Existing, Recorded, SubmissionLedger

__all__ = [
    "Claim",
    "ClaimState",
    "Existing",
    "IdempotencyStore",
    "Recorded",
    "RedisConnector",
    "SubmissionLedger",
    "fingerprint",
]
