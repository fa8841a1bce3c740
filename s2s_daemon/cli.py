"""Command line: ``s2s-daemon run | dev | check-config | send | demo | preflight | outbox | dlq | subscriptions``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from s2s_daemon.errors import ConfigError, DependencyUnavailable
from s2s_daemon.ops.dlq_cli import add_dlq_parser, cmd_dlq
from s2s_daemon.ops.docs_cli import add_docs_parser, cmd_docs
from s2s_daemon.ops.outbox import add_outbox_parser, cmd_outbox
from s2s_daemon.ops.subscriptions_cli import add_subscriptions_parser, cmd_subscriptions
from s2s_daemon.settings import Settings, load_settings

EXAMPLE_CONFIG = Path(str(files("s2s_daemon") / "config" / "example.yaml"))
DEMO_PORT_A, DEMO_PORT_B = 8081, 8082  # the example config's base_url of service-a and service-b
START_HINTS = {
    "RabbitMQ": "start it with: rabbitmq-server -detached",
    "Redis": 'start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
}


def _config_arg(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=os.environ.get("S2S_CONFIG", default),
        help="YAML config file (env S2S_CONFIG)" + (f"; default {default}" if default else ""),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s-daemon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (consumers, relay, sidecar) in the foreground")
    _config_arg(run)

    dev = sub.add_parser("dev", help="run with embedded Mongo-wire server and demo downstreams (make run)")
    _config_arg(dev, str(EXAMPLE_CONFIG))
    dev.add_argument("--data-dir", default=".data", help="where the embedded Mongo-wire server keeps its files")

    check = sub.add_parser("check-config", help="validate a config file; print errors naming the bad key")
    check.add_argument("file")

    send = sub.add_parser("send", help="publish a command with a fresh idempotency key")
    send.add_argument("routing_key", help="<downstream>.<action>, e.g. service-a.create-resource")
    send.add_argument("json", help="the command body as JSON")
    send.add_argument("--wait", action="store_true", help="wait for the reply and print it")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply")
    send.add_argument("--key", help="idempotency key (default: a new uuid)")
    _config_arg(send)

    demo = sub.add_parser("demo", help="run the demo downstreams service-a and service-b")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port-a", type=int, default=DEMO_PORT_A)
    demo.add_argument("--port-b", type=int, default=DEMO_PORT_B)

    pre = sub.add_parser("preflight", help="check that RabbitMQ and Redis are reachable")
    _config_arg(pre)

    add_outbox_parser(sub, _config_arg)
    add_dlq_parser(sub, _config_arg)
    add_docs_parser(sub, _config_arg)
    add_subscriptions_parser(sub, _config_arg)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = {
            "run": cmd_run,
            "dev": cmd_dev,
            "check-config": cmd_check_config,
            "send": cmd_send,
            "demo": cmd_demo,
            "preflight": cmd_preflight,
            "dlq": cmd_dlq,
            "docs": cmd_docs,
            "outbox": cmd_outbox,
            "subscriptions": cmd_subscriptions,
        }[args.command]
        return handler(args)
    except ConfigError as exc:
        print(f"s2s-daemon: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    except DependencyUnavailable as exc:
        print(f"s2s-daemon: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


# commands ------------------------------------------------------------------------------------------
def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    routes = sum(len(ds.routes) for ds in settings.downstreams.values())
    subscriptions = f", {len(settings.subscriptions)} subscriptions" if settings.subscriptions else ""
    print(f"{args.file}: ok ({len(settings.downstreams)} downstreams, {routes} routes{subscriptions})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if not settings.downstreams:
        raise ConfigError("downstreams: no downstream configured (give --config FILE or set S2S_CONFIG)")
    return _run_daemon(settings)


def _run_daemon(settings: Settings) -> int:
    from s2s_daemon.app import Daemon
    from s2s_daemon.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    _use_uvloop()
    asyncio.run(Daemon(settings).run_until_signalled())
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    problems = preflight(settings)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


def preflight(settings: Settings) -> list[str]:
    """One clear line per unreachable dependency, with how to start it."""
    problems = []
    for name, urls, default_port in (
        ("RabbitMQ", settings.rabbitmq_nodes, 5672),
        ("Redis", _redis_addresses(settings), 6379),
    ):
        # a cluster needs one node that answers (the daemon fails over to the others)
        failures = []
        for url in urls:
            parts = urlsplit(url)
            host, port = parts.hostname or "127.0.0.1", parts.port or default_port
            try:
                socket.create_connection((host, port), timeout=2.0).close()
                break
            except OSError as exc:
                failures.append(f"{host}:{port} ({exc.strerror})")
        else:
            problems.append(f"s2s-daemon: {name} is not reachable at {', '.join(failures)}; {START_HINTS[name]}")
    return problems


def _redis_addresses(settings: Settings) -> tuple[str, ...]:
    """What preflight checks for Redis: the sentinels when Redis is reached through Sentinel, else the URL."""
    if settings.redis_sentinel is not None:
        return tuple(f"redis://{address}" for address in settings.redis_sentinel.addresses)
    return (settings.redis_url.get_secret_value(),)


def _missing_extra(command: str, extra: str, exc: ModuleNotFoundError) -> int:
    print(
        f"s2s-daemon {command}: needs the '{extra}' extra ({exc.name} is missing): pip install 's2s-daemon[{extra}]'",
        file=sys.stderr,
    )
    return 2


def cmd_dev(args: argparse.Namespace) -> int:
    try:
        from s2s_daemon.local import EmbeddedMongo, ManagedProcess
    except ModuleNotFoundError as exc:
        return _missing_extra("dev", "local", exc)

    overrides: dict[str, Any] = {}
    settings = load_settings(args.config)
    if problems := preflight(settings):
        for line in problems:
            print(line, file=sys.stderr)
        return 1
    with contextlib.ExitStack() as started:  # stopped in reverse order, whatever happens
        try:
            if settings.mongodb_uri is None:
                mongo = EmbeddedMongo(Path(args.data_dir) / "mongo").start()
                started.callback(mongo.stop)
                overrides["mongodb_uri"] = mongo.uri
                print(f"s2s-daemon dev: embedded Mongo-wire server (nx-27017) at {mongo.uri}", file=sys.stderr)
            # listening before the daemon consumes: a command already queued must not meet a refused port
            demo_log = Path(args.data_dir) / "demo.log"
            demo = ManagedProcess(
                "demo", [sys.executable, "-m", "s2s_daemon", "demo"], demo_log, ports=[DEMO_PORT_A, DEMO_PORT_B]
            ).start()
            started.callback(demo.stop, 5)
        except (RuntimeError, TimeoutError) as exc:  # a port taken, a child that died or never listened
            print(f"s2s-daemon dev: {exc}", file=sys.stderr)
            return 1
        print(
            f"s2s-daemon dev: demo downstreams service-a :{DEMO_PORT_A}, service-b :{DEMO_PORT_B} (log {demo_log})",
            file=sys.stderr,
        )
        return _run_daemon(load_settings(args.config, **overrides))


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from s2s_daemon.local import serve_demo
    except ModuleNotFoundError as exc:
        return _missing_extra("demo", "local", exc)

    _use_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_demo(args.host, args.port_a, args.port_b))
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    try:
        body = orjson.loads(args.json)
    except orjson.JSONDecodeError as exc:
        print(f"s2s-daemon send: the body is not JSON: {exc}", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    return asyncio.run(_send(settings, args.routing_key, body, args.wait, args.timeout, args.key))


async def _send(settings: Settings, routing_key: str, body: Any, wait: bool, timeout: float, key: str | None) -> int:
    import aio_pika

    from s2s_daemon.messaging import NodeList, Topology, connect_first

    key = key or uuid.uuid4().hex
    correlation_id = uuid.uuid4().hex
    try:
        connection = await connect_first(NodeList(settings.rabbitmq_nodes), timeout=5)
    except Exception as exc:
        raise DependencyUnavailable("rabbitmq", f"{type(exc).__name__}: {exc}") from exc
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        reply_queue = await channel.declare_queue(exclusive=True, auto_delete=True) if wait else None
        exchange = await channel.get_exchange(
            Topology.of_prefix(settings.amqp.prefix).commands_exchange_name, ensure=True
        )
        started = time.perf_counter()
        await exchange.publish(
            aio_pika.Message(
                orjson.dumps(body),
                message_id=key,
                correlation_id=correlation_id,
                reply_to=reply_queue.name if reply_queue else None,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )
        print(f"sent {routing_key} idempotency-key={key} correlation-id={correlation_id}", file=sys.stderr)
        if reply_queue is None:
            return 0
        try:
            async with asyncio.timeout(timeout), reply_queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    if message.correlation_id != correlation_id:
                        continue
                    reply = orjson.loads(message.body)
                    print(orjson.dumps(reply, option=orjson.OPT_INDENT_2).decode())
                    print(f"reply after {(time.perf_counter() - started) * 1000:.1f} ms", file=sys.stderr)
                    return 0 if reply.get("status") == "succeeded" else 1
        except TimeoutError:
            print(f"s2s-daemon send: no reply within {timeout:g}s (is the daemon running?)", file=sys.stderr)
            return 4
    return 4  # pragma: no cover - the iterator only ends on timeout


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
