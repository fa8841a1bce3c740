"""Short versions of the chaos scenarios: one private RabbitMQ node for the session (each scenario works in a
virtual host of its own), private Redis, nx-27017, demo downstreams and daemon processes per scenario."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.chaos.processes import pending_cleanups, stop_all
from tests.harness.chaos.services import PrivateRabbit


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: a chaos scenario (private services, separate daemon processes)")


@pytest.fixture(scope="session")
def chaos_rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbit]:
    rabbit = PrivateRabbit(tmp_path_factory.mktemp("chaos-rabbitmq"))
    try:
        rabbit.start()
        yield rabbit
    finally:
        rabbit.stop()
        stop_all()


@pytest.fixture
def no_leftovers(chaos_rabbit: PrivateRabbit) -> Iterator[None]:
    """After the test, nothing it started is still registered as running (the node shared by the session
    aside); whatever is, is stopped and fails the test."""
    before = pending_cleanups()
    yield
    left = pending_cleanups() - before
    assert left == 0, f"{left} process(es) left running by the scenario"
