"""The course report: a picture of a course, drawn from the journal alone.

* :mod:`gateway.report.reader`: the journal, read-only, beside a running daemon or after it.
* :mod:`gateway.report.course`: journal rows -> per-channel, per-day typed series and numbers
  (pure; the numbers the picture is drawn from, tested as data).
* :mod:`gateway.report.trumpet`: the IEC 60601-2-24 trumpet curve from totalizer samples (pure).
* :mod:`gateway.report.render`: the figure (matplotlib, headless Agg) and the HTML page.
* :mod:`gateway.report.output`: the formats, and one call that reads, builds and writes.

Only ``render`` (and ``output``, which uses it) import matplotlib; nothing on the daemon's path
imports this package.  See docs/report.md.
"""
