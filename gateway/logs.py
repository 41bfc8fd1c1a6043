"""Structured logs: one event per order, command, readback, alarm and acknowledgement.

JSON lines when stderr is not a terminal (journald, files, log shippers); a readable console
format when it is.  Every channel event carries ``channel``; ``event`` is a stable name.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, json_lines: bool | None = None, level: str = "info") -> None:
    """Configure structlog for the process.  ``json_lines=None``: JSON unless on a terminal."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # pymodbus logs an ERROR for every timeout it sees; the driver already turns each into a
    # typed error that the channel journals and alarms on, so its own lines would only be noise.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
