"""``s2s-daemon subscriptions list | enable | disable | public-key``: the webhook endpoints of the config.

``enable`` and ``disable`` write the endpoint's state in MongoDB (the collection the daemon persists a ``410 Gone``
in); every running replica reads it within ``delivery.state_poll_seconds`` and resumes or pauses that endpoint's
consumer. ``public-key`` prints the ``whpk_`` keys a receiver verifies v1a signatures with.

Exit codes: 0 done, 1 unknown subscription or no v1a key, 2 bad configuration, 3 MongoDB unreachable.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.observability.logging import redact_url
from s2s_daemon.settings import DEFAULT_MONGODB_URI, STANDARD_WEBHOOKS_SIGNING_KEY_PREFIX, Settings, load_settings

__all__ = ["add_subscriptions_parser", "cmd_subscriptions"]


def add_subscriptions_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = sub.add_parser("subscriptions", help="list webhook endpoints, enable or disable one, print public keys")
    actions = parser.add_subparsers(dest="subscriptions_command", required=True)
    ls = actions.add_parser("list", help="every subscription: url, patterns, disabled or not")
    ls.add_argument("--json", action="store_true", help="a JSON array instead of lines")
    config_arg(ls)
    for name, text in (
        ("enable", "deliver to the endpoint again (after a 410 Gone); its waiting events follow"),
        ("disable", "stop delivering to the endpoint; its events wait in its queue"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("name", help="the subscription's name in the config")
        config_arg(action)
    key = actions.add_parser("public-key", help="the whpk_ keys receivers verify v1a (ed25519) signatures with")
    key.add_argument("name", help="the subscription's name in the config")
    config_arg(key)


def cmd_subscriptions(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    command = args.subscriptions_command
    if command != "list" and args.name not in settings.subscriptions:
        known = ", ".join(sorted(settings.subscriptions)) or "none configured"
        print(f"s2s-daemon subscriptions: unknown subscription {args.name!r} (known: {known})")
        return 1
    if command == "public-key":
        return _public_keys(settings, args.name)
    with _endpoints(settings) as collection:
        try:
            if command == "list":
                return _list(settings, {doc["_id"]: doc for doc in collection.find({})}, args.json)
            disabled = command == "disable"
            reason = f"{command}d by hand with s2s-daemon subscriptions"
            collection.update_one(
                {"_id": args.name}, {"$set": {"disabled": disabled, "reason": reason, "at": now_ms()}}, upsert=True
            )
        except PyMongoError as exc:
            raise DependencyUnavailable("mongodb", f"{type(exc).__name__}: {exc}") from exc
    print(f"{args.name}: {command}d (running daemons follow within {settings.delivery.state_poll_seconds:g}s)")
    return 0


def _public_keys(settings: Settings, name: str) -> int:
    from s2s_daemon.delivery.signing import public_key_text  # cryptography: loaded only for this command

    keys = [
        public_key_text(s.get_secret_value())
        for s in settings.subscriptions[name].secrets
        if s.get_secret_value().startswith(STANDARD_WEBHOOKS_SIGNING_KEY_PREFIX)
    ]
    if not keys:
        print(f"{name}: no whsk_ key, so no v1a signatures (its whsec_ keys are shared secrets, not printed)")
        return 1
    for key in keys:
        print(key)
    return 0


def _list(settings: Settings, states: dict[str, dict[str, Any]], as_json: bool) -> int:
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "url": sub.url,
            "events": sub.events,
            "disabled": bool(states.get(name, {}).get("disabled")),
            "reason": states.get(name, {}).get("reason"),
        }
        for name, sub in settings.subscriptions.items()
    ]
    if as_json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    for row in rows:
        state = f"DISABLED ({row['reason']})" if row["disabled"] else "enabled"
        print(f"{row['name']}  {row['url']}  {' '.join(row['events'])}  {state}")
    return 0


@contextlib.contextmanager
def _endpoints(settings: Settings) -> Iterator[Collection[dict[str, Any]]]:
    """The endpoint states collection of the daemon's database; DependencyUnavailable when MongoDB does not answer."""
    from s2s_daemon.delivery.log import ENDPOINTS

    uri = settings.mongodb_uri.get_secret_value() if settings.mongodb_uri else DEFAULT_MONGODB_URI
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=3000)
    try:
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            raise DependencyUnavailable("mongodb", f"{redact_url(uri)}: {type(exc).__name__}: {exc}") from exc
        yield client[settings.delivery.log_database or settings.outbox.database][ENDPOINTS]
    finally:
        client.close()
