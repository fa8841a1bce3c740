"""Idempotency records in Redis: the consumer's claims (store) and the HTTP submissions (ledger)."""

from s2s_daemon.idempotency.fingerprint import fingerprint
from s2s_daemon.idempotency.store import Claim, ClaimState, IdempotencyStore
from s2s_daemon.idempotency.submissions import Existing, Recorded, SubmissionLedger

__all__ = ["Claim", "ClaimState", "Existing", "IdempotencyStore", "Recorded", "SubmissionLedger", "fingerprint"]
