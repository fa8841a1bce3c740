"""The outage horizon the docs state is the one the default settings give, and the example that changes it works."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from s2s_daemon.resilience import outage_horizon
from s2s_daemon.settings import DownstreamSettings, RetrySettings

DOCS = Path(__file__).parents[2] / "docs"
SENTENCE = re.compile(r"survives a downstream outage of up to (\d+) seconds")


def test_the_stated_horizon_is_the_defaults() -> None:
    """Every page stating the horizon states the figure ``outage_horizon`` computes for the default policy."""
    stated = {
        page.name: int(n) for page in DOCS.glob("*.md") for n in SENTENCE.findall(" ".join(page.read_text().split()))
    }
    assert {"resilience.md", "configuration.md"} <= set(stated)
    assert set(stated.values()) == {int(outage_horizon(RetrySettings()))}
    assert outage_horizon(RetrySettings()) >= 120.0, "a rolling deploy of two minutes must be ridden out"


def test_the_example_that_changes_it_is_valid_and_longer() -> None:
    """The YAML example in resilience.md is a valid downstream retry policy with a longer horizon."""
    text = (DOCS / "resilience.md").read_text()
    block = re.search(r"## How long a command waits out an outage.*?```yaml\n(.*?)```", text, re.DOTALL)
    assert block is not None
    config = yaml.safe_load(block.group(1))["downstreams"]["service-a"]
    settings = DownstreamSettings(base_url="http://service-a", **config)
    assert outage_horizon(settings.retry) > outage_horizon(RetrySettings())
