"""The installed package's version, as health reports and generated documents state it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_version"]


def package_version() -> str:
    try:
        return version("s2s-daemon")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "0+unknown"
