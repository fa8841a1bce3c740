"""The README's five-minute tour, run as written against a live daemon, the demo downstreams and real services.

The commands are read from README.md, in order, and run through bash; only the sidecar's address, the test's
namespace and the resource id the tour asks the reader to copy are filled in. A tour step that stops working
fails here, not in a new user's terminal.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from s2s_daemon.app import Daemon
from tests.conftest import RABBITMQ_URL, DemoServices
from tests.support import wait_for

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "README.md"
TOUR_HEADING = "## A five-minute tour"
STEP = re.compile(r"^```sh[ \t]*\n(?P<block>.*?)^```[ \t]*$|`(?P<inline>curl [^`\n]+)`", re.MULTILINE | re.DOTALL)


def tour_commands() -> list[str]:
    """The tour's shell commands in reading order: fenced `sh` lines and inline `curl` examples."""
    text = README.read_text()
    start = text.index(TOUR_HEADING)
    section = text[start : text.index("\n## ", start + len(TOUR_HEADING))]
    commands: list[str] = []
    for match in STEP.finditer(section):
        if match["inline"]:
            commands.append(match["inline"])
        else:
            commands.extend(line for line in match["block"].replace("\\\n", " ").splitlines() if line.strip())
    return commands


def _body(http_response: str) -> Any:
    """The JSON body of `curl -si` output."""
    return json.loads(http_response.split("\n\n", 1)[1])  # text mode turned \r\n into \n


async def _bash(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=90, check=False
    )


async def test_readme_tour_runs_as_written(daemon: Daemon, demo: DemoServices, run_id: str) -> None:
    """Every tour command succeeds in order: AMQP and HTTP commands, the read-back, health, metrics, the DLQ repair."""
    assert daemon.sidecar is not None
    sidecar = f"127.0.0.1:{daemon.sidecar.port}"
    cli = f"{shlex.quote(sys.executable)} -m s2s_daemon"
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2S_")}
    env.update({"RABBITMQ_URL": RABBITMQ_URL, "S2S_AMQP__PREFIX": run_id, "PYTHONUNBUFFERED": "1"})
    commands = tour_commands()
    assert len(commands) >= 8, commands
    resource_id: str | None = None
    seen: list[str] = []

    for command in commands:
        shell = command.replace(".venv/bin/s2s-daemon", cli).replace("localhost:8080", sidecar)
        if "<id>" in shell:
            assert resource_id is not None, "the tour reads a resource before creating one over HTTP"
            shell = shell.replace("<id>", resource_id)
        result = await _bash(shell, env)
        output = result.stdout
        where = f"{command}\n{output}\n{result.stderr}"

        if " send " in command and '"nom"' in command:
            assert result.returncode == 1, where  # a failed reply
            assert json.loads(output)["error"]["kind"] == "invalid", where
            seen.append("send-invalid")
        elif " send " in command:
            assert result.returncode == 0, where
            assert json.loads(output)["status"] == "succeeded", where
            seen.append("send")
        elif "/api/service-a/resource" in command:
            assert result.returncode == 0, where
            assert output.startswith("HTTP/1.1 201"), where
            reply = _body(output)
            assert reply["status"] == "succeeded", where
            resource_id = reply["result"]["body"]["id"]
            seen.append("http-command")
        elif "/api/commands/" in command:
            assert result.returncode == 0, where
            assert json.loads(output)["command_id"] == "tour-1", where
            seen.append("command-status")
        elif "/api/service-b/resource/" in command:
            assert result.returncode == 0, where
            assert output.startswith("HTTP/1.1 200"), where
            assert _body(output)["id"] == resource_id, where
            seen.append("read-back")
        elif "/health" in command:
            assert result.returncode == 0, where
            assert json.loads(output)["status"] in {"pass", "warn"}, where
            seen.append("health")
        elif "/metrics" in command:
            assert result.returncode == 0, where
            assert output.startswith("s2s_commands_total{"), where
            seen.append("metrics")
        elif " dlq list" in command:
            assert result.returncode == 0, where
            assert "tour-bad-1" in output, where
            assert "schema-violation" in output, where
            seen.append("dlq-list")
        elif " dlq show" in command:
            assert result.returncode == 0, where
            assert "schema-violation" in output, where
            seen.append("dlq-show")
        elif " dlq replay" in command:
            assert result.returncode == 0, where
            seen.append("dlq-replay")
        else:
            pytest.fail(f"a tour command this test does not know how to check: {command}")

    expected = ["send", "http-command", "command-status", "read-back", "health", "metrics"]
    expected += ["send-invalid", "dlq-list", "dlq-show", "dlq-replay"]
    assert seen == expected
    # The corrected copy is a new command: service-a creates the fixed resource.
    await wait_for(lambda: any(r["name"] == "fixed" for r in demo.a.store.resources.values()), timeout=30)
