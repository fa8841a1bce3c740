"""`http_client: httpx` comes from the `httpx` extra: without it the daemon refuses to start, naming the key."""

from __future__ import annotations

import sys

import pytest

from s2s_daemon.errors import ConfigError
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.resilience.client import DownstreamClient, HttpxTransport
from s2s_daemon.settings import DownstreamSettings, RouteSettings


def _httpx_downstream() -> DownstreamSettings:
    return DownstreamSettings(base_url="http://billing", http_client="httpx", routes={"r": RouteSettings(path="/r")})


def test_httpx_transport_without_the_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """With httpx not importable, building the client fails with a ConfigError that names the setting and the extra."""
    monkeypatch.setitem(sys.modules, "httpx", None)  # what `import httpx` sees when it is not installed
    settings = _httpx_downstream()
    with pytest.raises(ConfigError, match=r"downstreams\.billing\.http_client") as raised:
        DownstreamClient("billing", settings, Metrics())
    assert "pip install 's2s-daemon[httpx]'" in str(raised.value)


async def test_httpx_transport_with_the_extra_is_built() -> None:
    """With httpx installed (the dev install has the extra), `http_client: httpx` builds its transport."""
    settings = _httpx_downstream()
    client = DownstreamClient("billing", settings, Metrics())
    assert isinstance(client._transport, HttpxTransport)
    await client._transport.aclose()
