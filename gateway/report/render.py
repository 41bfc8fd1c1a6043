"""The course report as a picture (PNG, SVG) and as a page (HTML with the picture inline).

matplotlib's object API only: a :class:`matplotlib.figure.Figure` on an Agg canvas, never
``pyplot`` (no global state, no GUI backend, safe beside the daemon's threads).  One sub-figure
per channel: a column per day (rates against the ceiling above, delivered volume against the
prescription below, every alarm, acknowledgement, operator stop, titer and weight change marked
where it happened, the day's numbers in its title), and under them the accuracy panel: the
IEC 60601-2-24 trumpet curve computed from the pump's own totalizer.  Every number drawn comes
from :mod:`gateway.report.course`; displayed numbers are rounded down (:mod:`gateway.display`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any, Final

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D

from gateway.display import floor_display, floor_dose
from gateway.planner import SECONDS_PER_HOUR
from gateway.report.course import (
    DAY_H,
    ChannelReport,
    CourseReport,
    DayReport,
    MarkerKind,
    Series,
)
from gateway.report.trumpet import OBSERVATION_WINDOWS_MIN
from gateway.timestamps import format_instant

#: Pixels per inch of the PNG (the figure is sized in inches).
PNG_DPI: Final[int] = 100
#: Width of one day's column, and the narrowest figure (inches).
_DAY_WIDTH_IN: Final[float] = 3.6
_MIN_WIDTH_IN: Final[float] = 11.0
_CHANNEL_HEIGHT_IN: Final[float] = 10.5
#: Marks closer than this (hours) have their labels staggered.
_LABEL_CLEARANCE_H: Final[float] = 1.5

_COMMANDED: Final[dict[str, Any]] = {
    "color": "#1f5fa8",
    "linewidth": 2.0,
    "label": "commanded rate",
}
_PUMP: Final[dict[str, Any]] = {
    "color": "#e08a00",
    "linewidth": 1.0,
    "linestyle": (0, (4, 2)),
    "label": "pump's read-back rate (0 when not infusing)",
}
_CEILING: Final[dict[str, Any]] = {
    "color": "#c0392b",
    "linewidth": 1.6,
    "linestyle": (0, (8, 3)),
    "label": "ceiling",
}
_DELIVERED: Final[dict[str, Any]] = {
    "color": "#1e8449",
    "linewidth": 2.0,
    "label": "delivered (gateway's count)",
}
_PRESCRIBED: Final[dict[str, Any]] = {
    "color": "#333333",
    "linewidth": 1.2,
    "linestyle": "--",
    "label": "prescribed",
}
#: Each kind of mark has its own colour *and* line style, and a text label: never colour alone.
_MARKS: Final[dict[MarkerKind, dict[str, Any]]] = {
    MarkerKind.ALARM: {"color": "#c0392b", "linestyle": "-", "linewidth": 1.4},
    MarkerKind.ACK: {"color": "#7d3c98", "linestyle": "--", "linewidth": 1.2},
    MarkerKind.STOP: {"color": "#000000", "linestyle": "-.", "linewidth": 1.4},
    MarkerKind.TITER: {"color": "#117a65", "linestyle": ":", "linewidth": 1.6},
    MarkerKind.WEIGHT: {"color": "#7e5109", "linestyle": ":", "linewidth": 1.6},
    MarkerKind.VASOPRESSORS: {"color": "#5d6d7e", "linestyle": "--", "linewidth": 1.2},
}
_MARK_NAMES: Final[dict[MarkerKind, str]] = {
    MarkerKind.ALARM: "alarm",
    MarkerKind.ACK: "acknowledgement",
    MarkerKind.STOP: "operator stop",
    MarkerKind.TITER: "titer",
    MarkerKind.WEIGHT: "weight change",
    MarkerKind.VASOPRESSORS: "vasopressors withdrawn",
}
ACCURACY_TITLE: Final[str] = (
    "Flow accuracy: IEC 60601-2-24 trumpet curve, computed from the pump's own totalizer"
)


def course_figure(report: CourseReport) -> Figure:
    """The whole report as one figure, a sub-figure per channel."""
    channels = report.channels
    columns = max((len(c.days) for c in channels), default=1) or 1
    width_in = max(_MIN_WIDTH_IN, _DAY_WIDTH_IN * columns + 1.5)
    fig = Figure(
        figsize=(width_in, _CHANNEL_HEIGHT_IN * max(len(channels), 1)),
        dpi=PNG_DPI,
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    if not channels:
        fig.text(0.5, 0.5, f"{report.source}: no channel in the journal", ha="center")
        return fig
    subfigures = fig.subfigures(len(channels), 1, squeeze=False)
    for sub, channel in zip(subfigures[:, 0], channels, strict=True):
        _draw_channel(sub, channel, columns, report.source)
    return fig


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure as ``png`` or ``svg`` bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=_metadata(fmt))
    # Keep the layout the first save computed: laying out a laid-out figure again can collapse.
    fig.set_layout_engine("none")
    return buffer.getvalue()


def _metadata(fmt: str) -> dict[str, Any]:
    # No creation date: the same journal gives the same file.
    return {"Date": None} if fmt == "svg" else {}


def _draw_channel(sub: SubFigure, channel: ChannelReport, columns: int, source: str) -> None:
    sub.suptitle(_channel_title(channel), fontsize=13, fontweight="bold")
    if not channel.days:
        sub.text(0.5, 0.5, "no course day journalled yet", ha="center", va="center")
        return
    grid = sub.add_gridspec(3, columns, height_ratios=[3.0, 3.0, 3.4])
    rate_axes: list[Axes] = []
    volume_axes: list[Axes] = []
    for i, day in enumerate(channel.days):
        rate_ax = sub.add_subplot(grid[0, i], sharey=rate_axes[0] if rate_axes else None)
        # Volumes are not shared: a titer-arm day may be a seventh of day 1's.
        volume_ax = sub.add_subplot(grid[1, i], sharex=rate_ax)
        rate_axes.append(rate_ax)
        volume_axes.append(volume_ax)
        _draw_day(rate_ax, volume_ax, day, first=i == 0)
    top = max(
        (v for d in channel.days for s in _rate_series(d) for v in s.values),
        default=1.0,
    )
    rate_axes[0].set_ylim(0.0, max(top, 1.0) * 1.25)
    lower = grid[2, :].subgridspec(1, 2, width_ratios=[3.0, 2.0])
    key = lower[0, 1].subgridspec(2, 1, height_ratios=[1.0, 1.0])
    _draw_accuracy(sub.add_subplot(lower[0, 0]), channel.days)
    _draw_key(sub.add_subplot(key[0, 0]), channel, legend_columns=2 if columns >= 4 else 1)
    _draw_notes(sub.add_subplot(key[1, 0]), channel, source)


def _rate_series(day: DayReport) -> tuple[Series, Series, Series]:
    return day.commanded_ml_per_h, day.pump_rate_ml_per_h, day.ceiling_ml_per_h


def _channel_title(channel: ChannelReport) -> str:
    parts = [f"Channel {channel.channel}"]
    if channel.arm:
        parts.append(f"{channel.arm} arm")
    if channel.weight_kg is not None:
        parts.append(f"{channel.weight_kg:g} kg")
    if channel.concentration_mg_per_ml is not None:
        parts.append(f"{channel.concentration_mg_per_ml:g} mg/mL")
    if channel.state:
        parts.append(f"now {channel.state.replace('_', ' ')}")
    return ", ".join(parts)


def day_title(day: DayReport) -> str:
    """The day's numbers, as its panel's title says them (rounded down)."""
    head = f"Day {day.day}"
    if day.titer_mg_dl is not None:
        head += f", titer {day.titer_mg_dl:g} mg/dL"
    if not day.closed:
        head += " (running)"
    dose = floor_dose(day.dose_mg_per_kg)
    prescribed = f"{_num(floor_display(day.prescribed_ml))} mL"
    if dose is not None:
        prescribed = f"{dose:.1f} mg/kg = {prescribed}"
    delivered = f"{_num(floor_display(day.delivered_ml))} mL"
    delivered_dose = floor_dose(day.delivered_mg_per_kg)
    if delivered_dose is not None:
        delivered += f" = {delivered_dose:.1f} mg/kg"
    short = (
        f"short {_num(floor_display(day.shortfall_ml))} mL"
        if day.shortfall_ml is not None
        else "shortfall when the day closes"
    )
    return f"{head}\nprescribed {prescribed}\ndelivered {delivered}\n{short}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _step(ax: Axes, series: Series, style: dict[str, Any]) -> None:
    if series.values:
        ax.step(series.at_h, series.values, where="post", **style)


def _draw_day(rate_ax: Axes, volume_ax: Axes, day: DayReport, *, first: bool) -> None:
    rate_ax.set_title(day_title(day), fontsize=9, loc="left")
    _step(rate_ax, day.ceiling_ml_per_h, _CEILING)
    _step(rate_ax, day.commanded_ml_per_h, _COMMANDED)
    _step(rate_ax, day.pump_rate_ml_per_h, _PUMP)
    _step(volume_ax, day.prescribed_series_ml, _PRESCRIBED)
    delivered = day.delivered_series_ml
    if delivered.values:
        volume_ax.plot(delivered.at_h, delivered.values, **_DELIVERED)
    side, last_h = "right", None
    for marker in day.markers:
        style = _MARKS[marker.kind]
        for ax in (rate_ax, volume_ax):
            ax.axvline(marker.at_h, **style)
        # The label of a mark close to the one before goes on the other side of its line, so
        # that neither hides the other.
        close = last_h is not None and marker.at_h - last_h < _LABEL_CLEARANCE_H
        side = ("left" if side == "right" else "right") if close else "right"
        last_h = marker.at_h
        rate_ax.text(
            marker.at_h,
            0.98,
            f" {marker.label} ",
            transform=rate_ax.get_xaxis_transform(),
            rotation=90,
            ha=side,
            va="top",
            fontsize=7,
            color=style["color"],
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5},
        )
    rate_ax.set_xlim(min(day.start_h, 0.0), max(day.end_h, DAY_H))
    volume_ax.set_ylim(bottom=0.0)
    volume_ax.set_xticks([0, 6, 12, 18, 24])
    rate_ax.tick_params(labelbottom=False)
    volume_ax.set_xlabel("hours into the day's window")
    for ax in (rate_ax, volume_ax):
        ax.grid(True, color="0.9", linewidth=0.6)
    if first:
        rate_ax.set_ylabel("rate (mL/h)")
        volume_ax.set_ylabel("volume (mL)")
    else:
        rate_ax.tick_params(labelleft=False)  # shared with day 1; volumes are not


def _draw_accuracy(ax: Axes, days: Sequence[DayReport]) -> None:
    ax.set_title(ACCURACY_TITLE, fontsize=10, loc="left")
    ax.set_xlabel("observation window (min)")
    ax.set_ylabel("flow error (%)")
    ax.set_xticks(list(OBSERVATION_WINDOWS_MIN))
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    ax.grid(True, color="0.9", linewidth=0.6)
    curves = [(d, d.trumpet) for d in days if d.trumpet is not None]
    if not curves:
        notes = "; ".join(f"day {d.day}: {d.trumpet_note}" for d in days)
        ax.text(0.5, 0.5, f"no trumpet curve\n{notes}", ha="center", va="center", wrap=True)
        ax.set_xlim(0, max(OBSERVATION_WINDOWS_MIN) + 1)
        return
    first = curves[0][1]
    windows = [p.window_min for p in first.points]
    band = [p.resolution_pct for p in first.points]
    if any(band):
        ax.fill_between(
            windows,
            [-b for b in band],
            band,
            color="0.88",
            label=f"one totalizer step ({first.resolution_ml:g} mL), day {curves[0][0].day}",
        )
    palette = [f"C{i}" for i in range(10)]
    for i, (day, curve) in enumerate(curves):
        color = palette[i % len(palette)]
        x = [p.window_min for p in curve.points]
        ax.plot(x, [p.max_error_pct for p in curve.points], marker="^", color=color, lw=1.2)
        ax.plot(
            x,
            [p.min_error_pct for p in curve.points],
            marker="v",
            color=color,
            lw=1.2,
            label=f"day {day.day}: mean error {curve.mean_error_pct:+.2f} %",
        )
    ax.set_xlim(0, max(OBSERVATION_WINDOWS_MIN) + 1)
    ax.legend(fontsize=8, loc="upper right")


def _draw_key(ax: Axes, channel: ChannelReport, *, legend_columns: int) -> None:
    ax.axis("off")
    handles: list[Any] = [
        Line2D([], [], **_COMMANDED),
        Line2D([], [], **_PUMP),
        Line2D([], [], **_CEILING),
        Line2D([], [], **_DELIVERED),
        Line2D([], [], **_PRESCRIBED),
    ]
    kinds = {m.kind for d in channel.days for m in d.markers}
    handles += [
        Line2D([], [], label=_MARK_NAMES[kind], **_MARKS[kind])
        for kind in MarkerKind
        if kind in kinds
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, ncols=legend_columns)


def trumpet_notes(channel: ChannelReport) -> list[str]:
    """Where each day's trumpet curve comes from, in words (the figure and the page)."""
    lines = []
    gaps_s = []
    for day in channel.days:
        curve, start_h = day.trumpet, day.trumpet_period_start_h
        if curve is None or start_h is None:
            lines.append(f"day {day.day}: no trumpet curve ({day.trumpet_note})")
            continue
        gaps_s.append(curve.max_sample_gap_s)
        analysed_h = start_h + (curve.analysis_start_s - curve.period_start_s) / SECONDS_PER_HOUR
        span_h = (curve.analysis_end_s - curve.analysis_start_s) / SECONDS_PER_HOUR
        omitted = (
            f"; {', '.join(map(str, curve.omitted_windows_min))} min left out"
            if curve.omitted_windows_min
            else ""
        )
        lines.append(
            f"day {day.day}: {curve.rate_ml_per_h:g} mL/h from {start_h:.2f} h, analysed "
            f"{analysed_h:.2f}-{analysed_h + span_h:.2f} h, step {curve.resolution_ml:g} mL"
            + omitted
        )
    if gaps_s:
        lines.append(f"totalizer readings at most {max(gaps_s):g} s apart")
    return lines


def _draw_notes(ax: Axes, channel: ChannelReport, source: str) -> None:
    ax.axis("off")
    first = channel.days[0]
    lines = [
        "Trumpet curve: the second hour of each day's longest steady period",
        "(one rate, infusing); largest (^) and smallest (v) error over every",
        "window of each length, from the totalizer the pump reports (not a",
        "balance); grey: one totalizer step.",
        *trumpet_notes(channel),
        f"Day {first.day} window opened {format_instant(first.window_start_wall_s)}.",
        f"From the journal {source}",
    ]
    ax.text(0.0, 1.0, "\n".join(lines), fontsize=7, va="top", ha="left")


def html_document(report: CourseReport, png: bytes) -> str:
    """A self-contained page: the picture inline (base64 PNG) and each channel's day table."""
    esc = html.escape
    picture = base64.b64encode(png).decode("ascii")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Course report: {esc(', '.join(c.channel for c in report.channels))}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:110em}"
        "table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #999;padding:.3em .6em;text-align:right}"
        "th{background:#eee}td.text{text-align:left}img{max-width:100%}</style>",
        "</head><body>",
        "<h1>Course report</h1>",
        f"<p>From the journal <code>{esc(report.source)}</code> alone. Volumes and doses are "
        "rounded down. The accuracy panel is computed from the pump's own totalizer, not "
        "weighed (see docs/report.md).</p>",
        f'<img src="data:image/png;base64,{picture}" alt="Course report: each day\'s rates '
        "against the ceiling, delivered volume against the prescription, marked events, and "
        'the flow-accuracy trumpet curve">',
    ]
    for channel in report.channels:
        parts.append(f"<h2>{esc(_channel_title(channel))}</h2>")
        parts.append(_day_table(channel))
        parts.append(_marker_table(channel))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _day_table(channel: ChannelReport) -> str:
    esc = html.escape
    head = (
        "<tr><th>day</th><th>titer (mg/dL)</th><th>prescribed (mg/kg)</th>"
        "<th>prescribed (mL)</th><th>delivered (mL)</th><th>delivered (mg/kg)</th>"
        "<th>shortfall (mL)</th><th>alarms</th><th>trumpet mean error (%)</th>"
        "<th>notes</th></tr>"
    )
    rows = []
    for d in channel.days:
        alarms = sum(1 for m in d.markers if m.kind is MarkerKind.ALARM)
        dose = floor_dose(d.dose_mg_per_kg)
        delivered_dose = floor_dose(d.delivered_mg_per_kg)
        rows.append(
            "<tr>"
            f"<td>{d.day}{'' if d.closed else ' (running)'}</td>"
            f"<td>{'-' if d.titer_mg_dl is None else f'{d.titer_mg_dl:g}'}</td>"
            f"<td>{'-' if dose is None else f'{dose:.1f}'}</td>"
            f"<td>{_num(floor_display(d.prescribed_ml))}</td>"
            f"<td>{_num(floor_display(d.delivered_ml))}</td>"
            f"<td>{'-' if delivered_dose is None else f'{delivered_dose:.1f}'}</td>"
            f"<td>{_num(floor_display(d.shortfall_ml))}</td>"
            f"<td>{alarms}</td>"
            f"<td>{'-' if d.trumpet is None else f'{d.trumpet.mean_error_pct:+.2f}'}</td>"
            f'<td class="text">{esc("; ".join(d.notes))}</td>'
            "</tr>"
        )
    return "<table>" + head + "".join(rows) + "</table>"


def _marker_table(channel: ChannelReport) -> str:
    marks = [(d, m) for d in channel.days for m in d.markers]
    if not marks:
        return "<p>No alarm, acknowledgement, stop, titer or weight change was journalled.</p>"
    rows = "".join(
        f"<tr><td>{d.day}</td><td>{m.at_h:.2f}</td>"
        f'<td class="text">{html.escape(_MARK_NAMES[m.kind])}</td>'
        f'<td class="text">{html.escape(m.label)}</td></tr>'
        for d, m in marks
    )
    return (
        "<table><tr><th>day</th><th>hours into the window</th><th>what</th><th>detail</th></tr>"
        + rows
        + "</table>"
    )
