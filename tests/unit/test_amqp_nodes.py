"""Broker addresses: one URL or every node of a cluster, validated at start; the order connections try them."""

from __future__ import annotations

from pathlib import Path

import pytest
from yarl import URL

from s2s_daemon.errors import ConfigError
from s2s_daemon.messaging.nodes import NodeList
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.settings import AmqpSettings, load_settings

NODES = ["amqp://u:p@r1:5672/prod", "amqp://u:p@r2:5672/prod", "amqp://u:p@r3:5672/prod"]


def test_env_lists_nodes_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    """RABBITMQ_URLS takes the nodes comma-separated; they replace the single URL."""
    monkeypatch.setenv("RABBITMQ_URLS", " , ".join(NODES))
    settings = load_settings()
    assert settings.rabbitmq_nodes == tuple(NODES)


def test_file_lists_nodes(tmp_path: Path) -> None:
    """A YAML list works too; without it the single rabbitmq_url is the only node."""
    config = tmp_path / "c.yaml"
    config.write_text("rabbitmq_urls:\n" + "".join(f"  - {u}\n" for u in NODES))
    assert load_settings(config).rabbitmq_nodes == tuple(NODES)
    assert load_settings(rabbitmq_url=NODES[0]).rabbitmq_nodes == (NODES[0],)


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        (
            "http://r1/,amqp://r2/",
            "RABBITMQ_URLS: Value error, [0]: must be an amqp:// or amqps:// URL, got scheme 'http'",
        ),
        ("amqp://r1/,amqp:///x", "RABBITMQ_URLS: Value error, [1]: has no host"),
        ("amqp://r1:x/", "RABBITMQ_URLS: Value error, [0]: has an invalid port"),
        ("amqp://r1/a,amqp://r1/a", "RABBITMQ_URLS: Value error, [1] repeats [0]"),
        ("amqp://r1/a,amqp://r2/b", "RABBITMQ_URLS: Value error, every node must name the same virtual host"),
    ],
)
def test_bad_node_lists_are_named(monkeypatch: pytest.MonkeyPatch, urls: str, expected: str) -> None:
    """Each bad node is named by its index; the URL (credentials) is never echoed."""
    monkeypatch.setenv("RABBITMQ_URLS", urls)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert "amqp://" not in str(caught.value).replace("amqp:// or amqps://", "")


def test_both_broker_settings_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """RABBITMQ_URL and RABBITMQ_URLS together are ambiguous: refused, naming both."""
    monkeypatch.setenv("RABBITMQ_URLS", ",".join(NODES))
    monkeypatch.setenv("RABBITMQ_URL", NODES[0])
    with pytest.raises(ConfigError, match="rabbitmq_url and rabbitmq_urls are both set"):
        load_settings()


def test_single_url_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A RABBITMQ_URL that is not AMQP fails at start."""
    monkeypatch.setenv("RABBITMQ_URL", "redis://r1:6379/0")
    with pytest.raises(ConfigError, match="RABBITMQ_URL: Value error, must be an amqp:// or amqps:// URL"):
        load_settings()


def test_start_order_visits_every_node_once() -> None:
    """Each connection tries every node once: from a random node when shuffling, else from the first."""
    assert NodeList(NODES, shuffle=False).start_order() == NODES
    starts = set()
    for _ in range(200):
        order = NodeList(NODES).start_order()
        assert sorted(order) == sorted(NODES)
        assert order == [*NODES[NODES.index(order[0]) :], *NODES[: NODES.index(order[0])]]
        starts.add(order[0])
    assert starts == set(NODES)


def test_reconnect_interval_reaches_every_node() -> None:
    """The reconnect interval is in every node's URL, where aio-pika's robust connection reads it."""
    nodes = NodeList(NODES, reconnect_interval=1.5)
    assert [URL(u).query["reconnect_interval"] for u in nodes.urls] == ["1.5"] * 3
    assert [URL(u).with_query(None) for u in nodes.urls] == [URL(u) for u in NODES]


def test_connection_class_carries_the_nodes() -> None:
    """The connection class aio-pika instantiates knows every node."""
    cls = NodeList(NODES).connection_class()
    assert tuple(URL(u) for u in NODES) == cls.NODES


def test_quorum_group_size_is_declared_only_when_set() -> None:
    """Unset: no x-quorum-initial-group-size (the broker's every-node default); set: on every quorum queue."""
    plain = Topology.from_settings(AmqpSettings(), ("a",))
    assert "x-quorum-initial-group-size" not in (plain.command_queue("a").arguments or {})
    sized = Topology.from_settings(AmqpSettings(quorum_initial_group_size=3), ("a",))
    for queue in (sized.command_queue("a"), sized.delay_queue("a", 5), sized.dlq, sized.unrouted_queue):
        assert (queue.arguments or {})["x-quorum-initial-group-size"] == 3
