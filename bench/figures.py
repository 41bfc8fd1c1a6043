"""One figure of ``python -m bench``: ours, the peer's, their ratio, the target, met or not.

A ratio is always ours / peer (below 1: ours is cheaper).  A target is on the ratio when the
figure has a peer, on our own value otherwise.  ``met`` is None when there is no target.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Op = Literal["<=", ">="]


@dataclass(frozen=True)
class Target:
    """``ours`` (or the ratio, ``on="ratio"``) must be ``op`` ``value``."""

    op: Op
    value: float
    on: Literal["ours", "ratio"] = "ours"

    def met(self, value: float) -> bool:
        return value <= self.value if self.op == "<=" else value >= self.value

    def text(self, unit: str) -> str:
        if self.on == "ratio":
            return f"ratio {self.op} {self.value:g}"
        return f"{self.op} {_number(self.value, unit)}"


@dataclass(frozen=True)
class Figure:
    """One line of the table.  ``ours`` and ``peer`` are in ``unit``."""

    key: str
    name: str
    unit: str
    ours: float
    #: What we do, in a few words (the table's footnote).
    ours_does: str
    peer: float | None = None
    #: What the peer is and does; None when the figure has no peer.
    peer_does: str | None = None
    target: Target | None = None
    #: How the figure was measured (sample size, extrapolation).
    method: str = ""

    @property
    def ratio(self) -> float | None:
        if self.peer is None or self.peer == 0:
            return None
        return self.ours / self.peer

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        value = self.ratio if self.target.on == "ratio" else self.ours
        return None if value is None else self.target.met(value)

    def cells(self) -> list[str]:
        """name, ours, peer, ratio, target, met: as the tables print them."""
        met = {True: "yes", False: "NO", None: "—"}[self.met]
        return [
            self.name,
            _number(self.ours, self.unit),
            "—" if self.peer is None else _number(self.peer, self.unit),
            "—" if self.ratio is None else f"{self.ratio:.2f}",
            "—" if self.target is None else self.target.text(self.unit),
            met,
        ]

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["met"] = self.met
        return data


HEADER = ["figure", "ours", "peer", "ratio", "target", "met"]


def _number(value: float, unit: str) -> str:
    if unit in ("µs", "ms"):
        return f"{value:.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    if unit == "MB":
        return f"{value:.2f} MB" if value < 10 else f"{value:.1f} MB"
    return f"{value:.1f} {unit}"


def text_table(figures: Sequence[Figure]) -> str:
    """A plain table for a terminal, then what each side does and how it was measured."""
    rows = [HEADER, *(figure.cells() for figure in figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [
        textwrap.fill(note, width=100, subsequent_indent="    ")
        for note in _notes(figures, bullet="  ")
    ]
    return "\n".join([*lines, "", *notes])


def markdown_table(figures: Sequence[Figure]) -> str:
    """The table for docs/performance.md, then what each side does and how it was measured."""
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(HEADER) - 1)) + " |",
        *("| " + " | ".join(figure.cells()) + " |" for figure in figures),
    ]
    return "\n".join([*lines, "", *_notes(figures, bullet="- ")])


def json_text(figures: Sequence[Figure], context: dict[str, object]) -> str:
    return json.dumps(
        {"context": context, "figures": [figure.to_json() for figure in figures]}, indent=2
    )


def _notes(figures: Sequence[Figure], *, bullet: str) -> list[str]:
    """What each side does and how, once for the figures that share it."""
    names: dict[str, list[str]] = {}
    for figure in figures:
        parts = [f"ours: {figure.ours_does}"]
        if figure.peer_does is not None:
            parts.append(f"peer: {figure.peer_does}")
        if figure.method:
            parts.append(figure.method)
        names.setdefault("; ".join(parts), []).append(figure.name)
    return [f"{bullet}{', '.join(shared)}: {note}." for note, shared in names.items()]
