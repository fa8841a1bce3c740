"""What the load generators are asked to do: passed to their processes as JSON on the command line.

The runner imports this module only, never the generators themselves, which run with ``python -m`` (a module
imported before runpy executes it runs twice)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["inflight", "rate"]


@dataclass(frozen=True, slots=True)
class StreamSpec:
    routing_key: str
    mode: Mode
    value: float  # commands in flight, or commands per second
    count: int = 0  # primary stream only: how many commands to send
    seconds: float = 0.0  # primary stream only: > 0 stops sending after this long, even before ``count``


@dataclass(frozen=True, slots=True)
class LoadSpec:
    url: str
    exchange: str
    streams: tuple[StreamSpec, ...]
    warmup: int = 0  # primary-stream commands sent and awaited first, not measured
    reply_timeout: float = 30.0  # a reply later than this counts as missing
    secondary_drain: float | None = None  # once the primary is done, other streams' replies wait this long at most
    watch: dict[str, int] = field(default_factory=dict)  # name -> PID: CPU and RSS over the measured window
    rss_every: float = 0.0  # > 0: also sample the watched RSS every this many seconds (soak)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadSpec:
        data = json.loads(text)
        data["streams"] = tuple(StreamSpec(**s) for s in data["streams"])
        return cls(**data)


def body_for(routing_key: str, i: int) -> dict[str, Any]:
    """A valid command body for the example config's routes."""
    if routing_key.startswith("service-b."):
        return {"id": f"r{i}"}
    return {"name": f"bench-{i}"}


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    url: str  # http://127.0.0.1:<port>/api/webhooks/<source>
    secret: str  # whsec_<base64>, the source's Standard Webhooks secret
    concurrency: int  # deliveries in flight; with ``rate`` the connection limit (a wait for one counts as latency)
    count: int  # deliveries to send (upper bound when ``seconds`` > 0)
    seconds: float = 0.0  # > 0: stop sending after this long
    warmup: int = 0  # deliveries sent and awaited first, not measured
    event_type: str = "bench.ping"
    timeout: float = 30.0
    watch: dict[str, int] = field(default_factory=dict)
    rate: float = 0.0  # > 0: offer this many deliveries per second (open loop) instead of keeping them in flight

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WebhookSpec:
        return cls(**json.loads(text))


Run = Callable[[str], Coroutine[Any, Any, dict[str, Any]]]


def generator_main(argv: list[str] | None, usage: str, run: Run) -> int:
    """The shared ``main`` of the load generator processes: one JSON spec argument in, one JSON result out."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - optional speed-up
        pass
    print(json.dumps(asyncio.run(run(args[0]))))
    return 0
