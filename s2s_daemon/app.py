"""Composition root: settings -> clients -> stores -> pipeline -> subscribers -> relay -> sidecar.

The one module that knows every layer: it builds the clients and injects them downward.

One asyncio process. ``Daemon.start()`` connects everything (failing loudly, naming the dependency),
``Daemon.stop()`` drains in the order that loses nothing: readiness off -> consumers stop taking messages ->
in-flight handlers finish (grace period) -> the relay flushes its claims -> connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable
from functools import partial
from typing import Any

import aiormq
import stamina
from beanie import init_beanie
from faststream import AckPolicy
from faststream.rabbit import Channel
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from s2s_daemon.delivery import DeliveryLog, EndpointDelivery, EndpointStates, endpoints_collection
from s2s_daemon.errors import ConfigError, DependencyUnavailable
from s2s_daemon.http import (
    CheckResult,
    HealthCheck,
    SidecarContext,
    SidecarServer,
    backlog_check,
    breaker_check,
    create_app,
    ping_check,
    run_checks,
)
from s2s_daemon.idempotency import IdempotencyStore, RedisConnector
from s2s_daemon.messaging import (
    DEFAULT_MIDDLEWARES,
    AmqpPublisher,
    ClusterRabbitBroker,
    CommandGateway,
    ConsumerGate,
    DependencyHold,
    NodeList,
    Topology,
)
from s2s_daemon.messaging import frames as amqp_frames
from s2s_daemon.observability import Metrics, StateSampler, get_logger, package_version, redact_url
from s2s_daemon.observability.tracing import Tracing
from s2s_daemon.outbox import OutboxDocument, OutboxWriter, Relay, count_in_status
from s2s_daemon.pipeline import CommandPipeline
from s2s_daemon.resilience import BreakerState, DownstreamClient, SharedBreakerState, Transition
from s2s_daemon.settings import DEFAULT_MONGODB_URI, Settings

log = get_logger("s2s.daemon")
_STOP_STEP_TIMEOUT_S = 15.0  # per shutdown step beyond the drain's own grace period
_AMQP_CONNECT_TIMEOUT_S = 5.0  # one connection attempt to one broker node


def _in_flight(subscriber: Any) -> int:
    """Messages a FastStream subscriber is handling now (its graceful-shutdown lock); 0 when unknown."""
    return int(getattr(getattr(subscriber, "lock", None), "qsize", 0) or 0)


async def message_itself(msg: Any) -> Any:
    """FastStream decoder that hands the handler the message itself, body untouched.

    The pipeline parses (and dead-letters) bodies itself: FastStream's JSON decoding would fail before the
    handler and requeue invalid JSON in a loop with no reason. With ``apply_types=False`` the handler receives
    the decoded value positionally, so no dependency injection runs per message (a ``Context`` parameter
    costs a worker-thread hop per message in FastStream 0.7).
    """
    return msg


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.metrics = Metrics()
        # the standard OTEL_* variables alone turn tracing on (docs/tracing.md); off, nothing of it is imported
        self.tracing = Tracing.from_environ(os.environ, settings.service_name, package_version())
        self.topology = Topology.from_settings(
            settings.amqp,
            tuple(settings.downstreams),
            tuple((name, tuple(sub.events)) for name, sub in settings.subscriptions.items()),
            settings.delivery.delay_ladder,
        )
        self.draining = False
        self._heartbeat = time.monotonic()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.redis: Redis | None = None
        self.redis_connector: RedisConnector | None = None
        self.mongo: AsyncMongoClient[dict[str, Any]] | None = None
        self.broker: ClusterRabbitBroker | None = None
        self.rabbit_nodes = NodeList(
            settings.rabbitmq_nodes,
            shuffle=settings.amqp.shuffle_nodes,
            reconnect_interval=settings.amqp.reconnect_interval,
        )
        self.relay: Relay | None = None
        self.sidecar: SidecarServer | None = None
        self.sampler: StateSampler | None = None
        self.clients: dict[str, DownstreamClient] = {}
        self.gates: dict[str, ConsumerGate] = {}
        self.redis_hold: DependencyHold | None = None
        self.shared_breakers: dict[str, SharedBreakerState] = {}
        self.outbox: OutboxWriter | None = None
        # webhook subscriptions: a client, a consumer gate per endpoint (not held by Redis: deliveries need none)
        self.endpoint_clients: dict[str, DownstreamClient] = {}
        self.endpoint_gates: dict[str, ConsumerGate] = {}
        self.delivery_log: DeliveryLog | None = None
        self.endpoint_states: EndpointStates | None = None

    # lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        started = time.perf_counter()
        # stamina's default hooks log every retry and count them in the global registry; our client counts
        # retries in s2s_retries_total, so silence them (stamina's hooks are process-global by design).
        stamina.instrumentation.set_on_retry_hooks([])
        self._heartbeat_task = asyncio.create_task(self._beat(), name="s2s-heartbeat")
        self.redis_connector = RedisConnector(s)
        self.redis = self.redis_connector.client()
        try:
            await self._require("redis", self.redis_connector.describe(), self.redis.ping())
        except DependencyUnavailable as exc:
            # Start anyway: commands fail closed (redelivered later) and readiness reports it.
            log.warning("daemon.redis_unavailable_at_start", error=exc.detail)

        mongo_uri = s.mongodb_uri.get_secret_value() if s.mongodb_uri else DEFAULT_MONGODB_URI
        self.mongo = AsyncMongoClient(mongo_uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000)
        await self._require("mongodb", mongo_uri, self.mongo.admin.command("ping"))
        await init_beanie(database=self.mongo[s.outbox.database], document_models=[OutboxDocument])

        if not amqp_frames.install():
            log.info("daemon.amqp_frames_one_write_each", reason="aiormq version not checked")
        self.broker = ClusterRabbitBroker(
            self.rabbit_nodes,
            timeout=_AMQP_CONNECT_TIMEOUT_S,
            reconnect_interval=s.amqp.reconnect_interval,
            connection_name=f"{s.service_name} consumers",
            graceful_timeout=s.amqp.graceful_timeout,
            middlewares=DEFAULT_MIDDLEWARES,
            default_channel=Channel(publisher_confirms=True),
            logger=logging.getLogger("faststream"),
            log_level=logging.DEBUG,
            app_id=s.service_name,
            apply_types=False,
        )
        publisher = AmqpPublisher(self.broker, self.topology, s.service_name, self.tracing)
        self.relay = Relay(
            OutboxDocument.get_pymongo_collection(),
            publisher.publish_outbox_document,
            s.outbox,
            self.metrics,
            owner=self.owner,
            tracing=self.tracing,
        )
        self.outbox = OutboxWriter.for_beanie(self.relay)
        self.clients = {
            name: DownstreamClient(name, ds, self.metrics, tracing=self.tracing) for name, ds in s.downstreams.items()
        }
        store = IdempotencyStore(
            self.redis,
            s.idempotency.key_prefix,
            lease_ms=int(s.idempotency.lease_seconds * 1000),
            done_ttl_ms=s.idempotency.done_ttl_seconds * 1000,
        )
        # every consumer pauses while Redis is unreachable; the gates are added below, one per subscriber
        self.redis_hold = DependencyHold("redis", self.gates, self.redis.ping)
        pipeline = CommandPipeline(
            s,
            self.topology,
            store,
            self.outbox,
            self.clients,
            publisher,
            self.metrics,
            self.owner,
            on_redis_down=self.redis_hold.report_down,
            tracing=self.tracing,
        )
        for name, ds in s.downstreams.items():
            prefetch = ds.prefetch or s.amqp.prefetch
            subscriber = self.broker.subscriber(
                self.topology.command_queue(name),
                self.topology.commands_exchange,
                ack_policy=AckPolicy.NACK_ON_ERROR,
                no_reply=True,
                channel=Channel(prefetch_count=prefetch),
                title=f"{name}-commands",
                decoder=message_itself,
            )
            subscriber(pipeline.handle)
            gate = ConsumerGate(name, subscriber, self.clients[name].breaker, prefetch, self.metrics)
            self.clients[name].add_transition_listener(gate.on_transition)
            self.gates[name] = gate
            if ds.breaker.shared:
                self.shared_breakers[name] = SharedBreakerState(
                    self.redis,
                    s.idempotency.key_prefix,
                    name,
                    self.clients[name].breaker,
                    self.owner,
                    min_reporters=ds.breaker.shared_min_reporters,
                )
        self.broker.subscriber(
            self.topology.unrouted_queue,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            no_reply=True,
            channel=Channel(prefetch_count=s.amqp.prefetch),
            title="unrouted",
            decoder=message_itself,
        )(pipeline.handle_unrouted)
        self._subscribe_endpoints(publisher)
        if s.subscriptions:
            assert self.delivery_log is not None
            await self.delivery_log.ensure_indexes()

        rabbit_url = ", ".join(self.rabbit_nodes.urls)
        # every node is tried once, each attempt bounded
        bound = _AMQP_CONNECT_TIMEOUT_S * len(self.rabbit_nodes.urls) + 1.0
        await self._require("rabbitmq", rabbit_url, self.broker.connect(), bound)
        try:
            await self.topology.declare(self.broker)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigError(
                f"RabbitMQ refused the topology: {exc}. A queue or exchange with this name exists with other "
                "arguments (e.g. an older amqp.delivery_limit): delete it after draining it, or set the setting "
                "to the existing value, or use another amqp.prefix"
            ) from None
        # FastStream's declarer caches queue objects by name together with the channel that declared them (here
        # the default channel): forget them, or every subscriber consumes on the default channel without its
        # prefetch, i.e. unbounded, and a drain would have the whole backlog in flight.
        self.broker.config.declarer.disconnect()
        if self.endpoint_states is not None and s.subscriptions:
            # known before the first event: a disabled endpoint's consumer hands back what it gets until paused
            await self.endpoint_states.load()
        await self.broker.start()
        if self.endpoint_states is not None and s.subscriptions:
            for state in self.endpoint_states.all():
                if state.disabled:  # the hold taken by load() could not pause a consumer that did not exist yet
                    await self.endpoint_gates[state.name].hold("disabled")
            self.endpoint_states.start()
        self.relay.start()
        for shared in self.shared_breakers.values():
            shared.start()

        context = self._sidecar_context()
        self.sidecar = SidecarServer(create_app(context), s.http.host, s.http.port)
        await self.sidecar.start()
        self.sampler = StateSampler(
            self.rabbit_nodes.start_order(),
            self.topology,
            self.metrics,
            lambda: self._is_ready(context),
            connection_class=self.rabbit_nodes.connection_class(),
        )
        self.sampler.start()
        log.info(
            "daemon.started",
            owner=self.owner,
            sidecar=f"http://{self.sidecar.host}:{self.sidecar.port}",
            downstreams=list(s.downstreams),
            rabbitmq=redact_url(rabbit_url),
            mongodb=redact_url(mongo_uri),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def stop(self) -> None:
        """Drain, then close. Safe to call on a partly started daemon and more than once.

        readiness false (``draining``) -> consumers stop taking messages (later deliveries stay unacked and go back
        to the queue when the channel closes) -> in-flight handlers finish within ``amqp.graceful_timeout`` (each
        acks only after its outbox write) -> the relay publishes what it claimed -> connections close. A step that
        fails is logged and the next one still runs: a close error must not turn a clean drain into a crash.
        """
        self.draining = True
        self.metrics.ready.set(0)
        started = time.monotonic()
        log.info("daemon.stopping", grace_s=self.settings.amqp.graceful_timeout)
        if self.sampler is not None:
            await self._quietly("sampler", self.sampler.stop())
        for shared in self.shared_breakers.values():
            await self._quietly("shared_breaker", shared.stop())
        if self.redis_hold is not None:
            await self._quietly("redis_hold", self.redis_hold.close())
        if self.endpoint_states is not None:
            await self._quietly("endpoint_states", self.endpoint_states.stop())
        for gate in [*self.gates.values(), *self.endpoint_gates.values()]:
            await self._quietly("consumer_gate", gate.close())
        if self.broker is not None:
            subs = list(self.broker.subscribers)
            in_flight = sum(_in_flight(sub) for sub in subs)
            drain_bound = self.settings.amqp.graceful_timeout + _STOP_STEP_TIMEOUT_S
            try:
                results = await asyncio.wait_for(
                    asyncio.gather(*(sub.stop() for sub in subs), return_exceptions=True), drain_bound
                )
            except TimeoutError:
                log.warning("daemon.stop_step_timed_out", step="subscribers", timeout_s=drain_bound)
                results = []
            for result in results:
                if isinstance(result, BaseException):
                    log.warning("daemon.subscriber_stop_failed", error=f"{type(result).__name__}: {result}")
            unfinished = sum(_in_flight(sub) for sub in subs)
            # Past the grace period FastStream stops waiting but does not cancel: those handlers cannot ack
            # once the channel closes, so their messages are redelivered (the outbox backstop answers them).
            log_drain = log.warning if unfinished else log.info
            log_drain(
                "daemon.consumers_drained",
                in_flight=in_flight,
                unfinished=unfinished,
                seconds=round(time.monotonic() - started, 3),
            )
        if self.relay is not None:
            await self._quietly("relay", self.relay.stop())
        if self.broker is not None:
            await self._quietly("broker", self.broker.stop())
        if self.sidecar is not None:
            await self._quietly("sidecar", self.sidecar.stop())
        for client in [*self.clients.values(), *self.endpoint_clients.values()]:
            await self._quietly("http_client", client.aclose())
        if self.redis_connector is not None:
            await self._quietly("redis", self.redis_connector.aclose())
        if self.mongo is not None:
            await self._quietly("mongodb", self.mongo.close())
        if self.tracing.enabled:  # the spans still buffered go out (bounded by the exporter's timeout)
            await self._quietly("tracing", asyncio.to_thread(self.tracing.shutdown))
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        log.info("daemon.stopped", seconds=round(time.monotonic() - started, 3))

    async def __aenter__(self) -> Daemon:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT, then drain (``stop``); returns normally, so the process exits 0."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            if stop.is_set():
                log.warning("daemon.signal_again", signal=sig.name, detail="already draining; waiting for it")
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        async with self:
            await stop.wait()
            log.info("daemon.signal_received")

    async def _is_ready(self, context: SidecarContext) -> bool:
        """What /readyz answers: not draining and no readiness check failing."""
        if self.draining:
            return False
        return (await run_checks(context.checks, readiness_only=True)).status != "fail"

    async def _quietly(self, step: str, closing: Awaitable[Any]) -> None:
        """One shutdown step: its failure is logged, and a step that hangs is given up (cancelled) after a bound,
        so the steps after it run (a full `make test` twice waited 120 s after `daemon.stopping`, step unknown)."""
        try:
            await asyncio.wait_for(closing, _STOP_STEP_TIMEOUT_S)
        except TimeoutError:
            log.warning("daemon.stop_step_timed_out", step=step, timeout_s=_STOP_STEP_TIMEOUT_S)
        except Exception:
            log.warning("daemon.stop_step_failed", step=step, exc_info=True)

    # internals ---------------------------------------------------------------------------------
    def _subscribe_endpoints(self, publisher: AmqpPublisher) -> None:
        """One queue, consumer, gate and resilient client per webhook subscription."""
        s = self.settings
        assert self.broker is not None
        assert self.mongo is not None
        database = self.mongo[s.delivery.log_database or s.outbox.database]
        self.delivery_log = DeliveryLog(database, s.delivery.log_retention_seconds)
        self.endpoint_states = EndpointStates(
            endpoints_collection(database), s.subscriptions, s.delivery.state_poll_seconds, self._endpoint_state_changed
        )
        for name, sub in s.subscriptions.items():
            client = DownstreamClient(f"subscriptions.{name}", sub.downstream(), self.metrics)
            client.add_transition_listener(partial(_webhook_breaker_gauge, self.metrics, name))
            self.metrics.webhook_breaker_state.labels(name).set(0)
            self.metrics.webhook_endpoint_disabled.labels(name).set(0)
            consumer = EndpointDelivery(
                name, sub, client, self.topology, publisher, self.delivery_log, self.endpoint_states, self.metrics
            )
            subscriber = self.broker.subscriber(
                self.topology.subscription_queue(name),
                ack_policy=AckPolicy.NACK_ON_ERROR,
                no_reply=True,
                channel=Channel(prefetch_count=s.delivery.prefetch),
                title=f"{name}-webhooks",
                decoder=message_itself,
            )
            subscriber(consumer.handle)
            gate = ConsumerGate(client.name, subscriber, client.breaker, s.delivery.prefetch, self.metrics)
            client.add_transition_listener(gate.on_transition)
            self.endpoint_clients[name] = client
            self.endpoint_gates[name] = gate

    async def _endpoint_state_changed(self, name: str, disabled: bool) -> None:
        """A disabled endpoint's consumer is paused (its events wait in its queue); enabled, it resumes."""
        self.metrics.webhook_endpoint_disabled.labels(name).set(1 if disabled else 0)
        gate = self.endpoint_gates[name]
        if disabled:
            await gate.hold("disabled")
        else:
            await gate.release("disabled")

    async def _require(self, name: str, url: str, ping: Any, timeout: float = 5.0) -> None:
        try:
            await asyncio.wait_for(ping, timeout)
        except Exception as exc:
            raise DependencyUnavailable(name, f"{redact_url(url)}: {type(exc).__name__}: {exc}") from exc

    async def _beat(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            await asyncio.sleep(1.0)

    def _sidecar_context(self) -> SidecarContext:
        assert self.redis is not None
        assert self.mongo is not None
        assert self.broker is not None
        redis, mongo, broker, relay = self.redis, self.mongo, self.broker, self.relay

        async def broker_check() -> CheckResult:
            async def ping() -> None:
                if not await broker.ping(timeout=1.0):
                    raise ConnectionError("not connected")

            return await ping_check(ping)

        async def relay_check() -> CheckResult:
            if relay is not None and not relay.healthy:
                return CheckResult("warn", "last relay round failed; retrying")
            return CheckResult("pass")

        async def outbox_counts() -> dict[str, int]:
            collection = OutboxDocument.get_pymongo_collection()
            return {status: await count_in_status(collection, status) for status in ("pending", "publishing", "dead")}

        async def outbox_backlog() -> int:
            counts = await outbox_counts()
            return counts["pending"] + counts["publishing"]

        assert self.outbox is not None
        s = self.settings
        return SidecarContext(
            service_id=self.owner,
            version=package_version(),
            settings=s,
            checks=[
                HealthCheck("rabbitmq:connection", "component", broker_check),
                HealthCheck("redis:responseTime", "datastore", lambda: ping_check(redis.ping)),
                HealthCheck(
                    "mongodb:responseTime",
                    "datastore",
                    lambda: ping_check(lambda: mongo.admin.command("ping")),
                ),
                HealthCheck("outbox:relay", "component", relay_check, affects_readiness=False),
                HealthCheck(
                    "outbox:backlog",
                    "component",
                    backlog_check(outbox_backlog, s.api.outbox_backlog_warn),
                    affects_readiness=False,
                ),
                *(
                    HealthCheck(f"breaker:{name}", "component", breaker_check(client.breaker), affects_readiness=False)
                    for name, client in [
                        *self.clients.items(),
                        *((client.name, client) for client in self.endpoint_clients.values()),
                    ]
                ),
            ],
            render_metrics=self.metrics.exposition,
            is_draining=lambda: self.draining,
            heartbeat=lambda: self._heartbeat,
            metrics=self.metrics,
            topology=self.topology,
            redis=redis,
            outbox=self.outbox,
            outbox_counts=outbox_counts,
            clients=self.clients,
            delivery_log=self.delivery_log,
            endpoint_states=self.endpoint_states,
            endpoint_clients=self.endpoint_clients,
            gateway=CommandGateway(
                self.rabbit_nodes,
                self.topology,
                self.owner,
                s.service_name,
                publish_timeout=s.api.publish_timeout_seconds,
                tracing=self.tracing,
            ),
            tracing=self.tracing,
        )


def _webhook_breaker_gauge(metrics: Metrics, subscription: str, transition: Transition) -> None:
    metrics.webhook_breaker_state.labels(subscription).set(_BREAKER_VALUE[transition.to_state])


_BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
