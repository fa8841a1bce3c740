"""``s2s-daemon docs asyncapi [--output FILE]``: the contract documents, generated from the configuration."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import yaml

from s2s_daemon.settings import load_settings

__all__ = ["add_docs_parser", "cmd_docs", "render_asyncapi"]


def add_docs_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``docs asyncapi`` (``config_arg`` adds the shared --config option)."""
    docs = sub.add_parser("docs", help="write contract documents (AsyncAPI)")
    kinds = docs.add_subparsers(dest="docs_command", required=True)
    asyncapi = kinds.add_parser(
        "asyncapi", help="AsyncAPI 3.0 of the commands, replies, events and dead letters of this configuration"
    )
    asyncapi.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    asyncapi.add_argument(
        "--format", choices=("json", "yaml"), help="default: yaml for a .yaml/.yml output file, else json"
    )
    config_arg(asyncapi)


def cmd_docs(args: argparse.Namespace) -> int:
    from s2s_daemon.messaging.asyncapi import build_asyncapi
    from s2s_daemon.observability.version import package_version

    settings = load_settings(args.config)
    fmt = args.format or ("yaml" if args.output and args.output.suffix in {".yaml", ".yml"} else "json")
    text = render_asyncapi(build_asyncapi(settings, package_version()), fmt)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} (AsyncAPI, {fmt})", file=sys.stderr)
    return 0


def render_asyncapi(document: dict[str, object], fmt: str) -> str:
    if fmt == "yaml":
        return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120))
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
