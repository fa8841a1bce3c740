"""The ordered steps of one command: parse, local dedupe, claim, backstop, call, record, ack, complete."""

from s2s_daemon.pipeline.call import Call
from s2s_daemon.pipeline.core import CommandPipeline
from s2s_daemon.pipeline.dedupe import Backstop, ClaimKey, LocalDedupe
from s2s_daemon.pipeline.exits import Exits
from s2s_daemon.pipeline.job import Command, Job, Route, Step
from s2s_daemon.pipeline.parse import Parse
from s2s_daemon.pipeline.record import Ack, Complete, Record

__all__ = [
    "Ack",
    "Backstop",
    "Call",
    "ClaimKey",
    "Command",
    "CommandPipeline",
    "Complete",
    "Exits",
    "Job",
    "LocalDedupe",
    "Parse",
    "Record",
    "Route",
    "Step",
]
