"""``s2s-daemon dlq list | show | replay | purge``: the command line over :mod:`s2s_daemon.ops.dlq`.

Exit codes: 0 done, 1 not found / a publish was not confirmed / the DLQ cannot be used, 2 bad arguments,
3 RabbitMQ unreachable, 130 interrupted (Ctrl-C or SIGTERM; the batch in hand was finished first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from s2s_daemon.errors import DeadLetterQueueError
from s2s_daemon.ops._argtypes import positive_int
from s2s_daemon.settings import Settings, load_settings

__all__ = ["add_dlq_parser", "cmd_dlq", "format_age", "format_table"]

EXIT_INTERRUPTED = 130


def add_dlq_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``dlq list|show|replay|purge`` (``config_arg`` adds the shared --config option)."""
    dlq = sub.add_parser("dlq", help="list, show, replay and purge dead letters")
    actions = dlq.add_subparsers(dest="dlq_command", required=True)

    def filters(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--filter",
            "-f",
            action="append",
            default=[],
            metavar="KEY=PATTERN",
            help="id, reason, routing-key or correlation-id; shell patterns (service-a.*); repeatable: "
            "different keys must all match, repeated keys any",
        )

    ls = actions.add_parser("list", help="table of dead letters: id, reason, routing key, attempts, age, correlation")
    filters(ls)
    ls.add_argument("--limit", type=positive_int, default=100, help="show at most N (default 100)")
    ls.add_argument("--all", action="store_true", help="show every dead letter (ignores --limit)")
    ls.add_argument("--json", action="store_true", help="a JSON array instead of the table")
    config_arg(ls)

    show = actions.add_parser("show", help="headers, properties and body of one dead letter")
    show.add_argument("id", help="the id from `dlq list`")
    show.add_argument("--json", action="store_true", help="one JSON object per matching message")
    config_arg(show)

    replay = actions.add_parser(
        "replay", help="re-publish dead letters to the commands exchange (confirmed, then removed from the DLQ)"
    )
    filters(replay)
    replay.add_argument("--limit", type=positive_int, default=None, help="replay at most N")
    edit = replay.add_mutually_exclusive_group()
    edit.add_argument("--set-body", metavar="JSON", help="replace the body (needs --filter id=ID); new idempotency key")
    edit.add_argument("--body-file", type=Path, metavar="FILE", help="like --set-body, with the JSON read from FILE")
    replay.add_argument("--batch", type=positive_int, default=50, help="publishes in flight per confirm round")
    replay.add_argument("--json", action="store_true", help="print a JSON report")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar (also off when not a terminal)")
    config_arg(replay)

    purge = actions.add_parser("purge", help="delete dead letters older than a duration")
    purge.add_argument("--older-than", required=True, type=_duration, metavar="DURATION", help="e.g. 7d, 12h, 1h30m")
    filters(purge)
    purge.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    purge.add_argument("--json", action="store_true", help="print a JSON report")
    purge.add_argument("--no-progress", action="store_true", help="no progress bar (also off when not a terminal)")
    config_arg(purge)


def cmd_dlq(args: argparse.Namespace) -> int:
    from s2s_daemon.ops.dlq import Selection

    settings = load_settings(args.config)
    try:
        selection = Selection.parse(getattr(args, "filter", []), getattr(args, "older_than", None))
        body = _edited_body(args) if args.dlq_command == "replay" else None
    except ValueError as exc:
        print(f"s2s-daemon dlq: {exc}", file=sys.stderr)
        return 2
    run: dict[str, Callable[[], Any]] = {
        "list": lambda: _list(settings, args, selection),
        "show": lambda: _show(settings, args),
        "replay": lambda: _replay(settings, args, selection, body),
        "purge": lambda: _purge(settings, args, selection),
    }
    try:
        return int(asyncio.run(run[args.dlq_command]()))
    except DeadLetterQueueError as exc:
        print(f"s2s-daemon dlq: {exc}", file=sys.stderr)
        return 1


# commands -----------------------------------------------------------------------------------------
async def _list(settings: Settings, args: argparse.Namespace, selection: Any) -> int:
    from s2s_daemon.ops.dlq import list_dead_letters

    async with _dlq(settings) as dlq:
        listing = await list_dead_letters(dlq, selection, None if args.all else args.limit)
    rows, depth, name = listing.rows, listing.depth, listing.queue
    if args.json:
        print(orjson.dumps(rows).decode())
        return 0
    print(
        format_table(
            ["ID", "REASON", "ROUTING KEY", "ATTEMPTS", "AGE", "CORRELATION ID"],
            [
                [
                    r["id"],
                    r["reason"],
                    r["routing_key"],
                    str(r["attempts"]),
                    format_age(r["age_seconds"]),
                    r["correlation_id"] or "-",
                ]
                for r in rows
            ],
        )
    )
    shown = f"{len(rows)} shown" + (f" (filtered by {' '.join(args.filter)})" if args.filter else "")
    print(f"\n{depth} dead letter{'' if depth == 1 else 's'} in {name}; {shown}", file=sys.stderr)
    return 0


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    from s2s_daemon.ops.dlq import show_dead_letter

    async with _dlq(settings) as dlq:
        found = await show_dead_letter(dlq, args.id)
    if not found:
        print(f"s2s-daemon dlq: no dead letter with id {args.id!r}", file=sys.stderr)
        return 1
    for n, detail in enumerate(found):
        if args.json:
            print(orjson.dumps(detail).decode())
            continue
        if n:
            print()
        print(_as_text(detail))
    return 0


async def _replay(settings: Settings, args: argparse.Namespace, selection: Any, body: bytes | None) -> int:
    async with _dlq(settings) as dlq, _stop_on_signals() as stop:
        with _progress("replay", args.no_progress) as progress:
            report = await dlq.replay(
                selection, limit=args.limit, body=body, batch=args.batch, stop=stop, progress=progress
            )
    if args.json:
        print(orjson.dumps(report.as_json()).decode())
    else:
        for r in report.replayed:
            if r.new_key:
                print(f"replayed {r.id} -> {r.routing_key} as an edited copy: NEW idempotency key {r.idempotency_key}")
        print(
            f"replayed {len(report.replayed)} of {report.scanned} scanned; {report.skipped} left in the DLQ "
            f"({report.depth} were in it)"
        )
    if report.error:
        print(f"s2s-daemon dlq replay: stopped: {report.error} (not acked: still in the DLQ)", file=sys.stderr)
        return 1
    if report.interrupted:
        print(
            "s2s-daemon dlq replay: interrupted; everything not replayed is still in the DLQ, the messages "
            f"walked past ({report.skipped}) now at its tail",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


async def _purge(settings: Settings, args: argparse.Namespace, selection: Any) -> int:
    async with _dlq(settings) as dlq, _stop_on_signals() as stop:
        with _progress("purge", args.no_progress) as progress:
            report = await dlq.purge(selection, dry_run=args.dry_run, stop=stop, progress=progress)
    if args.json:
        print(orjson.dumps(report.as_json()).decode())
    else:
        verb = "would purge" if report.dry_run else "purged"
        print(f"{verb} {report.purged} of {report.scanned} scanned; {report.kept} kept")
    if report.interrupted:
        print(
            f"s2s-daemon dlq purge: interrupted; {report.kept} kept messages walked past are now at the DLQ's tail",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


# helpers ------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _dlq(settings: Settings) -> AsyncIterator[Any]:
    from s2s_daemon.ops.dlq import DeadLetterQueue

    async with DeadLetterQueue.from_settings(settings) as dlq:
        yield dlq


@contextlib.asynccontextmanager
async def _stop_on_signals() -> AsyncIterator[asyncio.Event]:
    """Ctrl-C and SIGTERM ask the pass to stop after the batch in hand instead of cancelling it mid-flight."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _progress(what: str, off: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A tqdm bar on stderr when stderr is a terminal (tqdm's ``disable=None``)."""
    if off:
        yield None
        return
    from tqdm import tqdm

    bar: tqdm[Any] | None = None

    def update(scanned: int, depth: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=depth, desc=what, unit="msg", file=sys.stderr, disable=None, leave=False)
        bar.update(scanned - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _edited_body(args: argparse.Namespace) -> bytes | None:
    from s2s_daemon.ops.dlq import edited_body

    raw: bytes
    if args.set_body is not None:
        raw = str(args.set_body).encode()
    elif args.body_file is not None:
        try:
            raw = args.body_file.read_bytes()
        except OSError as exc:
            raise ValueError(f"--body-file {args.body_file}: {exc.strerror}") from None
    else:
        return None
    return edited_body(raw)


def format_age(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h12m``, ``2d4h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86_400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86_400}d{s % 86_400 // 3600:02d}h"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    ]
    return "\n".join(lines)


def _as_text(detail: dict[str, Any]) -> str:
    lines = [f"id:             {detail['id']}"]
    for key in ("reason", "detail", "routing_key", "attempts", "correlation_id", "idempotency_key", "replay_count"):
        lines.append(f"{key + ':':<16}{detail[key] if detail[key] is not None else '-'}")
    lines.append(f"{'age:':<16}{format_age(detail['age_seconds'])}")
    lines.append("properties:")
    lines += [f"  {k}: {v}" for k, v in detail["properties"].items()]
    lines.append("headers:")
    lines += [f"  {k}: {orjson.dumps(v).decode()}" for k, v in sorted(detail["headers"].items())]
    lines.append(f"body ({detail['body_encoding']}):")
    body = detail["body"]
    text = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() if detail["body_encoding"] == "json" else body
    lines += [f"  {line}" for line in str(text).splitlines()]
    return "\n".join(lines)


def _duration(text: str) -> float:
    from s2s_daemon.ops.dlq import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
