"""structlog configuration: JSON lines in production, a console renderer in a terminal.

Every line carries the context bound for the message being handled (correlation_id, message_id,
downstream, attempt) through ``structlog.contextvars``, and ``trace_id``/``span_id`` of the span being
recorded (tracing on), else the ``trace_id`` of the caller's ``traceparent``. Standard-library loggers
(FastStream, aio-pika, uvicorn) are routed through the same processors, so they come out as JSON too. Secrets
are redacted.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog

_SECRET_KEYS = re.compile(r"(secret|password|passwd|token|authorization|api[_-]?key|signature)", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@", re.I)
REDACTED = "***"


def redact_url(url: str) -> str:
    """``amqp://guest:guest@host`` -> ``amqp://guest:***@host``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", url)


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Processor: mask values under secret-looking keys and credentials inside URLs."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str) and "://" in value:
            event_dict[key] = redact_url(value)
    return event_dict


# Where the current span's ids come from: set by tracing when it is on (``observability._otel``). Module state
# like the logging configuration itself, which is process-wide too.
_span_ids: Callable[[], tuple[str, str] | None] | None = None
_TRACEPARENT_LENGTH = 55


def use_span_ids(source: Callable[[], tuple[str, str] | None] | None) -> None:
    """Log lines take ``trace_id``/``span_id`` from ``source`` (the current span), None: from no span."""
    global _span_ids
    _span_ids = source


def add_trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Processor: ``trace_id`` and ``span_id`` of the current span; without one, the ``trace_id`` of the
    ``traceparent`` bound for the message or request being handled."""
    if "trace_id" in event_dict:
        return event_dict
    if _span_ids is not None and (ids := _span_ids()) is not None:
        event_dict["trace_id"], event_dict["span_id"] = ids
        return event_dict
    traceparent = event_dict.get("traceparent")
    if isinstance(traceparent, str) and len(traceparent) == _TRACEPARENT_LENGTH:
        event_dict["trace_id"] = traceparent[3:35]
    return event_dict


_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _LevelFirstLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib logger that drops a call below its logger's level before any processor runs.

    structlog's stdlib ``BoundLogger`` runs every processor (context merge, timestamp, redaction, the event
    dict for the formatter) and only then lets the standard library drop the record: at ``LOG_LEVEL=WARNING``
    the per-request INFO lines of the webhook path cost ~4% of the daemon's CPU for nothing. The level is read
    as ``structlog.stdlib.filter_by_level`` reads it (``getEffectiveLevel``, not ``isEnabledFor``)."""

    def _proxy_to_logger(self, method_name: str, event: str | None = None, *event_args: str, **event_kw: Any) -> Any:
        logger: logging.Logger = self._logger
        if logger.disabled or _METHOD_LEVELS.get(method_name, logging.CRITICAL) < logger.getEffectiveLevel():
            return None
        return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so reconfiguring replaces it instead of stacking a second one."""


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(level: str = "INFO", fmt: str = "auto", *, stream: Any = None) -> None:
    """Configure structlog and the standard library once, at start. Idempotent."""
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=_LevelFirstLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if use_json else []),
            renderer,
        ],
    )
    handler = _Handler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _Handler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries: their per-message INFO lines cost CPU and say nothing we do not say ourselves.
    for noisy in ("aiormq", "aio_pika", "uvicorn.access", "pymongo", "httpx", "httpcore", "faststream"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
