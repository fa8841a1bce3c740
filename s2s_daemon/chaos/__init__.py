"""Chaos suite: faults injected into private services around daemon processes, with Jepsen-style counters.

``python -m s2s_daemon.chaos`` (``make chaos``) runs the scenarios at full size; ``tests/chaos`` runs their
short versions. Layout: ``processes`` (children stopped by PID), ``services`` (private RabbitMQ, Redis,
nx-27017, demo downstreams), ``proxy`` (fault-injecting TCP proxy), ``stack`` (one scenario's world),
``producer`` (pika publisher and observers), ``counters``, ``run``, ``scenarios``, ``report``, ``cli``.
"""

from s2s_daemon.chaos.counters import Counters, FaultWindow, count, percentile, recovery_seconds
from s2s_daemon.chaos.proxy import FaultProxy, ProxyKnobs, ProxyThread
from s2s_daemon.chaos.report import format_table, save_json
from s2s_daemon.chaos.run import Load, ScenarioResult
from s2s_daemon.chaos.scenarios import SCENARIOS, Scenario, run_scenario
from s2s_daemon.chaos.services import DemoDownstreams, PrivateMongo, PrivateRabbit, PrivateRedis
from s2s_daemon.chaos.stack import DaemonProcess, Stack, StackOptions

__all__ = [
    "SCENARIOS",
    "Counters",
    "DaemonProcess",
    "DemoDownstreams",
    "FaultProxy",
    "FaultWindow",
    "Load",
    "PrivateMongo",
    "PrivateRabbit",
    "PrivateRedis",
    "ProxyKnobs",
    "ProxyThread",
    "Scenario",
    "ScenarioResult",
    "Stack",
    "StackOptions",
    "count",
    "format_table",
    "percentile",
    "recovery_seconds",
    "run_scenario",
    "save_json",
]
