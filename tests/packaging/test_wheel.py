"""The wheel the image installs: built from what the Dockerfile copies, installed into a fresh venv without extras."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("wheel"), pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
# The Dockerfile's build context (.dockerignore is a whitelist of these).
BUILD_CONTEXT = ("pyproject.toml", "README.md", "s2s_daemon")
# Subpackages that may import an extra at module level: importing them without it fails, naming the extra.
EXTRA_PACKAGES = {"s2s_daemon.local": "local", "s2s_daemon.observability._otel": "otel"}
# Importing it runs the command line; `python -m s2s_daemon --help` runs it instead.
NOT_IMPORTED = {"s2s_daemon.__main__"}

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import s2s_daemon

failed = {}
def onerror(name):
    failed[name] = f"{type(sys.exc_info()[1]).__name__}: {sys.exc_info()[1]}"

names = [m.name for m in pkgutil.walk_packages(s2s_daemon.__path__, "s2s_daemon.", onerror=onerror)]
for name in names:
    if name in sys.argv[1:]:
        continue
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"file": s2s_daemon.__file__, "modules": names, "failed": failed}))
"""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    bin: Path
    cwd: Path

    def run(self, *argv: str | Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "S2S_CONFIG")}
        return subprocess.run([str(a) for a in argv], cwd=self.cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from the Docker build context, in a fresh venv with its core dependencies only."""
    base = tmp_path_factory.mktemp("wheel")
    context = base / "context"
    for name in BUILD_CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(source, context / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", base / "dist", context], check=True)
    (wheel,) = (base / "dist").glob("s2s_daemon-*.whl")
    venv.create(base / "venv", with_pip=False)  # the outer pip installs into it: no ensurepip, faster
    python = base / "venv" / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", wheel], check=True)
    return Installed(wheel, python, python.parent, base)


def _declared(wheel: Path) -> dict[str, set[str]]:
    """Requirement names of the wheel's metadata by extra ("" for the core), normalized."""
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(zf.read(name).decode())
    out: dict[str, set[str]] = {}
    for requirement in metadata.get_all("Requires-Dist") or []:
        dist = _normalize(re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0])
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        out.setdefault(extra.group(1) if extra else "", set()).add(dist)
    return out


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(tree: ast.Module) -> Iterator[tuple[str, bool]]:
    """(top-level module, runs at import time) for every import statement of a module."""

    def walk(nodes: list[ast.stmt], at_import: bool) -> Iterator[tuple[str, bool]]:
        for node in nodes:
            if isinstance(node, ast.Import):
                yield from ((alias.name.split(".")[0], at_import) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.module.split(".")[0], at_import
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(node.body, False)
            elif isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
                yield from walk(node.body, False)
                yield from walk(node.orelse, at_import)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, [])
                    statements = [c for c in children if isinstance(c, ast.stmt)]
                    statements += [s for h in children if isinstance(h, ast.ExceptHandler) for s in h.body]
                    yield from walk(statements, at_import)

    yield from walk(tree.body, True)


UPLOT_FILES = ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE", "package.json")


def test_wheel_holds_the_package_and_no_harness(installed: Installed) -> None:
    """The wheel carries the package, its config files, type marker and the console's page and chart library, and
    nothing of the bench or chaos harness."""
    with zipfile.ZipFile(installed.wheel) as zf:
        names = zf.namelist()
    assert "s2s_daemon/cli.py" in names
    assert {"s2s_daemon/config/example.yaml", "s2s_daemon/config/rabbitmq.conf", "s2s_daemon/py.typed"} <= set(names)
    console = {"console.html", "console.js", "console.css", *(f"vendor/uplot/{n}" for n in UPLOT_FILES)}
    assert {f"s2s_daemon/http/static/{n}" for n in console} <= set(names)
    harness = [n for n in names if re.search(r"(^|/)(bench|chaos|harness|tests)(/|\.py$)", n)]
    assert harness == []
    assert all(n.startswith(("s2s_daemon/", "s2s_daemon-")) for n in names)


def test_every_module_imports_without_extras(installed: Installed) -> None:
    """Every module of the installed package imports with the core dependencies alone; the `local` subpackage
    and the OpenTelemetry module (`observability._otel`, imported only when OTEL_* turn tracing on) fail with an
    error that names their extra."""
    result = installed.run(installed.python, "-c", IMPORT_ALL, *NOT_IMPORTED)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["file"]).is_relative_to(installed.cwd / "venv"), "imported the source tree, not the wheel"
    assert len(report["modules"]) > 40
    for name, extra in EXTRA_PACKAGES.items():
        error = report["failed"].pop(name, "")
        assert f"pip install 's2s-daemon[{extra}]'" in error
    assert report["failed"] == {}
    extras = installed.run(installed.python, "-c", "import httpx, mirakuru, nx_27017, opentelemetry.sdk")
    assert "ModuleNotFoundError" in extras.stderr, "an extra's library was installed without the extra"


def test_cli_runs_without_extras(installed: Installed) -> None:
    """`s2s-daemon --help`, `python -m s2s_daemon --help` and `check-config` on the packaged example config work;
    `dev` says which extra it needs."""
    assert installed.run(installed.bin / "s2s-daemon", "--help").returncode == 0
    assert installed.run(installed.python, "-m", "s2s_daemon", "--help").returncode == 0
    example = installed.run(installed.python, "-c", "from s2s_daemon.cli import EXAMPLE_CONFIG; print(EXAMPLE_CONFIG)")
    config = Path(example.stdout.strip())
    assert config.is_relative_to(installed.cwd / "venv")
    checked = installed.run(installed.bin / "s2s-daemon", "check-config", config)
    assert checked.returncode == 0, checked.stderr
    assert ": ok (" in checked.stdout
    dev = installed.run(installed.bin / "s2s-daemon", "dev")
    assert dev.returncode == 2
    assert "pip install 's2s-daemon[local]'" in dev.stderr


def test_the_compiled_parsers_come_with_the_core_dependencies(installed: Installed) -> None:
    """redis-py parses replies with hiredis and route schemas are checked by jsonschema-rs, without any extra:
    both measured hot spots of a command (the Redis claim and completion, the body check)."""
    probe = "import jsonschema_rs; from redis.utils import HIREDIS_AVAILABLE; print(HIREDIS_AVAILABLE)"
    checked = installed.run(installed.python, "-c", probe)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "True"


def test_every_third_party_import_is_declared(installed: Installed) -> None:
    """What a module imports when it is imported comes from a core dependency (an extra's subpackage: from its
    extra); an import inside a function comes from the core or an extra. Transitive installs do not count."""
    declared = _declared(installed.wheel)
    every_extra = set().union(*declared.values())
    providers = packages_distributions()
    problems = []
    for path in sorted((ROOT / "s2s_daemon").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        own_extra = next((e for p, e in EXTRA_PACKAGES.items() if module == p or module.startswith(p + ".")), None)
        at_import_ok = declared[""] | declared.get(own_extra or "", set())
        for top, at_import in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if top in sys.stdlib_module_names or top == "s2s_daemon":
                continue
            dists = {_normalize(d) for d in providers.get(top, [])}
            allowed = at_import_ok if at_import else every_extra
            if not dists & allowed:
                problems.append(f"{module}: import {top} (from {sorted(dists) or 'nothing installed'})")
    assert problems == []
