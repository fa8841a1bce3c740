"""The docs site builds strictly, the README stays a short front door, and no page points at something missing.

A link, a cited file, a `make` target or an `s2s-daemon` command shown to a reader must exist in this repository:
docs that send a reader to a file we do not ship, or show a command that no longer parses, fail here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from s2s_daemon.cli import build_parser

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 250
PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN_FILES = [README, *PAGES]

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
SHELL_FENCE = re.compile(r"^```(?:sh|bash|console)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
MD_FILE_NAME = re.compile(r"(?<![\w/.-])([\w-]+\.md)\b")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
# A cited file: a relative path with a known extension, or one starting with a top-level folder of the repo.
FILE_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".toml", ".conf", ".sh", ".cjs", ".cfg")
TOP_LEVEL = ("s2s_daemon/", "tests/", "deploy/", "docs/")
PLACEHOLDER = re.compile(r"[<>*{}$ ]")


def _prose(text: str) -> str:
    """The text without fenced code blocks (examples may name files the reader creates)."""
    return FENCE.sub("", text)


def _anchors(page: Path) -> set[str]:
    """The heading anchors mkdocs' toc extension gives a page."""
    return {slugify(re.sub(r"[`*]", "", title), "-") for title in HEADING.findall(_prose(page.read_text()))}


def _links(path: Path) -> Iterator[str]:
    yield from LINK.findall(_prose(path.read_text()))


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")


def _cited_paths(path: Path) -> Iterator[str]:
    for code in INLINE_CODE.findall(_prose(path.read_text())):
        if PLACEHOLDER.search(code) or code.startswith(("/", ".", "-")):
            continue
        if code.endswith(FILE_SUFFIXES) or code.startswith(TOP_LEVEL):
            yield code


def _shell_lines(path: Path) -> Iterator[str]:
    for block in SHELL_FENCE.findall(path.read_text()):
        yield from block.replace("\\\n", " ").splitlines()


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):(?!=)", makefile, flags=re.MULTILINE))


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds: no broken link or anchor, no page missing from the nav."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    built = {page.parent.name for page in (tmp_path / "site").glob("*/index.html")}
    assert built == {page.stem for page in PAGES if page.stem != "index"}


def test_readme_is_a_front_door() -> None:
    """README.md stays short, starts with the two commands, and links to every page of the docs."""
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert text.index("make run") < text.index("## A five-minute tour")
    assert "make test" in text[: text.index("## A five-minute tour")]
    linked = {target.partition("#")[0] for target in _links(README)}
    assert {f"docs/{page.name}" for page in PAGES} <= linked


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_point_at_existing_files_and_anchors(path: Path) -> None:
    """Every relative link resolves to a file of the repository, and an anchor into a page to one of its headings."""
    for target in filter(_relative, _links(path)):
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve()
        assert resolved.exists(), f"{path.name}: link to missing {target}"
        assert ROOT in resolved.parents, f"{path.name}: link outside the repository: {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{path.name}: no heading for #{anchor} in {file_part}"


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_files_exist(path: Path) -> None:
    """A file named in the prose exists in the repository (or in the package, for package-relative names)."""
    text = path.read_text()
    for name in MD_FILE_NAME.findall(text):
        assert any((base / name).exists() for base in (ROOT, DOCS)), f"{path.name} cites {name}, not in the repository"
    for cited in _cited_paths(path):
        candidates = (ROOT / cited, ROOT / "s2s_daemon" / cited)
        assert any(c.exists() for c in candidates), f"{path.name} cites {cited}, not in the repository"


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shown_commands_exist(path: Path) -> None:
    """Every `make` target and every `s2s-daemon` command line in a shell example is one the project has."""
    targets = _make_targets()
    parser = build_parser()
    for line in _shell_lines(path):
        words = shlex.split(line, comments=True)
        if words[:1] == ["make"]:
            asked = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            assert set(asked) <= targets, f"{path.name}: make {asked} is not a Makefile target"
        cli = [i for i, w in enumerate(words) if w == "s2s-daemon" or w.endswith("/bin/s2s-daemon")]
        if cli:
            argv = words[cli[0] + 1 :]
            argv = argv[: argv.index("|")] if "|" in argv else argv
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{path.name}: `s2s-daemon {' '.join(argv)}` does not parse")
