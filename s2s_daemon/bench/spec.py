"""What the load generator is asked to do: passed to its process as JSON on the command line."""

from __future__ import annotations

import json
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
