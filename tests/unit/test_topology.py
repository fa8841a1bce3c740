"""Topology names and the delay ladder."""

from __future__ import annotations

from s2s_daemon.messaging.topology import Topology


def test_names_follow_prefix() -> None:
    """Every exchange and queue is named from the prefix."""
    t = Topology("s2s", ("service-a",), 5, (1, 5, 30))
    assert t.commands_exchange_name == "s2s.commands"
    assert t.command_queue_name("service-a") == "s2s.service-a.commands"
    assert t.delay_queue_name("service-a", 5) == "s2s.service-a.delay.5s"
    assert t.command_queue("service-a").arguments["x-delivery-limit"] == 5
    assert t.command_queue("service-a").arguments["x-dead-letter-exchange"] == "s2s.dlx"
    assert set(t.all_queue_names()) >= {"s2s.dlq", "s2s.unrouted", "s2s.service-a.delay.30s"}


def test_delay_rung_waits_at_least_the_delay() -> None:
    """The chosen rung is the smallest that waits at least the requested delay, capped at the top rung."""
    t = Topology("s2s", (), 5, (1, 5, 30))
    assert t.delay_rung(0.2) == 1
    assert t.delay_rung(1.0) == 1
    assert t.delay_rung(3) == 5
    assert t.delay_rung(5.01) == 30
    assert t.delay_rung(1000) == 30


def test_subscription_queues_are_named_and_dead_letter_back() -> None:
    """A subscription's queue dead-letters to the DLX; its delay queues return to it; the ladder is its own."""
    t = Topology(
        "s2s", (), 5, (1, 5), subscriptions=(("partner", ("service-a.*.succeeded",)),), delivery_ladder=(1, 300, 36_000)
    )
    assert t.subscription_queue_name("partner") == "s2s.subscription.partner"
    assert t.subscription_queue("partner").arguments["x-dead-letter-exchange"] == "s2s.dlx"
    delay = t.subscription_delay_queue("partner", 300)
    assert delay.name == "s2s.subscription.partner.delay.300s"
    assert delay.arguments["x-dead-letter-routing-key"] == "s2s.subscription.partner"
    assert delay.arguments["x-message-ttl"] == 300_000
    assert set(t.all_queue_names()) >= {"s2s.subscription.partner", "s2s.subscription.partner.delay.36000s"}
    assert (t.subscription_delay_rung(5), t.subscription_delay_rung(7200), t.subscription_delay_rung(10**6)) == (
        300,
        36_000,
        36_000,
    )
