"""The routes the configuration exposes on the sidecar (``expose:`` of a route), in declaration order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from s2s_daemon.settings import ExposeSettings, ExposureKind, RouteSettings, Settings

__all__ = ["Exposure", "declared_exposures"]


@dataclass(frozen=True, slots=True)
class Exposure:
    """One route served over HTTP: a command (``POST path``) or a read (``GET path``)."""

    downstream: str
    action: str
    route: RouteSettings
    expose: ExposeSettings

    @property
    def routing_key(self) -> str:
        return f"{self.downstream}.{self.action}"

    @property
    def kind(self) -> ExposureKind:
        return "read" if self.expose.kind == "read" else "command"

    @property
    def method(self) -> Literal["GET", "POST"]:
        return self.expose.method

    @property
    def path(self) -> str:
        return self.expose.path


def declared_exposures(settings: Settings) -> list[Exposure]:
    return [
        Exposure(downstream, action, route, route.expose)
        for downstream, downstream_settings in settings.downstreams.items()
        for action, route in downstream_settings.routes.items()
        if route.expose is not None
    ]
