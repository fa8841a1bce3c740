"""Chaos suite: faults injected into private services around daemon processes, with Jepsen-style counters.

``python -m tests.harness.chaos`` (``make chaos``) runs the scenarios at full size; ``tests/chaos`` runs their
short versions. Layout: ``processes`` (registry of what was started), ``services`` (private RabbitMQ, Redis,
nx-27017, demo downstreams), ``cluster`` (a private 3-node RabbitMQ cluster), ``sentinel`` (Redis primary, replica
and sentinels), ``proxy`` (fault-injecting TCP proxy), ``stack`` (one scenario's world),
``producer`` (pika publisher and observers), ``counters``, ``run``, ``scenarios``, ``report``, ``cli``.
"""

from tests.harness.chaos.cluster import PrivateRabbitCluster
from tests.harness.chaos.counters import Counters, FaultWindow, count, percentile, recovery_seconds
from tests.harness.chaos.proxy import FaultProxy, ProxyKnobs, ProxyThread
from tests.harness.chaos.report import format_table, save_json
from tests.harness.chaos.run import Load, ScenarioResult
from tests.harness.chaos.scenarios import SCENARIOS, Scenario, run_scenario
from tests.harness.chaos.sentinel import PrivateSentinels
from tests.harness.chaos.services import DemoDownstreams, PrivateMongo, PrivateRabbit, PrivateRedis
from tests.harness.chaos.stack import DaemonProcess, Stack, StackOptions

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
    "PrivateRabbitCluster",
    "PrivateRedis",
    "PrivateSentinels",
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
