"""The console's chart library is the pinned uPlot release, shipped with its licence; the page loads nothing from
the internet."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import orjson

import s2s_daemon

ROOT = Path(__file__).parents[2]
STATIC = Path(s2s_daemon.__file__).parent / "http" / "static"
UPLOT = STATIC / "vendor" / "uplot"
# `make vendor-uplot` fetches these from npm (uplot@UPLOT_VERSION); a new version updates both lines
VERSION = "1.6.32"
SHA256 = {
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
}


def test_vendored_uplot_is_the_pinned_release() -> None:
    """The Makefile pins the version the files carry, and the files are the release's bytes."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^UPLOT_VERSION := {re.escape(VERSION)}$", makefile, re.MULTILINE)
    assert orjson.loads((UPLOT / "package.json").read_bytes())["version"] == VERSION
    assert (UPLOT / "uPlot.iife.min.js").read_text().startswith(f"/*! https://github.com/leeoniya/uPlot (v{VERSION})")
    for name, digest in SHA256.items():
        assert hashlib.sha256((UPLOT / name).read_bytes()).hexdigest() == digest, name


def test_uplot_licence_is_shipped() -> None:
    """uPlot is MIT: its licence travels with it."""
    licence = (UPLOT / "LICENSE").read_text()
    assert "The MIT License" in licence
    assert "Leon Sorokin" in licence


def test_page_loads_only_its_own_assets() -> None:
    """No script, stylesheet or font from another origin: the console works offline."""
    for name in ("console.html", "console.js", "console.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), name
        assert not re.search(r"""@import|url\(\s*["']?(https?:)?//""", text), name
    html = (STATIC / "console.html").read_text()
    assert re.findall(r'<script src="([^"]+)"', html) == [
        "/console/static/vendor/uplot/uPlot.iife.min.js",
        "/console/static/console.js",
    ]


def test_assets_are_package_data() -> None:
    """The wheel carries the page and uPlot (setuptools package-data)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"http/static/*"' in pyproject
    assert '"http/static/vendor/uplot/*"' in pyproject
