"""Settings: config file + env, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2s_daemon.cli import main
from s2s_daemon.errors import ConfigError
from s2s_daemon.settings import load_settings

EXAMPLE = Path(__file__).parents[2] / "s2s_daemon" / "config" / "example.yaml"


def test_example_config_loads() -> None:
    """The shipped example declares service-a and service-b with their routes."""
    settings = load_settings(EXAMPLE)
    assert set(settings.downstreams) == {"service-a", "service-b"}
    found = settings.route("service-b.get-resource")
    assert found is not None
    assert found[2].path_params == ("id",)
    assert settings.route("service-a.nope") is None
    assert settings.route("nobody.x") is None


def test_env_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment variables win over the file; URLs use their conventional unprefixed names."""
    monkeypatch.setenv("RABBITMQ_URL", "amqp://u:p@rabbit:5672/")
    monkeypatch.setenv("S2S_AMQP__PREFETCH", "7")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = load_settings(EXAMPLE)
    assert settings.rabbitmq_url.get_secret_value() == "amqp://u:p@rabbit:5672/"
    assert settings.amqp.prefetch == 7
    assert settings.log_level == "DEBUG"


def test_bad_keys_are_named(tmp_path: Path) -> None:
    """Each invalid value is reported with its dotted key; unknown keys are refused."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "amqp: {prefetch: 0, bogus: 1}\n"
        "downstreams:\n  service-a:\n    base_url: ftp://x\n    timeout: -1\n"
        "    routes: {r: {path: /x}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(bad)
    text = str(err.value)
    assert "amqp.prefetch" in text
    assert "amqp.bogus: unknown key" in text
    assert "downstreams.service-a.base_url" in text
    assert "downstreams.service-a.timeout" in text


def test_invalid_route_schema_and_path(tmp_path: Path) -> None:
    """A route with a relative path or an invalid JSON Schema is refused at load time."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "downstreams:\n  svc:\n    base_url: http://x\n    routes:\n"
        "      r1: {path: relative}\n      r2: {path: /x, schema: {type: 12}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(bad)
    assert "downstreams.svc.routes.r1.path" in str(err.value)
    assert "downstreams.svc.routes.r2.schema" in str(err.value)


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    """A missing file, bad YAML or a non-mapping top level fail loudly, naming the file."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(tmp_path / "broken.yaml")


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`s2s-daemon check-config` exits 0 on the example and 2 with the bad key on stderr."""
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert "ok (2 downstreams, 2 routes)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("amqp: {delay_ladder: [5, 1]}\n")
    assert main(["check-config", str(bad)]) == 2
    assert "amqp.delay_ladder" in capsys.readouterr().err
