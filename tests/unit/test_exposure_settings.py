"""A route's ``expose:``: its defaults, and the load-time errors that name the bad key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from s2s_daemon.errors import ConfigError
from s2s_daemon.http.openapi import build_openapi
from s2s_daemon.settings import SIDECAR_PATHS, load_settings, paths_overlap, sidecar_path_taken

EXAMPLE = Path(__file__).parents[2] / "s2s_daemon" / "config" / "example.yaml"


def _settings(**routes: dict[str, Any]) -> Any:
    return load_settings(None, downstreams={"billing": {"base_url": "http://billing", "routes": routes}})


def _refused(**routes: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        _settings(**routes)
    return str(err.value)


def test_example_exposes_the_seed_endpoints() -> None:
    """The example config serves POST /api/service-a/resource (command) and GET /api/service-b/resource/{id} (read)."""
    settings = load_settings(EXAMPLE)
    create = settings.downstreams["service-a"].routes["create-resource"].expose
    read = settings.downstreams["service-b"].routes["get-resource"].expose
    assert create is not None
    assert read is not None
    assert (create.kind, create.method, create.path) == ("command", "POST", "/api/service-a/resource")
    assert (read.kind, read.method, read.path) == ("read", "GET", "/api/service-b/resource/{id}")


def test_kind_defaults_by_route_method() -> None:
    """Without a kind, a GET route is exposed as a read and any other as a command; a GET route may be a command."""
    settings = _settings(
        create={"method": "POST", "path": "/v1/invoices", "expose": {"path": "/v1/invoices"}},
        fetch={"method": "GET", "path": "/v1/invoices/{id}", "expose": {"path": "/invoices/{id}"}},
        refresh={"method": "GET", "path": "/v1/refresh", "expose": {"path": "/refresh", "kind": "command"}},
        hidden={"path": "/v1/hidden"},
    )
    routes = settings.downstreams["billing"].routes
    kinds = {name: route.expose.kind if route.expose else None for name, route in routes.items()}
    assert kinds == {"create": "command", "fetch": "read", "refresh": "command", "hidden": None}


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"path": "/x", "expose": {"path": "api/x"}}, r"routes\.r\.expose\.path: Value error, must start with '/'"),
        ({"path": "/x", "expose": {"path": "/api/x/"}}, r"routes\.r\.expose\.path: .*no trailing '/'"),
        ({"path": "/x", "expose": {"path": "/api/x?y=1"}}, r"routes\.r\.expose\.path: .*segment 'x\?y=1'"),
        ({"path": "/x", "expose": {"path": "/x/{a}{b}"}}, r"routes\.r\.expose\.path: .*one whole \{field\}"),
        ({"path": "/x", "expose": {"path": "/health"}}, r"expose\.path: .*overlaps the sidecar's own path /health"),
        ({"path": "/x", "expose": {"path": "/api/commands"}}, r"expose\.path: .*own path /api/commands/\.\.\."),
        ({"path": "/x", "expose": {"path": "/{anything}"}}, r"expose\.path: .*overlaps the sidecar's own path"),
        ({"path": "/x", "expose": {"path": "/admin/x/y"}}, r"expose\.path: .*own path /admin/\.\.\."),
        ({"path": "/x", "expose": {"path": "/x", "kind": "fetch"}}, r"routes\.r\.expose\.kind: Input should be"),
        ({"path": "/x", "expose": {"path": "/x", "verb": "PUT"}}, r"routes\.r\.expose\.verb: unknown key"),
        (
            {"method": "GET", "path": "/items/{sku}", "expose": {"path": "/items/{id}"}},
            r"routes\.r: .*expose\.path /items/\{id\} must have"
            r" exactly the route's path fields \['sku'\], has \['id'\]",
        ),
        (
            {"method": "GET", "path": "/items/{sku}", "expose": {"path": "/items"}},
            r"routes\.r: .*exactly the route's path fields \['sku'\], has \[\]",
        ),
        (
            {"method": "GET", "path": "/items/{sku}", "expose": {"path": "/i/{sku}/{sku}"}},
            r"expose\.path: .*a \{field\} appears twice",
        ),
        (
            {"method": "POST", "path": "/items", "expose": {"path": "/items", "kind": "read"}},
            r"routes\.r: .*read needs a GET route",
        ),
        (
            {"method": "POST", "path": "/items", "expose": {"path": "/items/{sku}"}},
            r"routes\.r: .*a command takes its fields from the JSON body",
        ),
    ],
)
def test_bad_exposure_is_refused_naming_the_key(route: dict[str, Any], message: str) -> None:
    """Each bad exposure fails at load time with a message that names the key under downstreams.billing."""
    text = _refused(r=route)
    assert text.startswith("settings: downstreams.billing.routes.r"), text
    assert len(text.splitlines()) == 1, text
    assert re.search(message, text), text


def test_two_exposures_on_one_method_and_path_are_refused() -> None:
    """Two routes exposed with the same method on overlapping paths are refused, naming both keys."""
    text = _refused(
        a={"method": "GET", "path": "/a/{id}", "expose": {"path": "/items/{id}"}},
        b={"method": "GET", "path": "/b/{sku}", "expose": {"path": "/items/{sku}"}},
    )
    assert "downstreams.billing.routes.b.expose (GET /items/{sku})" in text
    assert "downstreams.billing.routes.a.expose (GET /items/{id}) overlap" in text


def test_a_command_and_a_read_may_share_a_path() -> None:
    """POST and GET on the same path are two operations, not a clash."""
    settings = _settings(
        add={"method": "POST", "path": "/items", "expose": {"path": "/items"}},
        browse={"method": "GET", "path": "/items", "expose": {"path": "/items"}},
    )
    assert len(settings.downstreams["billing"].routes) == 2


def test_exposures_of_two_downstreams_clash_too() -> None:
    """The overlap check spans downstreams."""
    with pytest.raises(ConfigError, match=r"downstreams\.b\.routes\.y\.expose \(POST /same\) and downstreams\.a"):
        load_settings(
            None,
            downstreams={
                "a": {"base_url": "http://a", "routes": {"x": {"path": "/x", "expose": {"path": "/same"}}}},
                "b": {"base_url": "http://b", "routes": {"y": {"path": "/y", "expose": {"path": "/same"}}}},
            },
        )


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("/items/{id}", "/items/{sku}", True),
        ("/items/{id}", "/items/special", True),
        ("/items/{id}", "/items", False),
        ("/items/{id}", "/orders/{id}", False),
        ("/", "/", True),
    ],
)
def test_paths_overlap(a: str, b: str, overlap: bool) -> None:
    """Templates overlap when some request path matches both."""
    assert paths_overlap(a, b) is overlap
    assert paths_overlap(b, a) is overlap


def test_every_path_of_the_sidecar_itself_is_reserved() -> None:
    """Each path in the OpenAPI document that no exposure declared is one of SIDECAR_PATHS, so the load-time check
    knows every path an exposure could shadow."""
    settings = load_settings(EXAMPLE, admin={"token": "t" * 20})
    exposed = {
        route.expose.path
        for downstream in settings.downstreams.values()
        for route in downstream.routes.values()
        if route.expose is not None
    }
    own = set(build_openapi(settings, "0")["paths"]) - exposed
    assert own
    assert all(sidecar_path_taken(path) is not None for path in own), own
    assert all(sidecar_path_taken(path.rstrip("/")) is not None for path in SIDECAR_PATHS)
