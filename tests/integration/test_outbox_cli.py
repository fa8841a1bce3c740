"""``s2s-daemon outbox status | retry-dead`` against nx-27017."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pymongo import MongoClient
from pymongo.collection import Collection

from s2s_daemon.app import Daemon
from s2s_daemon.cli import main
from s2s_daemon.local import EmbeddedMongo, free_port
from tests.outboxdocs import EVENT_ROUTING_KEY, outbox_document
from tests.support import bind_probe_queue, drain, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def outbox(mongo_server: EmbeddedMongo, run_id: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Collection[Any]]:
    """This test's outbox collection; the CLI finds it through MONGODB_URI and S2S_OUTBOX__DATABASE."""
    monkeypatch.delenv("S2S_CONFIG", raising=False)
    monkeypatch.setenv("MONGODB_URI", mongo_server.uri)
    monkeypatch.setenv("S2S_OUTBOX__DATABASE", run_id)
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.uri)
    yield client[run_id]["outbox"]
    client.drop_database(run_id)
    client.close()


def _json_status(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["outbox", "status", "--json"]) == 0
    return orjson.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_status_counts_by_status_with_oldest_pending_age(
    outbox: Collection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """--json: counts for every status, total, dead count, and the age and key of the oldest unsent document."""
    now = int(time.time() * 1000)
    docs = [outbox_document(f"p{i}", created_at=now - 1000 * i) for i in range(3)]
    docs.append(outbox_document("oldest", status="publishing", created_at=now - 10_000))
    docs += [outbox_document(f"s{i}", status="sent", created_at=now - 60_000) for i in range(5)]
    docs += [outbox_document(f"d{i}", status="dead", created_at=now - 90_000) for i in range(2)]
    outbox.insert_many(docs)

    report = _json_status(capsys)

    assert report["counts"] == {"pending": 3, "publishing": 1, "sent": 5, "dead": 2}
    assert report["total"] == 11
    assert report["dead"] == 2
    assert report["oldest_pending_key"] == "cmd:service-a:oldest"
    assert 10.0 <= report["oldest_pending_age_seconds"] < 30.0


def test_status_text_on_an_empty_outbox(outbox: Collection[Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json: one line per status and 'oldest pending: none' when nothing waits."""
    assert main(["outbox", "status"]) == 0
    out = capsys.readouterr().out
    assert "0 documents" in out
    assert "oldest pending: none" in out
    for status in ("pending", "publishing", "sent", "dead"):
        assert status in out


def test_retry_dead_resets_attempts_oldest_first_within_the_limit(
    outbox: Collection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """retry-dead --limit N moves the N oldest dead documents to pending with attempts 0; later runs move the rest."""
    now = int(time.time() * 1000)
    outbox.insert_many(
        [
            outbox_document(f"d{i}", status="dead", created_at=now - 1000 * (5 - i), attempts=10, last_error="boom")
            for i in range(5)
        ]
        + [outbox_document("sent", status="sent")]
    )

    assert main(["outbox", "retry-dead", "--limit", "2"]) == 0
    assert capsys.readouterr().out.strip() == "moved 2 dead outbox documents back to pending"
    moved = {d["key"]: d for d in outbox.find({"status": "pending"})}
    assert set(moved) == {"cmd:service-a:d0", "cmd:service-a:d1"}
    for doc in moved.values():
        assert doc["attempts"] == 0
        assert doc["next_attempt_at"] == 0
        assert doc["lease_owner"] is None
        assert doc["last_error"] == "boom", "the last error stays as history"

    assert main(["outbox", "retry-dead"]) == 0
    assert capsys.readouterr().out.strip() == "moved 3 dead outbox documents back to pending"
    assert main(["outbox", "retry-dead"]) == 0
    assert capsys.readouterr().out.strip() == "moved 0 dead outbox documents back to pending"
    assert _json_status(capsys)["counts"] == {"pending": 5, "publishing": 0, "sent": 1, "dead": 0}


def test_retry_dead_rejects_a_non_positive_limit(outbox: Collection[Any], capsys: pytest.CaptureFixture[str]) -> None:
    """--limit 0 is a usage error (exit 2), not 'move everything'."""
    with pytest.raises(SystemExit) as exc:
        main(["outbox", "retry-dead", "--limit", "0"])
    assert exc.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_entry_point_reads_the_config_file(mongo_server: EmbeddedMongo, run_id: str, tmp_path: Path) -> None:
    """The installed `s2s-daemon outbox status --config FILE` finds the database named in the file."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.uri)
    try:
        client[run_id]["outbox"].insert_one(outbox_document("x", status="dead"))
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"mongodb_uri": mongo_server.uri, "outbox": {"database": run_id}}))
        script = Path(sys.executable).parent / "s2s-daemon"
        done = subprocess.run(
            [str(script), "outbox", "status", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": str(script.parent)},
        )
    finally:
        client.drop_database(run_id)
        client.close()
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["dead"] == 1


def test_unreachable_mongodb_exits_3_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No server at MONGODB_URI: exit code 3 and a one-line reason naming mongodb."""
    monkeypatch.delenv("S2S_CONFIG", raising=False)
    monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    assert main(["outbox", "status"]) == 3
    assert "mongodb unavailable" in capsys.readouterr().err


async def test_a_running_relay_publishes_documents_moved_back_from_dead(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, mongo_server: EmbeddedMongo, run_id: str
) -> None:
    """After retry-dead, the daemon's relay (polling) publishes the documents and marks them sent."""
    monkeypatch.delenv("S2S_CONFIG", raising=False)
    monkeypatch.setenv("MONGODB_URI", mongo_server.uri)
    monkeypatch.setenv("S2S_OUTBOX__DATABASE", run_id)
    assert daemon.mongo is not None
    collection = daemon.mongo[run_id]["outbox"]
    docs = [outbox_document(f"r{i}", status="dead", attempts=10) for i in range(3)]
    await collection.insert_many(docs)
    connection, events = await bind_probe_queue(daemon.topology.events_exchange_name, EVENT_ROUTING_KEY)
    async with connection:
        await asyncio.sleep(1.0)  # a few relay polls: dead documents stay put
        assert await collection.count_documents({"status": "dead"}) == 3

        assert await asyncio.to_thread(main, ["outbox", "retry-dead"]) == 0
        got = await drain(events, 3, timeout=15)

    assert {m.message_id for m in got} == {d["event"]["id"] for d in docs}
    await wait_for(lambda: _count(collection, {"status": "sent"}, 3), timeout=10)


async def _count(collection: Any, query: dict[str, Any], expected: int) -> bool:
    return bool(await collection.count_documents(query) == expected)


async def test_count_in_status_counts_each_status_on_the_mongo_wire_server(
    mongo_server: EmbeddedMongo, run_id: str
) -> None:
    """The backlog gauge's and /health's count (the ``count`` command) agrees with a plain scan, per status."""
    from pymongo import AsyncMongoClient

    from s2s_daemon.outbox.documents import count_in_status
    from s2s_daemon.outbox.record import OutboxStatus

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.uri)
    try:
        collection = client[run_id]["outbox"]
        statuses = ["pending"] * 3 + ["publishing"] * 2 + ["sent"] * 7 + ["dead"]
        await collection.insert_many([outbox_document(f"c{i}", status=s) for i, s in enumerate(statuses)])
        counted = {s.value: await count_in_status(collection, s) for s in OutboxStatus}
        assert counted == {s.value: statuses.count(s.value) for s in OutboxStatus}
        assert await count_in_status(collection, "no-such-status") == 0
    finally:
        await client.drop_database(run_id)
        await client.close()
