"""The repository stands on its own: no file cites a document or path outside it.

Design notes and protocol summaries that once lived beside the repository are now in ``docs/``.
This test reads every text file of the repository (tracked, and new files not ignored by git)
and fails, naming ``file:line``, on a mention of one of those outside documents or on a relative
path that climbs out of the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The text files checked, by suffix.
SUFFIXES = frozenset({".py", ".md", ".toml", ".service", ".cfg"})

#: Files not checked (paths relative to ROOT, with forward slashes).
EXCLUDED: frozenset[str] = frozenset()

#: Mentions of documents kept outside the repository.  Written as patterns whose own text does
#: not match them (an escaped dot, a bracket), so this file passes its own test.
FORBIDDEN = (
    re.compile(r"\bARCHITECTURE\.md"),
    re.compile(r"\bPROTOCOLS\.md"),
    re.compile(r"\bSTYLE\.md"),
    re.compile(r"\bTRIAL[-]LISTING"),
    re.compile(r"\.\./shared\b"),
    re.compile(r"/work/share[d]\b"),
    # The tracker's issues are outside too: say what a thing is, not which issue asked for it.
    re.compile(r"\bissues? (?:item )?#?\d", re.IGNORECASE),
    # So are web pages (an XML namespace is a name, not a citation).
    re.compile(r"https?://(?!www\.w3\.org/2000/svg)[\w-]+(?:\.[\w-]+)*\.(?:io|org|com|net|edu)\b"),
)

#: A relative path starting with one or more ``../``: it must stay inside the repository.
PARENT_PATH = re.compile(r"(?<![\w.])(?:\.\./)+[\w.\-/]*")

#: Directories a walk (when git is not available) skips.
_SKIP_DIRS = frozenset({".git", ".venv", ".ci-venv", "__pycache__", "build", "dist"})


def _git_files() -> list[str] | None:
    """Tracked files plus new ones git does not ignore, or None without a git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted({name for name in out.decode("utf-8").split("\0") if name})


def _walked_files() -> list[str]:
    found: list[str] = []
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [
            d for d in subdirs if d not in _SKIP_DIRS and not d.endswith((".egg-info", "_cache"))
        ]
        for name in files:
            found.append(Path(directory, name).relative_to(ROOT).as_posix())
    return sorted(found)


def checked_files() -> list[str]:
    """Every text file of the repository this test reads, relative to ROOT."""
    names = _git_files()
    if names is None:
        names = _walked_files()
    return [
        name
        for name in names
        if Path(name).suffix in SUFFIXES and name not in EXCLUDED and (ROOT / name).is_file()
    ]


def offences(relative: str, text: str) -> Iterator[str]:
    """``file:line: what`` for each outside reference in ``text``, the content of ``relative``."""
    folder = (ROOT / relative).parent
    for number, line in enumerate(text.splitlines(), 1):
        for pattern in FORBIDDEN:
            for match in pattern.finditer(line):
                yield f"{relative}:{number}: {match.group(0)!r}: {line.strip()}"
        for match in PARENT_PATH.finditer(line):
            target = (folder / match.group(0)).resolve()
            if not target.is_relative_to(ROOT):
                yield f"{relative}:{number}: {match.group(0)!r} leaves the repository"


def test_no_file_refers_outside_the_repository() -> None:
    files = checked_files()
    assert any(name.endswith("README.md") for name in files), "found no files to check"
    found = [
        offence
        for name in files
        for offence in offences(name, (ROOT / name).read_text(encoding="utf-8"))
    ]
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_the_checks_catch_each_kind_of_outside_reference() -> None:
    # Built from pieces, so that this file itself stays clean.
    outside = ["ARCHITECTURE", "PROTOCOLS", "STYLE"]
    lines = [f"see {name}.md" for name in outside]
    lines += ["TRIAL" + "-LISTING.txt", "open('.." + "/shared/notes')", "/work/" + "shared/x"]
    lines += ["[notes](" + "../" * 2 + "outside/notes.md)"]  # from docs/: above the repository
    lines += [
        "as issue" + " 13 asked",
        "(Issue" + " item 8)",
        "see https:" + "//prometheus.io/docs",
    ]
    for line in lines:
        assert list(offences("docs/x.md", line)), line


def test_paths_inside_the_repository_are_fine() -> None:
    text = (
        "[config](../deploy/gateway.example.toml), from .. import x, the shared core, "
        "http://127.0.0.1:8470/, the issues it raises, {http://www.w3.org/2000/svg}svg"
    )
    assert list(offences("docs/operations.md", text)) == []
