"""``GET /api/deliveries/{event_id}`` (the delivery log of one event) and ``GET /api/subscriptions`` (the
endpoints, and which are disabled)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from s2s_daemon.delivery import DeliveryLog, EndpointStates
from s2s_daemon.http.responses import (
    DeliveriesBody,
    DeliveryEntry,
    ErrorBody,
    SubscriptionsBody,
    SubscriptionState,
    model_response,
)
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.settings import SubscriptionSettings

__all__ = ["DeliveryLogApi"]

log = get_logger("s2s.sidecar")
_RETRY_AFTER_S = "2"


class DeliveryLogApi:
    def __init__(
        self,
        delivery_log: DeliveryLog,
        states: EndpointStates,
        subscriptions: dict[str, SubscriptionSettings],
        topology: Topology,
    ) -> None:
        self._log = delivery_log
        self._states = states
        self._subscriptions = subscriptions
        self._topology = topology

    async def deliveries(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]
        try:
            found = await self._log.for_event(event_id)
        except Exception as exc:
            log.warning("sidecar.delivery_log_unavailable", error=f"{type(exc).__name__}: {exc}")
            body = ErrorBody(error="unavailable", detail="the delivery log (MongoDB) is unavailable")
            return model_response(body, 503, {"retry-after": _RETRY_AFTER_S})
        if not found:
            body = ErrorBody(error="not_found", detail=f"no delivery of event {event_id!r} is logged")
            return model_response(body, 404)
        entries = [DeliveryEntry.model_validate(doc) for doc in found]
        return model_response(DeliveriesBody(event_id=event_id, deliveries=entries))

    async def subscriptions(self, _: Request) -> Response:
        states = {state.name: state for state in self._states.all()}
        body = SubscriptionsBody(
            subscriptions=[
                SubscriptionState(
                    name=name,
                    url=sub.url,
                    events=sub.events,
                    disabled=states[name].disabled,
                    reason=states[name].reason,
                    changed_at=states[name].changed_at,
                    queue=self._topology.subscription_queue_name(name),
                )
                for name, sub in self._subscriptions.items()
            ]
        )
        return JSONResponse(body.model_dump(mode="json"))
