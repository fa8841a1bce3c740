"""Typed settings, built once at start and passed down.

Sources, highest precedence first: explicit overrides (tests, CLI flags), environment variables, the YAML
config file (``S2S_CONFIG`` or ``--config``), defaults. Connection URLs use their conventional unprefixed names
(``RABBITMQ_URL``, ``REDIS_URL``, ``MONGODB_URI``, ``LOG_LEVEL``); everything else is ``S2S_<NAME>`` with ``__``
between nested keys (``S2S_HTTP__PORT=9000``).
"""

from __future__ import annotations

import base64
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from s2s_daemon.errors import ConfigError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
PATH_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
WebhookScheme = Literal["standard-webhooks", "github", "stripe"]
STANDARD_WEBHOOKS_SECRET_PREFIX = "whsec_"
STANDARD_WEBHOOKS_PUBLIC_KEY_PREFIX = "whpk_"  # v1a (ed25519) public key, verifies
STANDARD_WEBHOOKS_SIGNING_KEY_PREFIX = "whsk_"  # v1a (ed25519) secret key, signs
_ED25519_PREFIXES = {STANDARD_WEBHOOKS_PUBLIC_KEY_PREFIX: (32,), STANDARD_WEBHOOKS_SIGNING_KEY_PREFIX: (32, 64)}
# where the daemon and the outbox tools look for MongoDB when ``mongodb_uri`` is unset
DEFAULT_MONGODB_URI = "mongodb://127.0.0.1:27017"

_config_file: ContextVar[Path | None] = ContextVar("s2s_config_file", default=None)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ExposureKind = Literal["command", "read"]

# The sidecar's own paths; an exposure may not overlap them. A trailing "/" reserves the path and all below it.
SIDECAR_PATHS = (
    "/health",
    "/livez",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/status",
    "/api/status",
    "/console",
    "/console/",
    "/api/console/",
    "/api/commands/",
    "/api/webhooks/",
    "/api/deliveries/",
    "/api/subscriptions",
    "/admin/",
)
_PATH_SEGMENT_RE = re.compile(r"^(?:[A-Za-z0-9._~:@!$&'()*+,;=-]+|\{[A-Za-z_][A-Za-z0-9_]*\})$")


def comma_separated(value: Any) -> Any:
    """A list given as one environment variable, ``a,b,c``, as a tuple (blanks dropped); anything else as is."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _json_schema_or_none(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A JSON Schema (draft 2020-12) given in the config, checked as a schema; a clear error otherwise."""
    if value is not None:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    return value


def _segments(path: str) -> list[str]:
    return path[1:].split("/") if path != "/" else []


def _segments_overlap(a: list[str], b: list[str]) -> bool:
    """Some request path matches both: segment by segment equal, or a ``{parameter}`` on either side."""
    return len(a) == len(b) and all(x == y or x.startswith("{") or y.startswith("{") for x, y in zip(a, b, strict=True))


def paths_overlap(a: str, b: str) -> bool:
    """Two path templates (``/items/{sku}``) that some request path matches both."""
    return _segments_overlap(_segments(a), _segments(b))


def sidecar_path_taken(path: str) -> str | None:
    """The sidecar path (of ``SIDECAR_PATHS``) that ``path`` would overlap, or None."""
    segments = _segments(path)
    for own in SIDECAR_PATHS:
        reserved = _segments(own.rstrip("/"))
        prefix = segments[: len(reserved)] if own.endswith("/") else segments
        if _segments_overlap(prefix, reserved):
            return own + "..." if own.endswith("/") else own
    return None


class ExposeSettings(_Strict):
    """A route served by the sidecar: ``command`` is ``POST <path>``, ``read`` is ``GET <path>``."""

    path: str = Field(
        description="Sidecar path template, e.g. /api/billing/invoices; a read's {fields} are the route's path "
        "fields, a command takes its fields from the JSON body."
    )
    kind: ExposureKind | None = Field(
        default=None,
        description="command: POST <path> publishes the command (Idempotency-Key, Prefer: wait, status URL); read: "
        "GET <path> calls the downstream through the resilient client, with the last good copy as fallback. "
        "Default: read for a GET route, command otherwise.",
    )
    summary: str | None = Field(default=None, description="One line for the OpenAPI document.")

    @field_validator("path")
    @classmethod
    def _path_template(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        for segment in _segments(value):
            if not _PATH_SEGMENT_RE.match(segment):
                raise ValueError(
                    f"segment {segment!r}: use letters, digits and -._~:@!$&'()*+,;= or one whole {{field}} "
                    "(no empty segment, no trailing '/', no query)"
                )
        params = PATH_PARAM_RE.findall(value)
        if len(params) != len(set(params)):
            raise ValueError("a {field} appears twice")
        taken = sidecar_path_taken(value)
        if taken is not None:
            raise ValueError(f"overlaps the sidecar's own path {taken}")
        return value

    @property
    def method(self) -> Literal["GET", "POST"]:
        return "GET" if self.kind == "read" else "POST"

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(PATH_PARAM_RE.findall(self.path))


class RouteSettings(_Strict):
    """One command action: routing key ``<downstream>.<action>`` -> an HTTP call."""

    method: HttpMethod = "POST"
    path: str = Field(description="Path template; {field} is filled from the command body (URL-encoded).")
    body: bool | None = Field(
        default=None,
        description="Send the command body as JSON. Default: true for POST/PUT/PATCH, false otherwise.",
    )
    json_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="JSON Schema (2020-12) the command body must satisfy; invalid commands are dead-lettered.",
    )
    expose: ExposeSettings | None = Field(
        default=None, description="Serve this route on the sidecar's HTTP API; unset: AMQP only."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_exposure_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("expose"), dict) and data["expose"].get("kind") is None:
            kind = "read" if data.get("method", "POST") == "GET" else "command"
            data = {**data, "expose": {**data["expose"], "kind": kind}}
        return data

    @field_validator("path")
    @classmethod
    def _path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _json_schema_or_none(value)

    @model_validator(mode="after")
    def _exposure_fits(self) -> RouteSettings:
        expose = self.expose
        if expose is None:
            return self
        if expose.kind == "read":
            if self.method != "GET":
                raise ValueError(f"expose.kind read needs a GET route (reads are retried), this one is {self.method}")
            if sorted(expose.path_params) != sorted(self.path_params):
                raise ValueError(
                    f"expose.path {expose.path} must have exactly the route's path fields "
                    f"{sorted(self.path_params)}, has {sorted(expose.path_params)}"
                )
        elif expose.path_params:
            raise ValueError(f"expose.path {expose.path}: a command takes its fields from the JSON body, not the path")
        return self

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(PATH_PARAM_RE.findall(self.path))

    @property
    def sends_body(self) -> bool:
        return self.body if self.body is not None else self.method in {"POST", "PUT", "PATCH"}


# The resilience policies of a downstream (used by s2s_daemon.resilience).
class RetrySettings(BaseModel):
    """The retry policy of one downstream.

    The defaults span a rolling deploy: ten attempts, the first retry in-process after 0.5-1 s, the later ones
    parked in the delay queues for 1-2 s, 2-4 s, ... up to 60-120 s, within 300 s of the first attempt. A command
    survives a downstream outage of up to ``resilience.outage_horizon(settings)`` seconds (180 with the defaults).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=10, ge=1, description="Attempts in total, the first one included.")
    initial_delay: float = Field(default=1.0, ge=0, description="Backoff cap (seconds) before the first retry.")
    max_delay: float = Field(default=120.0, ge=0, description="Backoff cap (seconds) for any retry.")
    multiplier: float = Field(default=2.0, ge=1, description="Growth of the backoff cap per attempt.")
    jitter: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Randomised fraction of each backoff cap: a wait is drawn from [cap * (1 - jitter), cap]. "
        "1 is full jitter (no lower bound, so no outage horizon can be promised), 0 no jitter.",
    )
    max_elapsed: float = Field(
        default=300.0, gt=0, description="Seconds from the first attempt after which no retry is scheduled."
    )
    in_process_max_wait: float = Field(
        default=1.0,
        ge=0,
        description="Waits up to this many seconds happen in-process; longer ones become delayed "
        "redeliveries through the broker.",
    )
    schedule: tuple[PositiveFloat, ...] = Field(
        default=(),
        description="Fixed waits (seconds) after the 1st, 2nd, ... failure instead of the exponential backoff "
        "(no jitter; the last one repeats). Empty: exponential backoff.",
    )


class RetryBudgetSettings(BaseModel):
    """The retry budget of one downstream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget_percent: float = Field(
        default=20.0, ge=0, le=100, description="Retries allowed as a percentage of requests in the window."
    )
    min_retry_concurrency: int = Field(
        default=3, ge=0, description="Concurrent retries always allowed, whatever the percentage says."
    )
    window: float = Field(
        default=10.0, ge=1.0, description="Seconds of the sliding window (rounded up to whole seconds)."
    )


class BreakerSettings(BaseModel):
    """The breaker policy of one downstream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_type: Literal["count", "time"] = Field(
        default="count",
        description="Sliding window kind: the last `window_size` calls, or the calls of the last "
        "`window_size` seconds (1-second buckets).",
    )
    window_size: int = Field(
        default=50, ge=1, description="Calls (count window) or seconds (time window) in the sliding window."
    )
    minimum_calls: int = Field(
        default=20,
        ge=1,
        description="Calls the window must hold before rates are evaluated; fewer never open the breaker.",
    )
    consecutive_failures: int = Field(
        default=5,
        ge=0,
        description="Failed calls in a row that open the breaker whatever the window holds, so it opens at low "
        "traffic too (where `minimum_calls` takes minutes to fill); 0 turns this trigger off.",
    )
    failure_rate_threshold: float = Field(
        default=50.0, gt=0, le=100, description="Percent of failed calls at or above which the breaker opens."
    )
    slow_call_duration: float = Field(
        default=2.0, gt=0, description="Seconds above which a call counts as slow (successful or not)."
    )
    slow_call_rate_threshold: float = Field(
        default=100.0, gt=0, le=100, description="Percent of slow calls at or above which the breaker opens."
    )
    wait_in_open: float = Field(
        default=10.0, gt=0, description="Seconds the breaker stays open before letting probes through."
    )
    permitted_half_open_calls: int = Field(
        default=5, ge=1, description="Probe calls let through while half-open; all must complete to decide."
    )
    count_429_as_failure: bool = Field(
        default=True, description="Count HTTP 429 as a failure; when false, a 429 is ignored."
    )
    shared: bool = Field(default=False, description="Share OPEN verdicts with other replicas through Redis (opt-in).")
    shared_min_reporters: int = Field(
        default=2,
        ge=1,
        description="Distinct replicas that must report OPEN before a replica opens on their word.",
    )

    @model_validator(mode="after")
    def _minimum_fits_window(self) -> BreakerSettings:
        # resilience4j silently caps minimum_calls at a count window's size; a loud error is clearer.
        if self.window_type == "count" and self.minimum_calls > self.window_size:
            raise ValueError(
                f"minimum_calls ({self.minimum_calls}) exceeds window_size ({self.window_size}) "
                "of a count window: the breaker could never open"
            )
        return self


class DownstreamSettings(_Strict):
    """One downstream HTTP service with its resilience policy."""

    base_url: str
    timeout: PositiveFloat = Field(default=5.0, description="Seconds for one HTTP attempt (connect+read).")
    max_concurrency: PositiveInt = Field(default=64, description="Bulkhead: concurrent calls at most.")
    http_client: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp", description="HTTP library; aiohttp stays cheap under concurrency, httpx does not."
    )
    prefetch: PositiveInt | None = Field(
        default=None, description="AMQP prefetch for this downstream's queue; default: the global prefetch."
    )
    routes: dict[str, RouteSettings] = Field(default_factory=dict)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    retry_budget: RetryBudgetSettings = Field(default_factory=RetryBudgetSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("routes")
    @classmethod
    def _route_names(cls, value: dict[str, RouteSettings]) -> dict[str, RouteSettings]:
        for name in value:
            if not NAME_RE.match(name):
                raise ValueError(f"route name {name!r} must match {NAME_RE.pattern}")
        return value


class AmqpSettings(_Strict):
    prefix: str = Field(default="s2s", description="Prefix of every exchange and queue name.")
    prefetch: PositiveInt = Field(default=100, description="Messages in flight per downstream consumer.")
    delivery_limit: PositiveInt = Field(
        default=100,
        description="Quorum queue x-delivery-limit: returns before the broker dead-letters. Every consumer crash "
        "returns all prefetched messages, started or not, so this is the number of consecutive crash-restarts a "
        "message survives; the handler itself never requeues for a known failure.",
    )
    max_body_bytes: PositiveInt = Field(default=1_048_576, description="Larger commands are dead-lettered.")
    delay_ladder: tuple[PositiveInt, ...] = Field(
        default=(1, 2, 5, 10, 30, 60, 120, 300),
        description="Seconds of the delay queues used for redelivery later (the next rung up is used).",
    )
    require_idempotency_key: bool = Field(
        default=True,
        description="Dead-letter commands without message_id or idempotency-key header.",
    )
    max_redeliveries: PositiveInt = Field(
        default=50, description="Delayed redeliveries of one message before it is dead-lettered."
    )
    graceful_timeout: PositiveFloat = Field(default=20.0, description="Seconds in-flight handlers get on stop.")
    reconnect_interval: PositiveFloat = Field(
        default=2.0,
        description="Seconds between reconnect attempts after a broker connection is lost; with several nodes "
        "(`rabbitmq_urls`) each attempt goes to the next node.",
    )
    shuffle_nodes: bool = Field(
        default=True,
        description="With several nodes: each connection starts at a random node of `rabbitmq_urls` (replicas "
        "spread over the cluster); false: at the first listed.",
    )
    quorum_initial_group_size: PositiveInt | None = Field(
        default=None,
        description="x-quorum-initial-group-size of the command, delay, dead-letter and unrouted queues: replicas "
        "of each. Unset: the broker's default (every node in the cluster when the queue is declared). The broker "
        "refuses a value that differs from an existing queue's (PRECONDITION_FAILED): use rabbitmq-queues grow "
        "or shrink for those.",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$", value):
            raise ValueError("must be 1-41 characters of letters, digits, '.', '_' or '-'")
        return value

    @field_validator("delay_ladder")
    @classmethod
    def _ladder(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or list(value) != sorted(set(value)):
            raise ValueError("must be a non-empty, strictly increasing list of seconds")
        return value


class IdempotencySettings(_Strict):
    key_prefix: str = Field(default="s2s:idem:", description="Redis key prefix of idempotency records.")
    lease_seconds: PositiveFloat = Field(
        default=60.0, description="In-flight lease; another delivery may take over after it expires."
    )
    done_ttl_seconds: PositiveInt = Field(
        default=86_400, description="How long a completed key is remembered in Redis (24 h)."
    )


class RedisSentinelSettings(_Strict):
    """Redis behind Sentinel: the daemon asks the sentinels for the current primary and follows failovers.
    The primary's credentials, database and TLS (``rediss://``) come from ``redis_url``, whose host and port
    are then not used. Redis Cluster is not supported."""

    addresses: Annotated[tuple[str, ...], NoDecode] = Field(
        min_length=1, description="host:port of every sentinel (in the environment: comma-separated)."
    )
    primary_name: str = Field(
        min_length=1, description="The name the sentinels monitor the primary under (`sentinel monitor <name> ...`)."
    )
    username: str | None = Field(default=None, description="Username for the sentinels themselves (ACL).")
    password: SecretStr | None = Field(
        default=None, description="Password of the sentinels themselves (their requirepass), if any."
    )
    min_other_sentinels: int = Field(
        default=0, ge=0, description="A sentinel's answer counts only if it sees at least this many peers."
    )

    @field_validator("addresses", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("addresses")
    @classmethod
    def _host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, address in enumerate(value):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"[{index}] {address!r} is not host:port")
            if address in value[:index]:
                raise ValueError(f"[{index}] {address!r} is listed twice")
        return value

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [(a.rpartition(":")[0].strip("[]"), int(a.rpartition(":")[2])) for a in self.addresses]


class OutboxSettings(_Strict):
    database: str = Field(default="s2s", description="MongoDB database of the outbox.")
    poll_interval: PositiveFloat = Field(default=1.0, description="Relay polling fallback, seconds.")
    batch_size: PositiveInt = Field(default=200, description="Documents claimed per relay round.")
    lease_seconds: PositiveFloat = Field(
        default=10.0,
        description="Relay claim lease: how long a document written by a process that then died waits before "
        "another relay publishes it (the fast path publishes within milliseconds).",
    )
    max_publish_attempts: PositiveInt = Field(default=10, description="Then the document goes to `dead`.")
    retention_seconds: PositiveInt = Field(default=7 * 86_400, description="Sent documents kept this long.")


class HttpSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535, description="Sidecar port; 0 picks a free one.")


class StaleCacheSettings(_Strict):
    """The last good copy of every read exposure's answers (``expose: {kind: read}``), kept in Redis."""

    key_prefix: str = Field(default="s2s:stale:", description="Redis key prefix of the stored copies.")
    ttl_seconds: PositiveInt = Field(default=3600, description="How long a copy may be served stale.")


class ApiSettings(_Strict):
    """The sidecar's HTTP API: command submission, read-through reads, status page."""

    max_wait_seconds: PositiveFloat = Field(
        default=30.0, description="Cap of `Prefer: wait=N` on POST endpoints; longer waits are shortened."
    )
    max_body_bytes: PositiveInt = Field(default=1_048_576, description="Larger command bodies are refused (413).")
    publish_timeout_seconds: PositiveFloat = Field(
        default=5.0, description="Seconds a command publish may wait for the broker's confirm (then 503)."
    )
    stale_cache: StaleCacheSettings = Field(default_factory=StaleCacheSettings)
    outbox_backlog_warn: PositiveInt = Field(
        default=1000, description="Pending + publishing outbox documents above which /health warns."
    )
    status_window_seconds: PositiveInt = Field(
        default=30, description="Window of the call and error rates on the status page."
    )
    console_sample_seconds: PositiveFloat = Field(
        default=5.0, description="The operator console's charts: one point every this many seconds."
    )
    console_history_seconds: PositiveInt = Field(
        default=900, description="The operator console's charts: how far back the in-memory history goes."
    )


class AdminSettings(_Strict):
    """Admin endpoints (force a breaker open/closed); mounted only when a token is set."""

    token: SecretStr | None = Field(default=None, description="Bearer token; unset: no admin endpoints.")

    @field_validator("token")
    @classmethod
    def _token_strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value


class DeliverySettings(_Strict):
    """How events are delivered to the ``subscriptions`` (one queue and consumer per endpoint)."""

    delay_ladder: tuple[PositiveInt, ...] = Field(
        default=(1, 5, 30, 300, 1800, 7200, 18_000, 36_000),
        description="Seconds of each endpoint's delay queues; a wait takes the next rung up, and a message "
        "that comes back before it is due is parked again (so any wait works, rounded up to a rung).",
    )
    prefetch: PositiveInt = Field(default=10, description="Deliveries in flight per endpoint consumer.")
    log_database: str | None = Field(
        default=None, description="MongoDB database of the delivery log and endpoint states; default outbox.database."
    )
    log_retention_seconds: PositiveInt = Field(default=7 * 86_400, description="Delivery log entries kept this long.")
    state_poll_seconds: PositiveFloat = Field(
        default=5.0, description="How often a replica re-reads endpoint states (disabled/enabled) from MongoDB."
    )

    @field_validator("delay_ladder")
    @classmethod
    def _ladder(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or list(value) != sorted(set(value)):
            raise ValueError("must be a non-empty, strictly increasing list of seconds")
        return value


# A webhook sender (used by s2s_daemon.http.webhooks).
class WebhookSourceSettings(BaseModel):
    """One webhook sender, ``webhooks.<service>`` in the config."""

    # Hides inputs (secrets) in str(ValidationError) when validated on its own; an enclosing model's config
    # decides for nested validation.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    scheme: WebhookScheme
    secrets: list[SecretStr] = Field(
        min_length=1,
        description="Any of them verifies (rotation). Standard Webhooks: whsec_<base64> or bare base64.",
    )
    tolerance_seconds: int = Field(
        default=300, ge=1, description="Largest allowed distance, past or future, of the signed timestamp."
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1, description="Larger bodies are refused with 413.")
    event_type_field: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "standard-webhooks only: the JSON body field holding the event type (default `type`). "
            "GitHub always uses the X-GitHub-Event header, Stripe always the body's `type`."
        ),
    )

    # Field validators rather than one model validator: the error's location then ends in `secrets`, which
    # settings.format_validation_error knows not to echo. Inputs are never part of our messages.
    @field_validator("secrets")
    @classmethod
    def _secrets_usable(cls, value: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        for index, secret in enumerate(value):
            text = secret.get_secret_value()
            if not text.strip():
                raise ValueError(f"secrets[{index}] is empty")
            if info.data.get("scheme") == "standard-webhooks":
                if text.startswith(STANDARD_WEBHOOKS_SIGNING_KEY_PREFIX):
                    raise ValueError(
                        f"secrets[{index}] is a signing key (whsk_); a receiver verifies with the sender's "
                        "public key (whpk_)"
                    )
                standard_webhooks_key(text, index)
        return value

    @field_validator("event_type_field")
    @classmethod
    def _event_type_field_applies(cls, value: str | None, info: ValidationInfo) -> str | None:
        scheme = info.data.get("scheme")
        if value is not None and scheme not in (None, "standard-webhooks"):
            raise ValueError(f"cannot be set for scheme {scheme!r}")
        return value


def amqp_url_problem(url: str) -> str:
    """Check an AMQP URL (scheme, host); returns its virtual host. The URL itself is never in the message."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError(f"must be an amqp:// or amqps:// URL, got scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError("has an invalid port") from None
    return parts.path[1:] if parts.path not in ("", "/") else "/"


def standard_webhooks_key(secret: str, index: int) -> bytes:
    """The key bytes of a Standard Webhooks secret; ValueError names the entry.

    ``whsec_<base64>`` or bare base64: the HMAC key (v1). ``whpk_<base64>``: a 32-byte ed25519 public key
    (v1a, verifying). ``whsk_<base64>``: a 32-byte ed25519 seed, or 64 bytes seed + public key (v1a, signing).
    """
    for prefix, sizes in _ED25519_PREFIXES.items():
        if secret.startswith(prefix):
            key = _base64_key(secret.removeprefix(prefix), index)
            if len(key) not in sizes:
                raise ValueError(
                    f"secrets[{index}]: a {prefix} key holds {' or '.join(map(str, sizes))} bytes, got {len(key)}"
                )
            return key
    return _base64_key(secret.removeprefix(STANDARD_WEBHOOKS_SECRET_PREFIX), index)


def _base64_key(raw: str, index: int) -> bytes:
    try:
        # Unpadded base64 is common in the wild; the reference libraries pad it too.
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise ValueError(f"secrets[{index}] is not base64 (after its whsec_/whsk_/whpk_ prefix, if any)") from None
    if not key:
        raise ValueError(f"secrets[{index}] is empty")
    return key


# Topic patterns on the events exchange: words of letters, digits, '_' and '-', or '*' / '#'.
_PATTERN_WORD_RE = re.compile(r"^(?:[A-Za-z0-9_-]+|\*|#)$")
# Headers a subscription may not set: the signature scheme's own and those the HTTP client owns.
_RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "host"}
)
# Svix's schedule: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (eight attempts in ~27.6 h).
SVIX_RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18_000, 36_000, 36_000)


def event_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a routing-key pattern on the events exchange (``service-a.*.succeeded``), or None."""
    if not pattern or len(pattern.encode()) > 255:
        return "must be 1-255 bytes"
    for word in pattern.split("."):
        if not _PATTERN_WORD_RE.match(word):
            return f"word {word!r}: use letters, digits, '_' and '-', or a whole '*' (one word) or '#' (any words)"
    return None


class SubscriptionSettings(BaseModel):
    """A partner endpoint that receives events as signed webhooks (``subscriptions.<name>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(description="The endpoint; every delivery is a POST of the event's JSON to it.")
    events: list[str] = Field(
        min_length=1,
        description="Routing-key patterns on the events exchange (AMQP topic syntax: `*` one word, `#` any), "
        "e.g. `service-a.*.succeeded`, `webhook.stripe.#`.",
    )
    secrets: list[SecretStr] = Field(
        min_length=1,
        description="Signing keys, all used at once (rotation): `whsec_<base64>` signs v1 (HMAC-SHA256), "
        "`whsk_<base64>` signs v1a (ed25519; `s2s-daemon subscriptions public-key` prints the receiver's whpk_).",
    )
    filter: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema (2020-12) the event (the CloudEvents JSON) must satisfy to be sent; others are "
        "skipped. Unset: every event matching `events`.",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers, e.g. an API key.")
    timeout: PositiveFloat = Field(default=15.0, description="Seconds for one HTTP attempt (connect+read).")
    retry_schedule: tuple[PositiveFloat, ...] = Field(
        default=SVIX_RETRY_SCHEDULE,
        min_length=1,
        description="Seconds to wait after the 1st, 2nd, ... failed attempt; its length + 1 is the number of "
        "attempts. A Retry-After longer than the step is honoured. Default: Svix's schedule (eight attempts).",
    )
    max_concurrency: PositiveInt = Field(default=10, description="Concurrent deliveries to this endpoint at most.")
    http_client: Literal["aiohttp", "httpx"] = Field(default="aiohttp", description="HTTP library.")
    retry_budget: RetryBudgetSettings = Field(default_factory=RetryBudgetSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("events")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            problem = event_pattern_problem(pattern)
            if problem is not None:
                raise ValueError(f"events[{index}] {pattern!r}: {problem}")
        return value

    @field_validator("secrets")
    @classmethod
    def _signing_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, secret in enumerate(value):
            text = secret.get_secret_value()
            if text.startswith(STANDARD_WEBHOOKS_PUBLIC_KEY_PREFIX):
                raise ValueError(f"secrets[{index}] is a public key (whpk_); a sender signs with whsk_ or whsec_")
            if not text.startswith((STANDARD_WEBHOOKS_SECRET_PREFIX, STANDARD_WEBHOOKS_SIGNING_KEY_PREFIX)):
                raise ValueError(f"secrets[{index}] must start with whsec_ (v1) or whsk_ (v1a)")
            standard_webhooks_key(text, index)
        return value

    @field_validator("filter")
    @classmethod
    def _filter_is_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _json_schema_or_none(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header in value.items():
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the daemon")
            if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", name) or any(ch in header for ch in "\r\n"):
                raise ValueError(f"header {name!r}: not a valid HTTP header name or value")
        return value

    def downstream(self) -> DownstreamSettings:
        """The endpoint as a downstream of the resilient client: same breaker, budget and retry layers."""
        schedule = self.retry_schedule
        return DownstreamSettings(
            base_url=self.url,
            timeout=self.timeout,
            max_concurrency=self.max_concurrency,
            http_client=self.http_client,
            retry=RetrySettings(
                max_attempts=len(schedule) + 1,
                schedule=schedule,
                initial_delay=schedule[0],
                max_delay=max(schedule),
                # attempts may each take the whole timeout on top of the waits
                max_elapsed=sum(schedule) + (len(schedule) + 1) * self.timeout + 60,
                in_process_max_wait=0,  # every wait is parked in a delay queue: a fresh timestamp per attempt
            ),
            retry_budget=self.retry_budget,
            breaker=self.breaker,
        )


class Settings(BaseSettings):
    """Everything the daemon needs, validated at start."""

    model_config = SettingsConfigDict(
        env_prefix="S2S_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    rabbitmq_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        validation_alias=AliasChoices("RABBITMQ_URL", "S2S_RABBITMQ_URL", "rabbitmq_url"),
    )
    rabbitmq_urls: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        validation_alias=AliasChoices("RABBITMQ_URLS", "S2S_RABBITMQ_URLS", "rabbitmq_urls"),
        description="Every node of a RabbitMQ cluster (a list; in the environment, comma-separated): the daemon "
        "connects to one and fails over to the next when it goes away. Replaces `rabbitmq_url`.",
    )
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        validation_alias=AliasChoices("REDIS_URL", "S2S_REDIS_URL", "redis_url"),
    )
    redis_sentinel: RedisSentinelSettings | None = Field(
        default=None,
        description="Reach Redis through Sentinel (S2S_REDIS_SENTINEL__ADDRESSES, S2S_REDIS_SENTINEL__PRIMARY_NAME); "
        "unset: redis_url directly.",
    )
    mongodb_uri: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MONGODB_URI", "S2S_MONGODB_URI", "mongodb_uri"),
        description="Unset: `s2s-daemon dev` starts the embedded Mongo-wire server.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=AliasChoices("LOG_LEVEL", "S2S_LOG_LEVEL", "log_level")
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    service_name: str = "s2s-daemon"
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    downstreams: dict[str, DownstreamSettings] = Field(default_factory=dict)
    webhooks: dict[str, WebhookSourceSettings] = Field(
        default_factory=dict, description="Webhook senders by service name: POST /api/webhooks/<service>."
    )
    subscriptions: dict[str, SubscriptionSettings] = Field(
        default_factory=dict,
        description="Partner endpoints that receive events as signed webhooks, by name (docs: Sending webhooks).",
    )
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("rabbitmq_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got scheme {scheme or '(none)'!r}")
        return value

    @field_validator("rabbitmq_url")
    @classmethod
    def _amqp_url(cls, value: SecretStr) -> SecretStr:
        amqp_url_problem(value.get_secret_value())
        return value

    @field_validator("rabbitmq_urls")
    @classmethod
    def _amqp_urls(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        urls = [url.get_secret_value() for url in value]
        vhosts = set()
        for index, url in enumerate(urls):
            try:
                vhosts.add(amqp_url_problem(url))
            except ValueError as exc:
                raise ValueError(f"[{index}]: {exc}") from None
            if url in urls[:index]:
                raise ValueError(f"[{index}] repeats [{urls.index(url)}]")
        if len(vhosts) > 1:
            raise ValueError(f"every node must name the same virtual host, got {sorted(vhosts)}")
        return value

    @model_validator(mode="after")
    def _one_broker_setting(self) -> Settings:
        if self.rabbitmq_urls and "rabbitmq_url" in self.model_fields_set:
            raise ValueError(
                "rabbitmq_url and rabbitmq_urls are both set (RABBITMQ_URL / RABBITMQ_URLS): list every node in "
                "rabbitmq_urls and unset rabbitmq_url"
            )
        return self

    @field_validator("downstreams")
    @classmethod
    def _downstream_names(cls, value: dict[str, DownstreamSettings]) -> dict[str, DownstreamSettings]:
        for name in value:
            if not NAME_RE.match(name):
                raise ValueError(f"downstream name {name!r} must match {NAME_RE.pattern}")
        return value

    @field_validator("webhooks")
    @classmethod
    def _webhook_names(cls, value: dict[str, WebhookSourceSettings]) -> dict[str, WebhookSourceSettings]:
        for name in value:
            if not NAME_RE.match(name):
                raise ValueError(f"webhook source name {name!r} must match {NAME_RE.pattern}")
        return value

    @field_validator("subscriptions")
    @classmethod
    def _subscription_names(cls, value: dict[str, SubscriptionSettings]) -> dict[str, SubscriptionSettings]:
        for name in value:
            if not NAME_RE.match(name):
                raise ValueError(f"subscription name {name!r} must match {NAME_RE.pattern}")
        return value

    @model_validator(mode="after")
    def _has_routes(self) -> Settings:
        for name, downstream in self.downstreams.items():
            if not downstream.routes:
                raise ValueError(f"downstream {name!r} declares no routes")
        return self

    @model_validator(mode="after")
    def _exposures_distinct(self) -> Settings:
        seen: list[tuple[str, str, str]] = []  # (method, path, key)
        for name, downstream in self.downstreams.items():
            for action, route in downstream.routes.items():
                if route.expose is None:
                    continue
                key = f"downstreams.{name}.routes.{action}.expose"
                method, path = route.expose.method, route.expose.path
                for other_method, other_path, other_key in seen:
                    if method == other_method and paths_overlap(path, other_path):
                        raise ValueError(f"{key} ({method} {path}) and {other_key} ({method} {other_path}) overlap")
                seen.append((method, path, key))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get()
        if path is not None:
            sources.append(_YamlFileSource(settings_cls, path))
        return tuple(sources)

    @property
    def rabbitmq_nodes(self) -> tuple[str, ...]:
        """The broker URLs to connect to: ``rabbitmq_urls``, or the one ``rabbitmq_url``."""
        urls = self.rabbitmq_urls or (self.rabbitmq_url,)
        return tuple(url.get_secret_value() for url in urls)

    def route(self, routing_key: str) -> tuple[str, str, RouteSettings] | None:
        """``service-a.create-resource`` -> (downstream, action, route), or None when not declared."""
        downstream, _, action = routing_key.partition(".")
        settings = self.downstreams.get(downstream)
        if settings is None:
            return None
        route = settings.routes.get(action)
        return None if route is None else (downstream, action, route)


class _YamlFileSource(PydanticBaseSettingsSource):
    """The config file. A missing or unparsable file fails loudly, naming the file."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
        self._data: dict[str, Any] = loaded

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


_SECRET_HINTS = ("url", "uri", "secret", "password", "token")


def format_validation_error(exc: ValidationError, source: str = "settings") -> str:
    """One line per problem, each naming the dotted key; inputs of secret-looking keys are not echoed."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"]
        shown = ""
        if err["type"] not in {"missing", "extra_forbidden"} and not any(h in key.lower() for h in _SECRET_HINTS):
            text = repr(err.get("input"))
            shown = f" (got {text[:80]})"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{source}: {key}: {message}{shown}")
    return "\n".join(lines)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings once; raises ConfigError with one line per bad key."""
    path = Path(config_file) if config_file is not None else None
    token = _config_file.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path) if path else "settings")) from None
    finally:
        _config_file.reset(token)
