"""Write the course report of a state directory: PNG, SVG or HTML, chosen by flag or suffix.

Every output path is checked before the journal is read, so a typo costs nothing; the figure is
drawn once and written in each format asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

from gateway.errors import InputError
from gateway.report.course import CourseReport, build_course_report
from gateway.report.reader import ReportError, read_journal


class ReportFormat(StrEnum):
    PNG = "png"
    SVG = "svg"
    HTML = "html"


def format_for(path: Path, field: str = "--report") -> ReportFormat:
    """The format a file name asks for by its suffix; InputError naming ``field`` otherwise."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "htm":
        return ReportFormat.HTML
    try:
        return ReportFormat(suffix)
    except ValueError:
        raise InputError(field, "a file name ending in .png, .svg or .html", str(path)) from None


def check_output(path: Path, field: str) -> None:
    """InputError naming ``field`` unless ``path`` can be created: its directory exists."""
    if path.is_dir() or not path.parent.is_dir():
        raise InputError(field, "a file in an existing directory", str(path))


def load_report(
    state_dir: Path | str, *, channel: str | None = None, day: int | None = None
) -> CourseReport:
    """The report of ``state_dir``'s journal, or of one channel and/or one day of it."""
    rows = read_journal(state_dir, channel)
    if not rows.channels:
        raise ReportError(f"{rows.path}: no channel in the journal yet: nothing to report")
    if channel is not None and channel not in rows.channels:
        raise InputError(
            "--channel", f"a channel of the journal ({', '.join(rows.channels)})", channel
        )
    report = build_course_report(str(rows.path), rows.events, rows.days)
    if day is None:
        return report
    numbers = sorted({d.day for c in report.channels for d in c.days})
    if day not in numbers:
        shown = f"{numbers[0]}-{numbers[-1]}" if numbers else "none yet"
        raise InputError("--day", f"a day of the course in the journal ({shown})", day)
    return CourseReport(
        report.source,
        tuple(replace(c, days=tuple(d for d in c.days if d.day == day)) for c in report.channels),
    )


def write_report(
    state_dir: Path | str,
    outputs: Sequence[tuple[ReportFormat, Path]],
    *,
    channel: str | None = None,
    day: int | None = None,
) -> CourseReport:
    """Read, build and write ``outputs``; returns the report drawn."""
    from gateway.report.render import course_figure, figure_bytes, html_document

    for fmt, path in outputs:
        check_output(path, f"--{fmt.value}")
    report = load_report(state_dir, channel=channel, day=day)
    figure = course_figure(report)
    png: bytes | None = None
    for fmt, path in outputs:
        if fmt is ReportFormat.SVG:
            data = figure_bytes(figure, "svg")
        else:
            png = png if png is not None else figure_bytes(figure, "png")
            data = png if fmt is ReportFormat.PNG else html_document(report, png).encode()
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise ReportError(f"{path}: cannot write the report: {exc.strerror or exc}") from exc
    return report
