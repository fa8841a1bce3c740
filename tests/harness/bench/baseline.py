""" "Today's" daemon for the ``baseline`` scenario: the package as it was at a git revision, run from an export.

``git archive <rev> s2s_daemon`` is unpacked into the run's folder (no worktree, so nothing is registered in the
repository) and started with the bench's own interpreter, ``python -P -m s2s_daemon run``: ``-P`` keeps the
current folder off ``sys.path``, and ``PYTHONPATH`` puts the export ahead of the installed (editable) package.
The old code reads the same environment (``RABBITMQ_URL``, ``REDIS_URL``, ``MONGODB_URI``, ``LOG_LEVEL``) and the
same config keys as the bench writes (its own bench wrote them the same way), from its own example config.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.harness.bench.harness import REPO_ROOT

__all__ = ["BASELINE_REV", "baseline_argv", "export_package"]

BASELINE_REV = "56fe34b"  # the code when issue 13 was filed


def export_package(rev: str, dest: Path) -> Path:
    """Unpack ``s2s_daemon/`` of ``rev`` under ``dest``; returns the folder to put on ``PYTHONPATH``.

    Raises RuntimeError when git cannot produce it (unknown revision, a shallow clone) or when the interpreter
    would import another ``s2s_daemon`` than the export's.
    """
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", rev, "s2s_daemon"],
            capture_output=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        raise RuntimeError(f"git archive {rev} failed: {stderr.decode(errors='replace').strip() or exc}") from None
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    probe = subprocess.run(
        [sys.executable, "-P", "-c", "import s2s_daemon; print(s2s_daemon.__file__)"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(dest)},
        timeout=60,
    )
    found = Path(probe.stdout.strip() or "?").resolve()
    if not found.is_relative_to(dest.resolve()):
        raise RuntimeError(f"the export of {rev} is not what python imports ({found}): {probe.stderr.strip()}")
    return dest


def baseline_argv(config: Path) -> list[str]:
    """``python -P -m s2s_daemon run --config <config>`` with the bench's own interpreter."""
    return [sys.executable, "-P", "-m", "s2s_daemon", "run", "--config", str(config)]
