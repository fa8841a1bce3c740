"""The reference the daemon is measured against, run as its own process.

A bare FastStream handler: consume a command from a quorum queue bound to its own exchange, make the same
HTTP call to the demo service-a with httpx (same body, same Idempotency-Key header, same pool size as the
daemon's default ``max_concurrency``), and return the reply through FastStream's RPC reply to ``reply_to``
(persistent, on a confirming channel, like the daemon's replies). No dedupe, no outbox, no event publish,
no schema validation. FastStream's per-message log lines are filtered out (WARNING), as in the daemon run.

``python -m tests.harness.bench.reference --exchange X --queue Q --service-url URL --ready-file F``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import orjson
from faststream.rabbit import Channel, ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.response import RabbitResponse


def reference_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The options every reference process takes (the harness starts both the same way)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--service-url", required=True, help="base URL of the demo service-a")
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--ready-file", type=Path, required=True, help="written once the consumer runs")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return reference_parser("python -m tests.harness.bench.reference", __doc__)


def service_client(args: argparse.Namespace) -> httpx.AsyncClient:
    """The HTTP client both references call service-a with: httpx, the daemon's default pool size."""
    return httpx.AsyncClient(
        base_url=args.service_url,
        limits=httpx.Limits(max_connections=args.max_connections, max_keepalive_connections=args.max_connections),
        timeout=5.0,
    )


def stop_on_signal() -> asyncio.Event:
    """Set on SIGTERM or SIGINT: the harness stops a reference with SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run(serve: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace) -> int:
    """Run a reference's ``serve`` on uvloop when it is installed."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - optional speed-up
        pass
    asyncio.run(serve(args))
    return 0


async def serve(args: argparse.Namespace) -> None:
    logger = logging.getLogger("bench.reference")
    logger.setLevel(logging.WARNING)
    client = service_client(args)
    broker = RabbitBroker(args.url, default_channel=Channel(publisher_confirms=True), logger=logger)
    exchange = RabbitExchange(args.exchange, type=ExchangeType.TOPIC, durable=True)
    queue = RabbitQueue(args.queue, queue_type=QueueType.QUORUM, durable=True, routing_key="service-a.#")

    @broker.subscriber(queue, exchange, channel=Channel(prefetch_count=args.prefetch))
    async def handle(body: dict[str, Any], msg: RabbitMessage) -> RabbitResponse:
        response = await client.post(
            "/resource",
            content=orjson.dumps(body),
            headers={"idempotency-key": msg.message_id, "content-type": "application/json"},
        )
        reply = {
            "status": "succeeded" if response.is_success else "failed",
            "status_code": response.status_code,
            "body": response.json(),
        }
        return RabbitResponse(orjson.dumps(reply), persist=True, mandatory=False, content_type="application/json")

    stop = stop_on_signal()
    await broker.start()
    args.ready_file.write_text("ready\n")
    try:
        await stop.wait()
    finally:
        await broker.stop()
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    return run(serve, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
